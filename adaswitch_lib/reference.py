"""SKD and AdaSwitch as their papers read: both models step together, one token at a time.

These are the references the fast draft -> verify engine (`sampler.py`) is tested against: given
the same uniform numbers, the engine writes exactly their tokens, switch points and replacements.
`sample_targets("adaswitch_reference", ...)` and `sample_targets("skd_reference", ...)` run them.

    python -m adaswitch_lib.sampler      # every sampler, references included, on tiny random models
"""

from __future__ import annotations

import torch

from adaswitch_lib.decoding import Decoder, Rollout, sample_from_logits
from adaswitch_lib.losses import token_divergence
from adaswitch_lib.rules import in_acceptance_set, switch_fires


def skd_reference(student, teacher, ids, mask, cfg, vocab, noise, keep) -> Rollout:
    """SKD as its paper reads: both models step together; a student token outside the teacher's
    set is replaced by a teacher sample."""
    S, T = (
        Decoder(student, ids, mask, vocab, cfg.max_new_tokens),
        Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens),
    )
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        y_s = sample_from_logits(
            S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j]
        )
        y_t = sample_from_logits(
            T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j]
        )
        accept = in_acceptance_set(T.next_logits, y_s, cfg)
        out.replaced += (~accept & ~out.finished).long()
        y = out.append(torch.where(accept, y_s, y_t), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out


def adaswitch_reference(student, teacher, ids, mask, cfg, vocab, noise, keep) -> Rollout:
    """Algorithm 1 as it reads: two KV caches, one token at a time."""
    S, T = (
        Decoder(student, ids, mask, vocab, cfg.max_new_tokens),
        Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens),
    )
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        student_rows = (out.switch_at < 0) & ~out.finished
        d_j = token_divergence(
            S.next_logits, T.next_logits, cfg.divergence, cfg.jsd_beta, cfg.skew_alpha
        )
        fire, mean = switch_fires(
            out.d, d_j[:, None], torch.full_like(out.switch_at, j), student_rows[:, None], cfg
        )
        out.switch(fire[:, 0], j, d_j, mean[:, 0])
        out.d[:, j] = torch.where(student_rows, d_j, float("nan"))
        y_s = sample_from_logits(
            S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j]
        )
        y_t = sample_from_logits(
            T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j]
        )
        y = out.append(torch.where(out.switch_at >= 0, y_t, y_s), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out
