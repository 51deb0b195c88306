"""Target sequences for distillation: a batch of prompts in, sequences + per-sequence stats out.

Methods: `student` (on-policy), `teacher` (SeqKD), `skd` (speculative KD: the teacher replaces
student tokens outside its top-k / top-p set), `adaswitch` (Algorithm 1), and the token-by-token
`skd_reference` and `adaswitch_reference` (Algorithm 1 as it reads), for tests and benchmarks.

SKD and AdaSwitch run on one draft -> verify engine. Each round the student drafts gamma tokens
for every live row and one teacher pass scores them all; then every row applies its own rule and
advances by its own amount (the caches mask out the slots a row did not keep):
  - SKD keeps its draft up to the first token outside the teacher's set, where a teacher sample
    replaces it;
  - an AdaSwitch row still exploring applies the switch rule to the drafted positions (d_i depends
    only on y_<i, and before the switch every token is a student sample) and, where it fires,
    writes a teacher sample;
  - a switched AdaSwitch row takes the teacher's tokens: "exact" samples them one teacher step at a
    time, as the reference does; "speculative" accepts each drafted token with probability
    min(1, p/q) and at the first rejection samples the normalised residual max(0, p - q): exactly
    the teacher's sampling distribution with far fewer sequential teacher passes.
Draws come from per-row, per-position uniform numbers, so with the same numbers SKD and exact
AdaSwitch produce the same tokens as their references.

Several processes: `gather` (values [k] -> every process's values [world, k]) makes the loops take
every decision that sets how often a model is called -- go on or stop, the round's kind, the draft
length -- from all processes' rows, so every rank calls forward as often as the others until the
last row anywhere is done (under FSDP or ZeRO-3 each forward is collective; `generate` calls this
`synced_gpus`). A rank with no live row feeds padding. One process: `gather` is the identity.

    python -m adaswitch_lib.sampler      # a demo on tiny random models
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaswitch_lib.config import _check_name
from adaswitch_lib.decoding import (
    Decoder,
    Rollout,
    SamplerConfig,
    Targets,
    is_eos,
    sample_from_logits,
    sample_from_probs,
    shared_vocab_size,
    warped_probs,
)
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import token_divergence
from adaswitch_lib.reference import adaswitch_reference, skd_reference
from adaswitch_lib.rules import in_acceptance_set, residual, speculative_rejects, switch_fires

__all__ = [
    "METHODS",
    "SamplerConfig",
    "Targets",
    "draft_length",
    "sample_targets",
    "shared_vocab_size",
]
METHODS = ("student", "teacher", "skd", "adaswitch", "skd_reference", "adaswitch_reference")


# ---------------------------------------------------------------------------- the token-by-token
# samplers
def _alone(values: torch.Tensor) -> torch.Tensor:
    """`gather` for one process: its own values are every process's."""
    return values[None]


def _drop_finished(dec: Decoder, rows: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Let the decoder hold only the batch rows `rows` that are not `done` [B], once a quarter of
    those it holds are done: a decode step costs less at a smaller batch, and answers end at
    different lengths. At least one row stays (a process whose rows
    are all done keeps stepping beside the others). Returns the rows now held."""
    alive = (~done[rows]).nonzero().flatten()
    if 4 * len(alive) > 3 * len(rows) or len(rows) == 1:
        return rows
    alive = alive if len(alive) else alive.new_zeros(1)
    dec.keep_rows(alive)
    return rows[alive]


class _Held:
    """A decoder seen as if it held the whole batch [B] while it computes only the rows it still
    holds (`rows`): the rows it let go (finished) read zero logits, and what they are fed is
    dropped. The draft -> verify engine keeps its per-row bookkeeping over the whole batch this
    way."""

    def __init__(self, dec: Decoder, batch: int):
        self.dec, self.batch = dec, batch
        self.rows = torch.arange(batch, device=dec.next_logits.device)

    def _whole(self, logits: torch.Tensor) -> torch.Tensor:
        if len(self.rows) == self.batch:
            return logits
        whole = logits.new_zeros((self.batch, *logits.shape[1:]))
        whole[self.rows] = logits
        return whole

    @property
    def next_logits(self) -> torch.Tensor:
        return self._whole(self.dec.next_logits)

    def feed(self, tokens: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        return self._whole(self.dec.feed(tokens[self.rows], all_logits))

    def settle(self, fed: int, valid: torch.Tensor) -> None:
        self.dec.settle(fed, valid[self.rows])

    def drop(self, done: torch.Tensor) -> None:
        self.rows = _drop_finished(self.dec, self.rows, done)


def _single(model, ids, mask, cfg, vocab, noise, teacher: bool, gather=_alone) -> Rollout:
    """Plain sampling from one model (student: on-policy; teacher: SeqKD)."""
    temperature, top_p = (
        (cfg.teacher_temperature, cfg.teacher_top_p)
        if teacher
        else (cfg.student_temperature, cfg.student_top_p)
    )
    dec, out = (
        Decoder(model, ids, mask, vocab, cfg.max_new_tokens),
        Rollout(ids.shape[0], cfg, ids.device, None),
    )
    rows = torch.arange(ids.shape[0], device=ids.device)  # the rows the decoder holds
    for j in range(cfg.max_new_tokens):
        y = torch.full((ids.shape[0],), cfg.pad_token_id, dtype=torch.long, device=ids.device)
        y[rows] = sample_from_logits(
            dec.next_logits, temperature, top_p, noise[int(teacher), rows, j]
        )
        # a process whose rows are all done only keeps the others company: its targets stay as they
        # are
        y = out.append(y, j) if not out.finished.all() else torch.full_like(y, cfg.pad_token_id)
        if j + 1 == cfg.max_new_tokens or bool(gather(out.finished.all().long()[None]).min()):
            break
        rows = _drop_finished(dec, rows, out.finished)
        dec.feed(y[rows][:, None])
    return out


# ---------------------------------------------------------------------------- the draft -> verify
# engine
def draft_length(keep_rate: float, verify_cost: float, longest: int) -> int:
    """The draft length that writes the most tokens per unit of cost. A row keeps each draft with
    probability `keep_rate` until its first rejection, which a teacher token replaces: a round of g
    drafts writes sum_{k<g} keep_rate^k tokens per row and costs g draft steps plus one teacher
    pass (`verify_cost` draft steps). Shrinking the draft at every rejection anywhere in the batch
    would collapse it to one token a round in a batch of many rows that each keep most drafts."""
    best, best_rate, expected = 1, 0.0, 0.0
    for g in range(1, longest + 1):
        expected += keep_rate ** (g - 1)
        rate = expected / (g + verify_cost)
        if rate > best_rate:
            best, best_rate = g, rate
    return best


class DraftLength:
    """The next round's draft length, from the rate at which drafts are kept over the rounds so far
    (each round's weight halving as it ages); at most twice the last draft, since a rate from a
    round or two is a rough guess (a batch that kept every early draft may switch the round
    after)."""

    def __init__(self, cfg: SamplerConfig):
        self.cfg, self.length, self.kept, self.rejected = cfg, cfg.draft_chunk, 0.0, 0.0

    def update(self, kept: float, rejected: float, gamma: int) -> None:
        self.kept, self.rejected = self.kept / 2 + kept, self.rejected / 2 + rejected
        if self.kept + self.rejected > 0:
            rate = self.kept / (self.kept + self.rejected)
            self.length = min(
                draft_length(rate, self.cfg.verify_cost, 2 * self.cfg.draft_chunk), 2 * gamma
            )


@dataclass
class _Round:
    """One round of the draft -> verify engine: which rows take part, and what was drafted."""

    live: torch.Tensor  # [B] rows still writing
    exploring: torch.Tensor  # [B] AdaSwitch rows before their switch (SKD: every live row)
    switched: torch.Tensor  # [B] AdaSwitch rows after it
    gamma: int = 0  # drafts per row
    index: torch.Tensor = None  # [B, gamma] the response positions drafted (clamped)
    in_range: torch.Tensor = None  # [B, gamma] positions inside max_new_tokens
    chunk: torch.Tensor = None  # [B, gamma] the drafted tokens
    q: torch.Tensor = None  # [B, gamma, V] the student's logits at each draft
    p: torch.Tensor = None  # [B, gamma, V] the teacher's logits at each draft
    fed: int = 0  # slots fed to both decoders this round


def _draft(S: _Held, r: _Round, pending, cfg: SamplerConfig, noise, speculative: bool) -> None:
    """The student drafts gamma tokens per row (a switched row under speculative continuation
    drafts from q, the continuation's draft distribution)."""
    teacher_warp = (
        speculative and bool(r.switched.any()) and cfg.continuation_draft == "teacher_warp"
    )
    if pending is not None:
        S.feed(pending[:, None])
        r.fed = 1
    q, chunk = [], []
    for k in range(r.gamma):
        q.append(S.next_logits)
        u = noise[0].gather(1, r.index[:, k : k + 1])[:, 0]
        y = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, u)
        if teacher_warp:
            y = torch.where(
                r.switched,
                sample_from_logits(S.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, u),
                y,
            )
        chunk.append(torch.where(r.live, y, cfg.pad_token_id))
        if k + 1 < r.gamma:
            S.feed(chunk[-1][:, None])
    r.chunk, r.q = torch.stack(chunk, 1), torch.stack(q, 1)
    r.fed += r.gamma - 1


def _verify(T: _Held, r: _Round, pending, teacher_first) -> None:
    """One teacher pass scores every drafted position: p[:, k] is the teacher's logits at draft
    k."""
    if pending is not None:
        r.p = T.feed(torch.cat([pending[:, None], r.chunk[:, :-1]], 1), all_logits=True)
    elif r.gamma > 1:
        r.p = torch.cat([teacher_first[:, None], T.feed(r.chunk[:, :-1], all_logits=True)], 1)
    else:
        r.p = teacher_first[:, None]


def _switch_replacements(out: Rollout, r: _Round, position, cfg: SamplerConfig):
    """AdaSwitch rows still exploring: the switch rule at every drafted position (d_i depends only
    on y_<i, and before the switch every token is a student sample). Returns (fire, d, mean)."""
    d = token_divergence(r.q, r.p, cfg.divergence, cfg.jsd_beta, cfg.skew_alpha)
    fire, mean = switch_fires(out.d, d, position, r.exploring[:, None] & r.in_range, cfg)
    return fire, d, mean


def _continuation_probs(r: _Round, cfg: SamplerConfig):
    """The teacher's sampling distribution p and the draft distribution q at every drafted
    position."""
    q_warp = (
        (cfg.teacher_temperature, cfg.teacher_top_p)
        if cfg.continuation_draft == "teacher_warp"
        else (cfg.student_temperature, cfg.student_top_p)
    )
    return warped_probs(r.p, cfg.teacher_temperature, cfg.teacher_top_p), warped_probs(r.q, *q_warp)


def _first_stops(r: _Round, replace, cfg: SamplerConfig):
    """Per row: the draft where it stops (the first replaced draft, EOS, or the end of the
    response), whether a replacing token is written there, and how many tokens it writes."""
    rows = torch.arange(r.chunk.shape[0], device=r.chunk.device)
    stop = replace | is_eos(r.chunk, cfg) | ~r.in_range
    first = torch.where(stop.any(1), stop.long().argmax(1), r.gamma)
    at = first.clamp(max=r.gamma - 1)
    inside = (first < r.gamma) & r.in_range[rows, at]
    replaced = r.live & inside & replace[rows, at]
    # drafts kept, plus the replacing token or EOS
    count = torch.where(r.live, first + inside.long(), 0)
    # a round that moves no row would loop forever: fail loudly instead
    if not (count[r.live] > 0).all():
        raise RuntimeError(
            f"sampler stalled: rows {(r.live & (count == 0)).nonzero().flatten().tolist()} wrote "
            "nothing"
        )
    return at, replaced, count


def _round_state(out: Rollout, position, n: int, gather):
    """The round's rows, and the decisions that set its forward calls agreed over every process's
    rows: (live, exploring, switched), (any live, any switched, any exploring, room left)."""
    live = ~out.finished & (position < n)
    exploring, switched = live & (out.switch_at < 0), live & (out.switch_at >= 0)
    # n minus the lowest live position, so that one maximum over processes gives every value
    state = gather(
        torch.stack(
            [
                live.any().long(),
                switched.any().long(),
                exploring.any().long(),
                n - torch.where(live, position, n).min(),
            ]
        )
    )
    return (live, exploring, switched), state.amax(0).tolist()


def _settle(S: _Held, T: _Held, r: _Round, tokens, count, pending, pad_token_id: int):
    """Each row keeps its slots up to its last written token; returns those tokens, which the rows
    feed to both models next round."""
    last = (count - 1).clamp(min=0)
    valid = last + (0 if pending is None else 1)
    S.settle(r.fed, valid), T.settle(r.fed, valid)
    return torch.where(
        r.live, tokens[torch.arange(len(count), device=count.device), last], pad_token_id
    )


def _kept_and_rejected(r: _Round, count, replaced, lock_step: bool, gather) -> list[float]:
    """Drafts kept and rejected this round over every process's rows. Rows in exact lock-step take
    the teacher's tokens whatever they drafted: they say nothing about the rate."""
    tested = r.live & ~(r.switched & lock_step)
    counts = torch.stack(
        [torch.where(tested, count - replaced.long(), 0).sum(), (tested & replaced).sum()]
    )
    return gather(counts).sum(0).tolist()


def _draft_verify(
    student, teacher, ids, mask, cfg, vocab, noise, keep, method: str, gather=_alone
) -> Rollout:
    """SKD and AdaSwitch in rounds: the student drafts, one teacher pass verifies, each row applies
    its rule and advances by its own amount."""
    S, T = (
        _Held(Decoder(model, ids, mask, vocab, cfg.max_new_tokens), ids.shape[0])
        for model in (student, teacher)
    )
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    n, batch, device = cfg.max_new_tokens, ids.shape[0], ids.device
    adaswitch, speculative = method == "adaswitch", cfg.teacher_continuation == "speculative"
    # exact continuation: a switched row takes the teacher's tokens
    lock_step = adaswitch and not speculative
    # response tokens written per row
    position = torch.zeros(batch, dtype=torch.long, device=device)
    # each row's last written token, fed to both models at the start of the next round
    pending = None
    draft = DraftLength(cfg)
    # speculative continuation: drafts verified
    drafted = torch.zeros(batch, dtype=torch.long, device=device)
    accepted = torch.zeros(batch, dtype=torch.long, device=device)  # ... and accepted
    while True:
        rows_now, (any_live, any_switched, any_exploring, room) = _round_state(
            out, position, n, gather
        )
        r = _Round(*rows_now)
        if not any_live:
            break
        # finished rows leave both models (a row's state stays in `out`)
        S.drop(~r.live), T.drop(~r.live)
        # every live row switched: the teacher alone
        if lock_step and any_switched and not any_exploring:
            _teacher_finishes(T.dec, T.rows, out, position, pending, cfg, noise, gather)
            break
        # exact continuation beside exploring rows: lock-step, one token a round; no draft past the
        # room left
        r.gamma = 1 if lock_step and any_switched else min(draft.length, room)
        target = position[:, None] + torch.arange(r.gamma, device=device)
        r.index, r.in_range = target.clamp(max=n - 1), target < n
        teacher_first = T.next_logits
        _draft(S, r, pending, cfg, noise, adaswitch and speculative)
        _verify(T, r, pending, teacher_first)
        tokens, count, replaced = _write_round(
            out, r, position, cfg, noise, method, speculative, drafted, accepted
        )
        pending = _settle(S, T, r, tokens, count, pending, cfg.pad_token_id)
        draft.update(*_kept_and_rejected(r, count, replaced, lock_step, gather), r.gamma)
        position = position + count
    if adaswitch and speculative:
        out.continuation = (drafted, accepted)
    return out


def _write_round(
    out: Rollout,
    r: _Round,
    position,
    cfg: SamplerConfig,
    noise,
    method: str,
    speculative: bool,
    drafted,
    accepted,
):
    """Apply each row's rule to its drafts, write what it keeps and the replacing token, and
    update the rollout's statistics. Returns (tokens, count, replaced) per row."""
    rows = torch.arange(r.chunk.shape[0], device=r.chunk.device)
    u_teacher = noise[1].gather(1, r.index)
    continuing = method == "adaswitch" and speculative and bool(r.switched.any())
    if method == "skd":
        replace = ~in_acceptance_set(r.p, r.chunk, cfg)
    else:
        replace, d, mean = _switch_replacements(out, r, position, cfg)
        if continuing:  # accept with probability min(1, p/q)
            p_probs, q_probs = _continuation_probs(r, cfg)
            replace = torch.where(
                r.switched[:, None],
                speculative_rejects(p_probs, q_probs, r.chunk, u_teacher),
                replace,
            )
        elif r.switched.any():  # exact: a switched row takes the teacher's sample at its position
            replace = replace | r.switched[:, None]
    at, replaced, count = _first_stops(r, replace, cfg)
    # the replacing token: a teacher sample (SKD, the switch, exact continuation) or the residual
    y_t = sample_from_logits(
        r.p[rows, at], cfg.teacher_temperature, cfg.teacher_top_p, u_teacher[rows, at]
    )
    if continuing:
        residual_draw = sample_from_probs(
            residual(p_probs[rows, at], q_probs[rows, at]), noise[2].gather(1, r.index)[rows, at]
        )
        y_t = torch.where(r.switched, residual_draw, y_t)
        drafted += torch.where(r.switched, count, 0)
        accepted += torch.where(r.switched, count - replaced.long(), 0)
    tokens = r.chunk.clone()
    tokens[rows, at] = torch.where(replaced, y_t, r.chunk[rows, at])
    if method == "adaswitch":
        out.put(out.d, d, position, torch.where(r.exploring, count, 0))
        out.switch(r.exploring & replaced, position + at, d[rows, at], mean[rows, at])
    else:
        out.replaced += replaced.long()
    out.write(tokens, count, position, r.p)
    return tokens, count, replaced


def _teacher_finishes(
    T: Decoder, rows, out: Rollout, position, pending, cfg, noise, gather
) -> None:
    """Exact continuation once every live row has switched: the teacher alone, one token a step,
    holding only the rows still writing (`rows`: the batch rows T holds now)."""
    n, pad = cfg.max_new_tokens, cfg.pad_token_id
    while True:
        live = ~out.finished & (position < n)
        if not bool(gather(live.any().long()[None]).max()):
            return
        rows = _drop_finished(T, rows, ~live)
        if pending is not None:
            T.feed(pending[rows][:, None])
        y = torch.full_like(position, pad)
        y[rows] = sample_from_logits(
            T.next_logits,
            cfg.teacher_temperature,
            cfg.teacher_top_p,
            noise[1, rows, position[rows].clamp(max=n - 1)],
        )
        logits = None
        if out.keep_logits:
            logits = T.next_logits.new_zeros(position.shape[0], 1, T.next_logits.shape[-1])
            logits[rows, 0] = T.next_logits
        count = live.long()
        out.write(y[:, None], count, position, logits)
        pending, position = torch.where(live, y, pad), position + count


@torch.no_grad()
def _check_prompts(prompt_ids, prompt_mask, models, cfg: SamplerConfig) -> None:
    """One-line errors for prompts no sampler can take."""
    if prompt_mask.shape != prompt_ids.shape:
        raise ConfigError(
            f"prompt mask {tuple(prompt_mask.shape)} and prompt ids {tuple(prompt_ids.shape)} "
            "differ"
        )
    empty = (prompt_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(f"prompt rows {empty} are empty; every prompt needs at least one token")
    longest = int(prompt_mask.sum(-1).max())
    for model in models:
        context = getattr(model.config, "max_position_embeddings", None)
        if context and longest + cfg.max_new_tokens > context:
            raise ConfigError(
                f"prompt ({longest} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the "
                f"model's context of {context} tokens; shorten the prompt or max_new_tokens"
            )


def _every_draw(noise, batch: int, cfg: SamplerConfig, generator, device) -> torch.Tensor:
    """The uniform numbers [3, B, max_new_tokens] of student draws, teacher draws (and acceptance
    tests) and residual draws: given, completed, or drawn from `generator`."""
    if noise is None:
        noise = torch.rand(3, batch, cfg.max_new_tokens, generator=generator)
    elif noise.shape[0] == 2:
        noise = torch.cat([noise, torch.rand(1, batch, cfg.max_new_tokens, generator=generator)])
    return noise.to(device)


def _sample(method: str, student, teacher, ids, mask, cfg, vocab, noise, gather) -> Rollout:
    if method in ("student", "teacher"):
        model = student if method == "student" else teacher
        return _single(
            model, ids, mask, cfg, vocab, noise, teacher=method == "teacher", gather=gather
        )
    keep = cfg.keep_teacher_logits
    if method in ("skd", "adaswitch"):
        return _draft_verify(student, teacher, ids, mask, cfg, vocab, noise, keep, method, gather)
    reference = {"skd_reference": skd_reference, "adaswitch_reference": adaswitch_reference}[method]
    return reference(student, teacher, ids, mask, cfg, vocab, noise, keep)


@torch.no_grad()  # sampling builds no graph: the update does its own forward
def sample_targets(
    method: str,
    student,
    teacher,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    cfg: SamplerConfig = SamplerConfig(),
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    gather=None,
) -> Targets:
    """Target sequences for a batch of left-padded prompts. `noise` [3, B, max_new_tokens] holds the
    uniform numbers of the student's (0) and the teacher's (1) draws and of speculative residual
    draws (2); by default they come from `generator` (CPU), so a seed fixes every draw whatever
    the device. `gather` keeps several processes calling forward together (module docstring);
    the token-by-token references run alone."""
    _check_name("sampler method", method, METHODS)
    models = [m for m in (student, teacher) if m is not None]
    _check_prompts(prompt_ids, prompt_mask, models, cfg)
    if student is not None and teacher is not None:
        vocab = shared_vocab_size(student, teacher, cfg.vocab_size)
    else:
        vocab = cfg.vocab_size or models[0].config.vocab_size
    noise = _every_draw(noise, prompt_ids.shape[0], cfg, generator, prompt_ids.device)
    modes = [(m, m.training) for m in models]
    for model in models:
        model.eval()  # no dropout while sampling
    try:
        out = _sample(
            method, student, teacher, prompt_ids, prompt_mask, cfg, vocab, noise, gather or _alone
        )
    finally:
        for model, training in modes:
            model.train(training)
    return out.targets(prompt_ids, prompt_mask, method)


if __name__ == "__main__":
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from adaswitch_lib.data import left_pad

    torch.manual_seed(0)

    def make(layers, hidden):
        return Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=64,
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=2 * hidden,
                max_position_embeddings=256,
            )
        )

    teacher, student = make(2, 64), make(1, 32)
    ids, mask = left_pad([[5, 6, 7], [8, 9, 10, 11, 12]])
    cfg = SamplerConfig(max_new_tokens=24, adaswitch_k=1.2, adaswitch_window=4)
    for method in METHODS:
        t = sample_targets(
            method, student, teacher, ids, mask, cfg, torch.Generator().manual_seed(0)
        )
        print(f"{method:>20}", t.responses[0].tolist(), {k: v.tolist() for k, v in t.stats.items()})
