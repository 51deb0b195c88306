"""Evaluation decodes greedily, whatever generation settings a checkpoint ships with."""

import pytest
import torch

from adaswitch_lib import models
from adaswitch_lib.config import TinyShape, get_profile
from adaswitch_lib.data import (
    format_completion,
    format_prompt,
    left_pad,
    load_task,
    tokenize_prompts,
)
from adaswitch_lib.evaluate import generate


def _tiny():
    synth = get_profile("smoke").synth
    train = load_task("synth_gsm", "train", synth_config=synth)[:200]
    tokenizer = models.train_tokenizer(
        [format_prompt(e) + format_completion(e) for e in train], 256
    )
    model = models.tiny_model("tiny-qwen", TinyShape(1, 32, 2, 1, 64), tokenizer, 0.0, seed=0)
    return model.eval(), tokenizer, load_task("synth_gsm", "test", synth_config=synth)[:4]


@torch.no_grad()
def _argmax_ids(model, tokenizer, examples, new_tokens: int) -> torch.Tensor:
    """Greedy decoding by hand: the whole sequence through the model at each step."""
    ids, mask = left_pad(tokenize_prompts(tokenizer, examples, 96), tokenizer.pad_token_id)
    out, done = [], torch.zeros(len(ids), dtype=torch.bool)
    for _ in range(new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        token = torch.where(done, tokenizer.pad_token_id, logits.argmax(-1))
        done |= token == tokenizer.eos_token_id
        out.append(token)
        ids, mask = (
            torch.cat([ids, token[:, None]], 1),
            torch.cat([mask, (~done | (token == tokenizer.eos_token_id)).long()[:, None]], 1),
        )
    return torch.stack(out, 1)


def _argmax_loop(model, tokenizer, examples, new_tokens: int) -> list[str]:
    ids = _argmax_ids(model, tokenizer, examples, new_tokens)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_evaluation_is_greedy_whatever_the_checkpoint_ships():
    model, tokenizer, examples = _tiny()
    greedy = generate(model, tokenizer, examples, 12, max_prompt_tokens=96)
    assert greedy == _argmax_loop(model, tokenizer, examples, 12)
    # a checkpoint may ship sampling settings and penalties; evaluation ignores them
    shipped = model.generation_config
    shipped.repetition_penalty, shipped.no_repeat_ngram_size = 50.0, 1
    shipped.do_sample, shipped.temperature, shipped.top_k = True, 5.0, 3
    assert generate(model, tokenizer, examples, 12, max_prompt_tokens=96) == greedy


def test_evaluation_stops_at_every_eos_id_the_model_names():
    """A checkpoint's generation config may name several EOS ids (Qwen2.5-Instruct ends a turn with
    <|im_end|>): evaluation stops at each of them, as well as at the tokenizer's."""
    model, tokenizer, examples = _tiny()
    ids = _argmax_ids(model, tokenizer, examples, 12)
    second = int(ids[0, 3])  # a token the first answer writes, made an EOS id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, second]
    stopped = generate(model, tokenizer, examples, 12, max_prompt_tokens=96)
    for row, text in zip(ids.tolist(), stopped):
        cut = next(
            (i + 1 for i, t in enumerate(row) if t in (tokenizer.eos_token_id, second)), len(row)
        )
        assert text == tokenizer.decode(row[:cut], skip_special_tokens=True)
    assert len(stopped[0]) < len(tokenizer.decode(ids[0], skip_special_tokens=True))


def test_each_example_score_adds_up_to_the_task_score():
    """`Evaluation.example_scores`: one number per test example, in order, whose mean is the
    score: 100 or 0 for a GSM answer, ROUGE-L x 100 against the best reference for a summary."""
    from adaswitch_lib.evaluate import score_outputs

    synth = get_profile("smoke").synth
    gsm = load_task("synth_gsm", "test", synth_config=synth)[:3]
    answers = [f"The answer is {gsm[0]['answer']}.", "The answer is -1.", "no number"]
    scored = score_outputs("synth_gsm", gsm, answers)
    assert scored.example_scores() == [100.0, 0.0, 0.0] and scored.score == 100 / 3
    summ = load_task("synth_summ", "test", synth_config=synth)[:3]
    summaries = [summ[0]["references"][0], "Someone talks about the weather.", ""]
    scored = score_outputs("synth_summ", summ, summaries)
    per_example = scored.example_scores()
    assert per_example[0] == 100.0 and 0 < per_example[1] < 100 and per_example[2] == 0.0
    assert sum(per_example) / 3 == pytest.approx(scored.score)
