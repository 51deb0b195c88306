"""Evaluation: batched greedy decoding (as in the paper), the task's metric with every example's
output kept, and the validation loss of Figures 5/8 (D against the teacher on reference targets).

    python -m adaswitch_lib.evaluate MODEL_FOLDER TOKENIZER_FOLDER synth_gsm --limit 200
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch

from adaswitch_lib import metrics
from adaswitch_lib.config import RunConfig
from adaswitch_lib.data import (
    format_prompt,
    left_pad,
    load_task,
    score,
    task_kind,
    tokenize_prompts,
)
from adaswitch_lib.distill import TEACHER_CACHE_BYTES, response_logits, target_loss
from adaswitch_lib.losses import positions_within
from adaswitch_lib.models import stop_token_ids
from adaswitch_lib.targets import ground_truth_targets


@dataclass
class Evaluation:
    score: float  # the task metric x 100 (accuracy, or ROUGE-L F1)
    outputs: list[
        dict
    ]  # per example: id, prompt, response, and answer/extracted/correct or rouge_l

    def example_scores(self) -> list[float]:
        """Each example's share of the score, in test order (100 or 0 for GSM, ROUGE-L x 100):
        their mean is `score`. Every method answers the same questions, so two runs' lists are
        paired question by question (the test sample's own uncertainty, stats.py)."""
        return [
            100.0 * bool(row["correct"]) if "correct" in row else float(row["rouge_l"])
            for row in self.outputs
        ]


@torch.no_grad()
@contextlib.contextmanager
def _only(config, model):
    """`generate` with `config` alone: transformers fills every field a passed config leaves unset
    from the model's own generation_config, which a checkpoint may ship with sampling flags or a
    repetition penalty, so the model's is swapped out meanwhile."""
    shipped = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = shipped


def greedy_config(tokenizer, max_new_tokens: int, eos_token_id=None):
    """Plain greedy decoding up to the tokenizer's EOS, or any of `eos_token_id`."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id if eos_token_id is None else eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def generate(
    model,
    tokenizer,
    examples,
    max_new_tokens: int,
    max_prompt_tokens: int = 1024,
    batch_size: int = 32,
    style: str = "plain",
    synced: bool = False,
) -> list[str]:
    """Greedy responses, decoded up to the first EOS. `synced`: every process runs this with the
    same examples and keeps stepping until all are done (a sharded model's forward is
    collective)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    responses = []
    config = greedy_config(tokenizer, max_new_tokens, stop_token_ids(tokenizer, model))
    prompts = tokenize_prompts(tokenizer, examples, max_prompt_tokens, style)
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], tokenizer.pad_token_id, device)
        with _only(config, model):
            out = model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, synced_gpus=synced
            )
        responses += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return responses


def score_outputs(
    task: str, examples, responses: list[str], style: str = "plain", tokenizer=None
) -> Evaluation:
    """The metric of given responses, with one row per example a person can read."""
    rows = []
    for example, response in zip(examples, responses):
        row = dict(
            id=example["id"], prompt=format_prompt(example, style, tokenizer), response=response
        )
        if task_kind(task) == "gsm":
            extracted = metrics.extract_answer(response)
            row.update(
                answer=example["answer"],
                extracted=None if extracted is None else str(extracted),
                correct=metrics.gsm_correct(response, example["answer"]),
            )
        else:
            row.update(rouge_l=metrics.rouge_l(response, example["references"]))
        rows.append(row)
    return Evaluation(score(task, responses, examples), rows)


def evaluate(
    model,
    tokenizer,
    task: str,
    examples,
    max_new_tokens: int,
    max_prompt_tokens: int = 1024,
    batch_size: int = 32,
    style: str = "plain",
    synced: bool = False,
) -> Evaluation:
    """Greedy decoding of every example and the task metric x 100, with the per-example outputs."""
    responses = generate(
        model, tokenizer, examples, max_new_tokens, max_prompt_tokens, batch_size, style, synced
    )
    return score_outputs(task, examples, responses, style, tokenizer)


@torch.no_grad()
def validation_divergence(
    run: RunConfig,
    student,
    teacher,
    pairs,
    pad_token_id: int,
    vocab: int,
    batch_size: int = 32,
    teacher_cache: dict | None = None,
) -> float:
    """D(p_T || p_S) on the validation set's reference responses, the paper's validation loss behind
    Figures 5/8 (computed against the teacher, so off-policy training lowers it most directly).
    `teacher_cache`: a dict kept across calls on the same pairs; the frozen teacher's logits are
    then computed once instead of at every evaluation (the same numbers, scored once), as long as
    they fit in TEACHER_CACHE_BYTES. At most `positions_within(vocab)` response positions are
    scored at once, whatever `batch_size` asks."""
    was_training = student.training
    student.eval()
    device = next(student.parameters()).device
    total, rows = 0.0, 0
    # [rows, positions, vocab] logits within the budget (under the "sequence" reduction the mean
    # does not depend on which rows share a batch)
    longest = max((len(response) for _, response in pairs), default=1)
    batch_size = max(1, min(batch_size, positions_within(vocab) // longest))
    for start in range(0, len(pairs), batch_size):
        t = ground_truth_targets(pairs[start : start + batch_size], pad_token_id, device)
        teacher_logits = (teacher_cache or {}).get((start, batch_size))
        if teacher_logits is None:
            teacher_logits = response_logits(teacher, t, vocab)
            if (
                teacher_cache is not None
                and _bytes(teacher_logits, *teacher_cache.values()) <= TEACHER_CACHE_BYTES
            ):
                teacher_cache[(start, batch_size)] = teacher_logits
        loss = target_loss("off_policy", run, response_logits(student, t, vocab), teacher_logits, t)
        total, rows = total + loss.item() * t.sequences.shape[0], rows + t.sequences.shape[0]
    student.train(was_training)
    return total / max(rows, 1)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


if __name__ == "__main__":
    from adaswitch_lib.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("tokenizer")
    parser.add_argument("task")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    examples = load_task(args.task, "test", limit=args.limit)
    print(
        evaluate(
            load_model(args.model),
            load_tokenizer(args.tokenizer),
            args.task,
            examples,
            args.max_new_tokens,
        ).score
    )
