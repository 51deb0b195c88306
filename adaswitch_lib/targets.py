"""The target sequences of one batch, as a method's row in `methods.py` says: ground truth,
teacher samples (SeqKD), student samples (on-policy), a per-sequence mix (ImitKD), SKD or
AdaSwitch. Every draw is seeded by (seed, step, row), never by the process, so a run's targets do
not depend on how many processes or micro-batches share a step.

    python -m adaswitch_lib distill --profile smoke --pair tiny-qwen --task synth_gsm --method
    imitkd
"""

from __future__ import annotations

import torch

from adaswitch_lib.config import RunConfig
from adaswitch_lib.data import left_pad
from adaswitch_lib.errors import KitError
from adaswitch_lib.methods import get_method
from adaswitch_lib.sampler import SamplerConfig, Targets, sample_targets

Pair = tuple[list[int], list[int]]  # (prompt ids, response ids ending in EOS)


def sampler_config(
    run: RunConfig,
    tokenizer,
    max_new_tokens: int,
    keep_teacher_logits: bool = False,
    eos_token_id: int | tuple | None = None,
) -> SamplerConfig:
    """The sampler settings of a run: the profile's temperatures, the method's knobs; rows end at
    `eos_token_id` (`models.stop_token_ids`), by default the tokenizer's EOS."""
    p = run.profile
    return SamplerConfig(
        max_new_tokens=max_new_tokens,
        student_temperature=p.student_temperature,
        student_top_p=p.student_top_p,
        teacher_temperature=p.teacher_temperature,
        teacher_top_p=p.teacher_top_p,
        adaswitch_k=run.adaswitch_k,
        adaswitch_window=run.adaswitch_window,
        adaswitch_floor=run.adaswitch_floor,
        divergence=run.divergence,
        jsd_beta=run.jsd_beta,
        skew_alpha=run.skew_alpha,
        skd_rule=run.skd_rule,
        skd_top_k=run.skd_top_k,
        skd_top_p=run.skd_top_p,
        # "auto" samples exactly until the first step has timed both (distill.choose_continuation)
        teacher_continuation="exact"
        if run.teacher_continuation == "auto"
        else run.teacher_continuation,
        keep_teacher_logits=keep_teacher_logits,
        eos_token_id=tokenizer.eos_token_id if eos_token_id is None else eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
    )


def ground_truth_targets(pairs: list[Pair], pad_token_id: int, device=None) -> Targets:
    """Given responses as Targets: prompts left-padded, responses right-padded (like a
    sampler's)."""
    ids, mask = left_pad([p for p, _ in pairs], pad_token_id, device)
    return _after_prompts(ids, mask, [r for _, r in pairs], pad_token_id)


def _after_prompts(ids, mask, responses: list[list[int]], pad_token_id: int) -> Targets:
    """Targets from left-padded prompt tensors and the responses that follow them (right-padded)."""
    width = max(len(r) for r in responses)
    tokens = torch.full((len(responses), width), pad_token_id, dtype=torch.long, device=ids.device)
    response_mask = torch.zeros_like(tokens)
    for row, response in enumerate(responses):
        tokens[row, : len(response)] = torch.tensor(response, dtype=torch.long)
        response_mask[row, : len(response)] = 1
    return Targets(
        torch.cat([ids, tokens], 1),
        torch.cat([mask, response_mask], 1),
        response_mask,
        ids.shape[1],
    )


def merge_targets(parts: list[tuple[list[int], Targets]], batch: int, pad_token_id: int) -> Targets:
    """Rows of several Targets over the same left-padded prompts into one batch (ImitKD's mix)."""
    parts = [(rows, t) for rows, t in parts if rows]
    prompt = parts[0][1].prompt_length
    width = max(t.response_mask.shape[1] for _, t in parts)
    like = parts[0][1].sequences
    sequences = like.new_full((batch, prompt + width), pad_token_id)
    attention = like.new_zeros((batch, prompt + width))
    for rows, t in parts:
        index = torch.tensor(rows, device=like.device)
        n = t.sequences.shape[1]
        sequences[index, :n], attention[index, :n] = t.sequences, t.attention_mask
    return Targets(sequences, attention, attention[:, prompt:].clone(), prompt)


def teacher_responses(
    teacher,
    tokenizer,
    prompts: list[list[int]],
    cfg: SamplerConfig,
    seed: int,
    batch_size: int = 32,
) -> list[list[int]]:
    """SeqKD's targets: one teacher sample per prompt (its temperature / top-p), up to and with
    EOS."""
    device = next(teacher.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], tokenizer.pad_token_id, device)
        t = sample_targets(
            "teacher",
            None,
            teacher,
            ids,
            mask,
            cfg,
            torch.Generator().manual_seed(seed * 7919 + start),
        )
        out += [row[m.bool()].tolist() for row, m in zip(t.responses, t.response_mask)]
    return out


def step_noise(seed: int, step: int, rows: int, max_new_tokens: int) -> torch.Tensor:
    """The uniform numbers behind every draw of one step [3, rows, max_new_tokens] (student,
    teacher, speculative residual)."""
    return torch.rand(
        3, rows, max_new_tokens, generator=torch.Generator().manual_seed(seed * 1_000_003 + step)
    )


def imitkd_beta(run: RunConfig, step: int, steps: int) -> float:
    """ImitKD's probability of ground truth at a step: linear from imitkd_beta_start to 0."""
    return run.imitkd_beta_start * (1 - step / steps)


def build_targets(
    method: str,
    run: RunConfig,
    student,
    teacher,
    pairs: list[Pair],
    noise: torch.Tensor,
    cfg: SamplerConfig,
    device,
    *,
    ground_truth_rows: list[bool] | None = None,
    teacher_pairs: list[Pair] | None = None,
    gather=None,
) -> Targets:
    """The target sequences of one (micro-)batch for a method (see methods.py). `noise` holds these
    rows' uniform numbers; `ground_truth_rows` is ImitKD's per-row coin; `teacher_pairs` SeqKD's;
    `gather` keeps several processes' samplers calling forward together (`rank_gather`)."""
    source = get_method(method).targets
    pad = cfg.pad_token_id
    if source == "ground_truth":
        return ground_truth_targets(pairs, pad, device)
    if source == "teacher_samples":
        if teacher_pairs is None:
            raise KitError(
                "seqkd needs the teacher's samples of the KD prompts (prepare.seqkd_pairs)"
            )
        return ground_truth_targets(teacher_pairs, pad, device)
    ids, mask = left_pad([p for p, _ in pairs], pad, device)
    if source == "mixed":
        gold = [i for i, g in enumerate(ground_truth_rows) if g]
        sampled = [i for i, g in enumerate(ground_truth_rows) if not g]
        index = torch.tensor(gold, dtype=torch.long, device=device)
        parts = (
            [(gold, _after_prompts(ids[index], mask[index], [pairs[i][1] for i in gold], pad))]
            if gold
            else []
        )
        if sampled:
            rows = torch.tensor(sampled, device=device)
            parts.append(
                (
                    sampled,
                    sample_targets(
                        "student",
                        student,
                        None,
                        ids[rows],
                        mask[rows],
                        cfg,
                        noise=noise[:, sampled],
                        gather=gather,
                    ),
                )
            )
        # no row of ours samples, but the other processes' samplers need us
        elif gather is not None:
            sample_targets(
                "student", student, None, ids[:1], mask[:1], cfg, noise=noise[:, :1], gather=gather
            )
        return merge_targets(parts, len(pairs), pad)
    return sample_targets(source, student, teacher, ids, mask, cfg, noise=noise, gather=gather)
