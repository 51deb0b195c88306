"""Evaluation: batched greedy decoding (as in the paper) and the task's metric.

    python -m adaswitch_lib.evaluate MODEL_FOLDER synth_gsm --limit 200
"""
from __future__ import annotations

import argparse

import torch

from adaswitch_lib.data import format_prompt, load_task, score


def tokenize_prompts(tokenizer, examples, max_prompt_tokens: int, style: str = "plain") -> list[list[int]]:
    """Prompt token ids, BOS first when the tokenizer has one, keeping the last max_prompt_tokens."""
    out = []
    for example in examples:
        ids = tokenizer(format_prompt(example, style, tokenizer), add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None and style == "plain":
            ids = [tokenizer.bos_token_id] + ids
        out.append(ids[-max_prompt_tokens:])
    return out


@torch.no_grad()
def generate(model, tokenizer, examples, max_new_tokens: int, max_prompt_tokens: int = 1024,
             batch_size: int = 32, style: str = "plain") -> list[str]:
    """Greedy responses, decoded up to the first EOS."""
    from adaswitch_lib.sampler import left_pad
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    responses = []
    prompts = tokenize_prompts(tokenizer, examples, max_prompt_tokens, style)
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start:start + batch_size], tokenizer.pad_token_id, device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        responses += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return responses


def evaluate(model, tokenizer, task: str, examples, max_new_tokens: int, max_prompt_tokens: int = 1024,
             batch_size: int = 32, style: str = "plain") -> float:
    """The task metric x 100 of the model's greedy responses."""
    responses = generate(model, tokenizer, examples, max_new_tokens, max_prompt_tokens, batch_size, style)
    return score(task, responses, examples)


if __name__ == "__main__":
    from adaswitch_lib.models import load_model, load_tokenizer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("task")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    examples = load_task(args.task, "test", limit=args.limit)
    print(evaluate(load_model(args.model), load_tokenizer(args.model), args.task, examples, args.max_new_tokens))
