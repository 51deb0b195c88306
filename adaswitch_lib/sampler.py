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

import torch

from adaswitch_lib.config import _check_name
from adaswitch_lib.decoding import (Decoder, Rollout, SamplerConfig, Targets, in_acceptance_set, sample_from_logits,
                                    sample_from_probs, shared_vocab_size, warped_probs)
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import token_divergence

__all__ = ["METHODS", "SamplerConfig", "Targets", "draft_length", "sample_targets", "shared_vocab_size"]
METHODS = ("student", "teacher", "skd", "adaswitch", "skd_reference", "adaswitch_reference")


# ---------------------------------------------------------------------------- the token-by-token samplers
def _d(cfg: SamplerConfig, student_logits, teacher_logits) -> torch.Tensor:
    return token_divergence(student_logits, teacher_logits, cfg.divergence, cfg.jsd_beta, cfg.skew_alpha)


def _alone(values: torch.Tensor) -> torch.Tensor:
    """`gather` for one process: its own values are every process's."""
    return values[None]


def _drop_finished(dec: Decoder, rows: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Let the decoder hold only the batch rows `rows` that are not `done` [B], once a quarter of
    those it holds are done: a decode step of the cpu teacher costs 3.9 ms at batch 4 against 6.7 ms
    at 16 on CPU, and answers end at different lengths. At least one row stays (a process whose rows
    are all done keeps stepping beside the others). Returns the rows now held."""
    alive = (~done[rows]).nonzero().flatten()
    if 4 * len(alive) > 3 * len(rows) or len(rows) == 1:
        return rows
    alive = alive if len(alive) else alive.new_zeros(1)
    dec.keep_rows(alive)
    return rows[alive]


class _Held:
    """A decoder seen as if it held the whole batch [B] while it computes only the rows it still
    holds (`rows`): the rows it let go (finished) read zero logits, and what they are fed is dropped.
    The draft -> verify engine keeps its per-row bookkeeping over the whole batch this way."""

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
    temperature, top_p = (cfg.teacher_temperature, cfg.teacher_top_p) if teacher else (cfg.student_temperature, cfg.student_top_p)
    dec, out = Decoder(model, ids, mask, vocab, cfg.max_new_tokens), Rollout(ids.shape[0], cfg, ids.device, None)
    rows = torch.arange(ids.shape[0], device=ids.device)  # the rows the decoder holds
    for j in range(cfg.max_new_tokens):
        y = torch.full((ids.shape[0],), cfg.pad_token_id, dtype=torch.long, device=ids.device)
        y[rows] = sample_from_logits(dec.next_logits, temperature, top_p, noise[int(teacher), rows, j])
        # a process whose rows are all done only keeps the others company: its targets stay as they are
        y = out.append(y, j) if not out.finished.all() else torch.full_like(y, cfg.pad_token_id)
        if j + 1 == cfg.max_new_tokens or bool(gather(out.finished.all().long()[None]).min()):
            break
        rows = _drop_finished(dec, rows, out.finished)
        dec.feed(y[rows][:, None])
    return out


def _skd_reference(student, teacher, ids, mask, cfg, vocab, noise, keep) -> Rollout:
    """SKD as its paper reads: both models step together; a student token outside the teacher's
    set is replaced by a teacher sample."""
    S, T = Decoder(student, ids, mask, vocab, cfg.max_new_tokens), Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens)
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        y_s = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j])
        y_t = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j])
        accept = in_acceptance_set(T.next_logits, y_s, cfg)
        out.replaced += (~accept & ~out.finished).long()
        y = out.append(torch.where(accept, y_s, y_t), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out


def _adaswitch_reference(student, teacher, ids, mask, cfg, vocab, noise, keep) -> Rollout:
    """Algorithm 1 as it reads: two KV caches, one token at a time."""
    S, T = Decoder(student, ids, mask, vocab, cfg.max_new_tokens), Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens)
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        student_rows = (out.switch_at < 0) & ~out.finished
        d_j = _d(cfg, S.next_logits, T.next_logits)
        fire, mean = out.fires_at(d_j[:, None], torch.full_like(out.switch_at, j), student_rows[:, None])
        out.switch(fire[:, 0], j, d_j, mean[:, 0])
        out.d[:, j] = torch.where(student_rows, d_j, float("nan"))
        y_s = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j])
        y_t = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j])
        y = out.append(torch.where(out.switch_at >= 0, y_t, y_s), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out


# ---------------------------------------------------------------------------- the draft -> verify engine
def draft_length(keep_rate: float, verify_cost: float, longest: int) -> int:
    """The draft length that writes the most tokens per unit of cost. A row keeps each draft with
    probability `keep_rate` until its first rejection, which a teacher token replaces: a round of g
    drafts writes sum_{k<g} keep_rate^k tokens per row and costs g draft steps plus one teacher
    pass (`verify_cost` draft steps). Shrinking the draft at every rejection anywhere in the batch
    would collapse it to one token a round in a batch of 16 rows, each keeping 90 % of its drafts."""
    best, best_rate, expected = 1, 0.0, 0.0
    for g in range(1, longest + 1):
        expected += keep_rate ** (g - 1)
        rate = expected / (g + verify_cost)
        if rate > best_rate:
            best, best_rate = g, rate
    return best


def _draft_verify(student, teacher, ids, mask, cfg, vocab, noise, keep, method: str, gather=_alone) -> Rollout:
    """SKD and AdaSwitch in rounds: the student drafts, one teacher pass verifies, rows advance apart."""
    S, T = (_Held(Decoder(model, ids, mask, vocab, cfg.max_new_tokens), ids.shape[0]) for model in (student, teacher))
    out = Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    n, batch, device, pad = cfg.max_new_tokens, ids.shape[0], ids.device, cfg.pad_token_id
    rows = torch.arange(batch, device=device)
    adaswitch, speculative = method == "adaswitch", cfg.teacher_continuation == "speculative"
    position = torch.zeros(batch, dtype=torch.long, device=device)  # response tokens written per row
    pending = None  # each row's last written token, fed to both models at the start of the next round
    draft = cfg.draft_chunk  # then set by the acceptance rate (`draft_length`)
    kept_drafts = rejected_drafts = 0.0  # over the rounds so far, each round's weight halving as it ages
    drafted = torch.zeros(batch, dtype=torch.long, device=device)   # speculative continuation: drafts verified
    accepted = torch.zeros(batch, dtype=torch.long, device=device)  # ... and accepted
    while True:
        live = ~out.finished & (position < n)
        exploring, switched = live & (out.switch_at < 0), live & (out.switch_at >= 0)
        # what sets this round's forward calls, agreed over every process's rows
        # (and n minus the lowest live position, so that one maximum over processes gives every value)
        state = gather(torch.stack([live.any().long(), switched.any().long(), exploring.any().long(),
                                    n - torch.where(live, position, n).min()]))
        any_live, any_switched, any_exploring, room = state.amax(0).tolist()
        if not any_live:
            break
        S.drop(~live), T.drop(~live)  # finished rows leave both models (a row's state stays in `out`)
        if adaswitch and not speculative and any_switched:
            if not any_exploring:  # exact continuation, every live row switched: the teacher alone
                _teacher_finishes(T.dec, T.rows, out, position, pending, cfg, noise, gather)
                break
            gamma = 1  # exact continuation beside exploring rows: lock-step, one token a round
        else:
            gamma = min(draft, room)  # no draft past the longest room any live row has left
        target = position[:, None] + torch.arange(gamma, device=device)  # the response positions drafted
        index, in_range = target.clamp(max=n - 1), target < n
        # 1. the student drafts gamma tokens (a switched row from q, the continuation's draft distribution)
        teacher_first, fed = T.next_logits, 0
        if pending is not None:
            S.feed(pending[:, None])
            fed = 1
        q, chunk = [], []
        for k in range(gamma):
            q.append(S.next_logits)
            u = noise[0].gather(1, index[:, k:k + 1])[:, 0]
            y = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, u)
            if adaswitch and speculative and switched.any() and cfg.continuation_draft == "teacher_warp":
                y = torch.where(switched, sample_from_logits(S.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, u), y)
            chunk.append(torch.where(live, y, pad))
            if k + 1 < gamma:
                S.feed(chunk[-1][:, None])
        chunk, q = torch.stack(chunk, 1), torch.stack(q, 1)
        fed += gamma - 1
        # 2. one teacher pass scores every drafted position: p[:, k] is the teacher's logits at draft k
        if pending is None:
            p = torch.cat([teacher_first[:, None], T.feed(chunk[:, :-1], all_logits=True)], 1) if gamma > 1 \
                else teacher_first[:, None]
        else:
            p = T.feed(torch.cat([pending[:, None], chunk[:, :-1]], 1), all_logits=True)
        # 3. per row: where its rule replaces a draft
        u_teacher = noise[1].gather(1, index)
        if method == "skd":
            replace = ~in_acceptance_set(p, chunk, cfg)
        else:
            d = token_divergence(q, p, cfg.divergence, cfg.jsd_beta, cfg.skew_alpha)
            fire, mean = out.fires_at(d, position, exploring[:, None] & in_range)
            replace = fire
            if speculative and switched.any():  # accept with probability min(1, p/q)
                q_warp = (cfg.teacher_temperature, cfg.teacher_top_p) if cfg.continuation_draft == "teacher_warp" \
                    else (cfg.student_temperature, cfg.student_top_p)
                p_probs, q_probs = warped_probs(p, cfg.teacher_temperature, cfg.teacher_top_p), warped_probs(q, *q_warp)
                ratio = p_probs.gather(-1, chunk[..., None])[..., 0] / q_probs.gather(-1, chunk[..., None])[..., 0]
                replace = torch.where(switched[:, None], u_teacher >= ratio, replace)
            elif switched.any():  # exact: a switched row takes the teacher's sample at its position
                replace = replace | switched[:, None]
        is_eos = chunk == cfg.eos_token_id if cfg.eos_token_id is not None else torch.zeros_like(replace)
        stop = replace | is_eos | ~in_range
        first = torch.where(stop.any(1), stop.long().argmax(1), gamma)  # the row's first stopping draft
        at = first.clamp(max=gamma - 1)
        inside = (first < gamma) & in_range[rows, at]
        replaced = live & inside & replace[rows, at]
        count = torch.where(live, first + inside.long(), 0)  # drafts kept, plus the replacing token or EOS
        if not (count[live] > 0).all():  # a round that moves no row would loop forever: fail loudly instead
            raise RuntimeError(f"sampler stalled: rows {(live & (count == 0)).nonzero().flatten().tolist()} wrote nothing")
        # 4. the replacing token: a teacher sample (SKD, the switch, exact continuation) or the residual
        y_t = sample_from_logits(p[rows, at], cfg.teacher_temperature, cfg.teacher_top_p, u_teacher[rows, at])
        if adaswitch and speculative and switched.any():
            residual = (p_probs[rows, at] - q_probs[rows, at]).clamp(min=0)
            y_t = torch.where(switched, sample_from_probs(residual, noise[2].gather(1, index)[rows, at]), y_t)
            drafted += torch.where(switched, count, 0)
            accepted += torch.where(switched, count - replaced.long(), 0)
        tokens = chunk.clone()
        tokens[rows, at] = torch.where(replaced, y_t, chunk[rows, at])
        if adaswitch:
            out.put(out.d, d, position, torch.where(exploring, count, 0))
            out.switch(exploring & replaced, position + at, d[rows, at], mean[rows, at])
        else:
            out.replaced += replaced.long()
        out.write(tokens, count, position, p)
        # 5. each row keeps its slots up to its last written token, which it feeds next round
        valid = (count - 1).clamp(min=0) + (0 if pending is None else 1)
        S.settle(fed, valid), T.settle(fed, valid)
        pending = torch.where(live, tokens[rows, (count - 1).clamp(min=0)], pad)
        # The next round's draft length from the rate at which drafts are kept (rows in exact lock-step
        # take the teacher's tokens whatever they drafted: they say nothing about it). Every row advances
        # by its own amount, so one row's rejection costs the others nothing.
        tested = live & ~(switched & (adaswitch and not speculative))
        kept, rejected = gather(torch.stack([torch.where(tested, count - replaced.long(), 0).sum(),
                                             (tested & replaced).sum()])).sum(0).tolist()
        kept_drafts, rejected_drafts = kept_drafts / 2 + kept, rejected_drafts / 2 + rejected
        if kept_drafts + rejected_drafts > 0:
            # at most twice the last draft: a rate from a round or two is a rough guess (a batch that kept
            # every early draft may switch the round after)
            draft = min(draft_length(kept_drafts / (kept_drafts + rejected_drafts), cfg.verify_cost, 2 * cfg.draft_chunk),
                        2 * gamma)
        position = position + count
    if adaswitch and speculative:
        out.continuation = (drafted, accepted)
    return out


def _teacher_finishes(T: Decoder, rows, out: Rollout, position, pending, cfg, noise, gather) -> None:
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
        y[rows] = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p,
                                     noise[1, rows, position[rows].clamp(max=n - 1)])
        logits = None
        if out.keep_logits:
            logits = T.next_logits.new_zeros(position.shape[0], 1, T.next_logits.shape[-1])
            logits[rows, 0] = T.next_logits
        count = live.long()
        out.write(y[:, None], count, position, logits)
        pending, position = torch.where(live, y, pad), position + count


@torch.no_grad()
def sample_targets(method: str, student, teacher, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   cfg: SamplerConfig = SamplerConfig(), generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None, gather=None) -> Targets:
    """Target sequences for a batch of left-padded prompts. `noise` [3, B, max_new_tokens] holds the
    uniform numbers of the student's (0) and the teacher's (1) draws and of speculative residual
    draws (2); by default they come from `generator` (CPU), so a seed fixes every draw whatever
    the device. `gather` keeps several processes calling forward together (module docstring);
    the token-by-token references run alone."""
    _check_name("sampler method", method, METHODS)
    batch, width = prompt_ids.shape
    if prompt_mask.shape != prompt_ids.shape:
        raise ConfigError(f"prompt mask {tuple(prompt_mask.shape)} and prompt ids {tuple(prompt_ids.shape)} differ")
    empty = (prompt_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(f"prompt rows {empty} are empty; every prompt needs at least one token")
    models = [m for m in (student, teacher) if m is not None]
    for model in models:
        context = getattr(model.config, "max_position_embeddings", None)
        if context and int(prompt_mask.sum(-1).max()) + cfg.max_new_tokens > context:
            raise ConfigError(f"prompt ({int(prompt_mask.sum(-1).max())} tokens) + max_new_tokens ({cfg.max_new_tokens}) "
                              f"exceeds the model's context of {context} tokens; shorten the prompt or max_new_tokens")
    if student is not None and teacher is not None:
        vocab = shared_vocab_size(student, teacher, cfg.vocab_size)
    else:
        vocab = cfg.vocab_size or models[0].config.vocab_size
    if noise is None:  # student draws, teacher draws (and acceptance tests), residual draws
        noise = torch.rand(3, batch, cfg.max_new_tokens, generator=generator)
    elif noise.shape[0] == 2:
        noise = torch.cat([noise, torch.rand(1, batch, cfg.max_new_tokens, generator=generator)])
    noise = noise.to(prompt_ids.device)
    keep = cfg.keep_teacher_logits
    modes = [(m, m.training) for m in models]
    for model in models:
        model.eval()  # no dropout while sampling
    try:
        if method in ("student", "teacher"):
            model = student if method == "student" else teacher
            out = _single(model, prompt_ids, prompt_mask, cfg, vocab, noise, teacher=method == "teacher",
                          gather=gather or _alone)
        else:
            if method in ("skd", "adaswitch"):
                out = _draft_verify(student, teacher, prompt_ids, prompt_mask, cfg, vocab, noise, keep, method,
                                    gather or _alone)
            else:
                run = {"skd_reference": _skd_reference, "adaswitch_reference": _adaswitch_reference}[method]
                out = run(student, teacher, prompt_ids, prompt_mask, cfg, vocab, noise, keep)
    finally:
        for model, training in modes:
            model.train(training)
    return out.targets(prompt_ids, prompt_mask, method)


if __name__ == "__main__":
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from adaswitch_lib.data import left_pad
    torch.manual_seed(0)
    make = lambda layers, hidden: Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers,
                                                               num_attention_heads=4, num_key_value_heads=2,
                                                               intermediate_size=2 * hidden, max_position_embeddings=256))
    teacher, student = make(2, 64), make(1, 32)
    ids, mask = left_pad([[5, 6, 7], [8, 9, 10, 11, 12]])
    cfg = SamplerConfig(max_new_tokens=24, adaswitch_k=1.2, adaswitch_window=4)
    for method in METHODS:
        t = sample_targets(method, student, teacher, ids, mask, cfg, torch.Generator().manual_seed(0))
        print(f"{method:>20}", t.responses[0].tolist(), {k: v.tolist() for k, v in t.stats.items()})
