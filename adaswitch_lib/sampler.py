"""Target sequences for distillation: a batch of prompts in, sequences + per-sequence stats out.

Methods: `student` (on-policy), `teacher` (SeqKD), `skd` (speculative KD: the teacher replaces
student tokens outside its top-k / top-p set), `adaswitch` (Algorithm 1, fast) and
`adaswitch_reference` (Algorithm 1 token by token, for tests and benchmarks).

AdaSwitch's switch at position i depends only on y_<i, and before it every token is a student
sample. So the fast sampler lets the student draft a chunk of tokens, verifies the chunk with one
teacher pass (every d_i at once), and on a switch rewinds both KV caches to the switch point,
where the teacher samples. While some rows are switched and others not, both models step together
(as Algorithm 1 reads); once every live row is switched, only the teacher runs. Sampling draws
from per-row, per-position uniform numbers, so with the same numbers the fast and the reference
samplers produce the same tokens.

    python -m adaswitch_lib.sampler      # a demo on tiny random models
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from adaswitch_lib.config import SKD_RULES, _check_name, _check_range
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.losses import DIVERGENCES, token_divergence

METHODS = ("student", "teacher", "skd", "adaswitch", "adaswitch_reference")


@dataclass(frozen=True)
class SamplerConfig:
    max_new_tokens: int = 64
    student_temperature: float = 0.5   # paper §3.3; 0 = greedy
    student_top_p: float = 0.5
    teacher_temperature: float = 0.2
    teacher_top_p: float = 0.5
    adaswitch_k: float = 3.0           # K: switch when d_i > K * mean(d_{i-L} .. d_{i-1})
    adaswitch_window: int = 10         # L
    adaswitch_floor: float = 0.0       # optional absolute floor on d_i; 0 = the paper's rule
    divergence: str = "forward_kl"     # D in the switch rule, at temperature 1
    jsd_beta: float = 0.5
    skew_alpha: float = 0.1
    skd_rule: str = "top_k"            # keep a student token inside the teacher's top-k ("top_k") or nucleus ("top_p")
    skd_top_k: int = 25
    skd_top_p: float = 0.5
    draft_chunk: int = 16              # AdaSwitch: student tokens drafted per teacher verification pass
    keep_teacher_logits: bool = False  # return the teacher's response logits (skd/adaswitch) for the loss
    eos_token_id: int | None = None
    pad_token_id: int = 0
    vocab_size: int | None = None      # the tokenizer's length; logits past it (padding rows) are dropped

    def __post_init__(self):
        _check_range("max_new_tokens", self.max_new_tokens, low=1)
        for name in ("student_temperature", "teacher_temperature", "adaswitch_floor"):
            _check_range(name, getattr(self, name), low=0)
        for name in ("student_top_p", "teacher_top_p", "skd_top_p"):
            _check_range(name, getattr(self, name), low=0, high=1, low_open=True)
        _check_range("adaswitch_k (K)", self.adaswitch_k, low=0, low_open=True)
        _check_range("adaswitch_window (L)", self.adaswitch_window, low=1)
        _check_range("skd_top_k", self.skd_top_k, low=1)
        _check_range("draft_chunk", self.draft_chunk, low=1)
        _check_name("divergence", self.divergence, DIVERGENCES)
        _check_name("skd_rule", self.skd_rule, SKD_RULES)


@dataclass
class Targets:
    sequences: torch.Tensor        # [B, P + N]: left-padded prompt, then the response (pad after EOS)
    attention_mask: torch.Tensor   # [B, P + N]
    response_mask: torch.Tensor    # [B, N]: 1 on response tokens up to and including EOS
    prompt_length: int             # P
    stats: dict = field(default_factory=dict)  # per-sequence tensors [B]
    teacher_logits: torch.Tensor | None = None  # [B, N, V] when kept

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length:]


def shared_vocab_size(student, teacher, tokenizer_size: int | None = None) -> int:
    """The vocabulary both models score. Embedding matrices may differ by padding rows (Qwen2.5
    0.5B-3B: 151,936; 7B+: 152,064): then logits are sliced to the tokenizer's length."""
    s, t = student.config.vocab_size, teacher.config.vocab_size
    if tokenizer_size is None and s != t:
        raise ConfigError(f"teacher vocabulary ({t}) and student vocabulary ({s}) differ; pass the shared "
                          f"tokenizer's length if they differ only by padding rows")
    size = tokenizer_size or s
    if size > min(s, t):
        raise ConfigError(f"teacher vocabulary ({t}) and student vocabulary ({s}) cannot both hold the "
                          f"tokenizer's {size} tokens: the models do not share a vocabulary")
    return size


def sample_from_logits(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse CDF over the temperature/top-p distribution, driven by the given
    uniform numbers [B] (so two samplers given the same numbers draw the same tokens). T=0: greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1:  # keep the smallest prefix (by probability) whose mass reaches top_p, at least one token
        probs, order = probs.sort(dim=-1, descending=True)
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    cdf = probs.cumsum(-1)
    index = torch.searchsorted(cdf, (uniform.to(cdf) * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
    return (index if order is None else order.gather(-1, index)).squeeze(-1)


def _in_acceptance_set(teacher_logits, tokens, cfg: SamplerConfig) -> torch.Tensor:
    """SKD: is each student token inside the teacher's top-k, or its top-p nucleus (at the teacher's
    sampling temperature, as the official SKD code warps before testing)?"""
    if cfg.skd_rule == "top_k":
        k = min(cfg.skd_top_k, teacher_logits.shape[-1])
        return (teacher_logits.topk(k, dim=-1).indices == tokens[:, None]).any(-1)
    probs = torch.softmax(teacher_logits.float() / (cfg.teacher_temperature or 1.0), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    inside = (sorted_probs.cumsum(-1) - sorted_probs) < cfg.skd_top_p
    return (inside & (order == tokens[:, None])).any(-1)


class _Decoder:
    """One model's KV cache over a left-padded batch; position ids come from the attention mask
    (a hand-written loop must supply them, `generate` would derive them itself)."""

    def __init__(self, model, ids, mask, vocab: int, max_new_tokens: int):
        self.model, self.vocab, self.cache = model, vocab, DynamicCache()
        # one mask for prompt + every possible new token, sliced per step (no concatenation per token)
        self.full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], max_new_tokens)], dim=1)
        self.width = mask.shape[1]
        self.next_position = mask.sum(-1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=self.cache,
                    use_cache=True, logits_to_keep=1)
        self.next_logits = out.logits[:, -1, :vocab]

    def feed(self, tokens: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        """Append tokens [B, k]; return their logits [B, k, V] (only the last unless all_logits)."""
        k = tokens.shape[1]
        self.width += k
        positions = self.next_position[:, None] + torch.arange(k, device=tokens.device)
        out = self.model(input_ids=tokens, attention_mask=self.full_mask[:, : self.width], position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=0 if all_logits else 1)
        self.next_position = self.next_position + k
        logits = out.logits[..., : self.vocab]
        self.next_logits = logits[:, -1]
        return logits

    def rewind(self, k: int) -> None:
        """Forget the last k fed tokens (next_logits is stale until the next feed)."""
        if k:
            self.cache.crop(-k)
            self.width, self.next_position = self.width - k, self.next_position - k


class _Rollout:
    """Per-row bookkeeping shared by the samplers: tokens, finished rows, divergences, switches."""

    def __init__(self, batch: int, cfg: SamplerConfig, device, keep_logits_vocab: int | None):
        n = cfg.max_new_tokens
        self.cfg, self.length = cfg, 0
        self.tokens = torch.full((batch, n), cfg.pad_token_id, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.d = torch.full((batch, n), float("nan"), device=device)
        self.switch_at = torch.full((batch,), -1, dtype=torch.long, device=device)  # 0-based; i = switch_at + 1
        self.d_at_switch = torch.full((batch,), float("nan"), device=device)
        self.mean_at_switch = torch.full((batch,), float("nan"), device=device)
        self.replaced = torch.zeros(batch, dtype=torch.long, device=device)
        self.keep_logits = bool(keep_logits_vocab)
        self.teacher_logits = None  # [B, N, V] in the model's dtype, allocated at the first write

    def window_mean(self, d_new: torch.Tensor, start: int) -> torch.Tensor:
        """mean(d_{j-L} .. d_{j-1}) for positions j = start .. start+g-1 given their d [B, g]."""
        window = self.cfg.adaswitch_window
        history = torch.cat([self.d[:, :start], d_new], dim=1).nan_to_num(0.0)
        sums = torch.nn.functional.pad(history.cumsum(-1), (1, 0))
        j = torch.arange(start, start + d_new.shape[1], device=d_new.device)
        return (sums[:, j] - sums[:, (j - window).clamp(min=0)]) / window

    def fires(self, d_new: torch.Tensor, start: int, live: torch.Tensor) -> torch.Tensor:
        """The switch rule for positions start.. [B, g]: i > L, d_i > K * window mean (and > floor)."""
        cfg = self.cfg
        mean = self.window_mean(d_new, start)
        j = torch.arange(start, start + d_new.shape[1], device=d_new.device)
        return live & (j >= cfg.adaswitch_window) & (d_new > cfg.adaswitch_k * mean) & (d_new > cfg.adaswitch_floor)

    def switch(self, rows: torch.Tensor, j: int, d_j: torch.Tensor, mean_j: torch.Tensor) -> None:
        self.switch_at = torch.where(rows, j, self.switch_at)
        self.d_at_switch = torch.where(rows, d_j, self.d_at_switch)
        self.mean_at_switch = torch.where(rows, mean_j, self.mean_at_switch)

    def append(self, y: torch.Tensor, j: int, teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Write position j (pad for finished rows); return the tokens written."""
        y = torch.where(self.finished, self.cfg.pad_token_id, y)
        self.tokens[:, j] = y
        if self.keep_logits and teacher_logits is not None:
            if self.teacher_logits is None:
                self.teacher_logits = teacher_logits.new_zeros(y.shape[0], self.cfg.max_new_tokens, teacher_logits.shape[-1])
            self.teacher_logits[:, j] = teacher_logits
        if self.cfg.eos_token_id is not None:
            self.finished = self.finished | (y == self.cfg.eos_token_id)
        self.length = j + 1
        return y

    def targets(self, ids, mask, method: str) -> Targets:
        n = self.length
        tokens = self.tokens[:, :n]
        response_mask = torch.ones_like(tokens)
        if self.cfg.eos_token_id is not None:  # 1 up to and including the first EOS
            is_eos = (tokens == self.cfg.eos_token_id).long()
            response_mask = ((is_eos.cumsum(-1) - is_eos) == 0).long()
        lengths = response_mask.sum(-1)
        switched = self.switch_at >= 0
        stats = dict(response_length=lengths)
        if method.startswith("adaswitch"):
            student_tokens = torch.where(switched, self.switch_at, lengths)
            stats.update(switched=switched, switch_index=torch.where(switched, self.switch_at + 1, -1),
                         relative_switch_position=torch.where(switched, self.switch_at / lengths.clamp(min=1), float("nan")),
                         student_token_share=student_tokens / lengths.clamp(min=1),
                         teacher_tokens=lengths - student_tokens, d_at_switch=self.d_at_switch,
                         window_mean_at_switch=self.mean_at_switch)
        if method == "skd":
            stats.update(replaced_tokens=self.replaced, replaced_rate=self.replaced / lengths.clamp(min=1))
        logits = self.teacher_logits[:, :n] if self.teacher_logits is not None else None
        return Targets(torch.cat([ids, tokens], 1), torch.cat([mask, response_mask], 1), response_mask,
                       ids.shape[1], stats, logits)


# ---------------------------------------------------------------------------- the samplers
def _d(cfg: SamplerConfig, student_logits, teacher_logits) -> torch.Tensor:
    return token_divergence(student_logits, teacher_logits, cfg.divergence, cfg.jsd_beta, cfg.skew_alpha)


def _single(model, ids, mask, cfg, vocab, noise, teacher: bool) -> _Rollout:
    """Plain sampling from one model (student: on-policy; teacher: SeqKD)."""
    temperature, top_p = (cfg.teacher_temperature, cfg.teacher_top_p) if teacher else (cfg.student_temperature, cfg.student_top_p)
    dec, out = _Decoder(model, ids, mask, vocab, cfg.max_new_tokens), _Rollout(ids.shape[0], cfg, ids.device, None)
    for j in range(cfg.max_new_tokens):
        y = out.append(sample_from_logits(dec.next_logits, temperature, top_p, noise[int(teacher), :, j]), j)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        dec.feed(y[:, None])
    return out


def _skd(student, teacher, ids, mask, cfg, vocab, noise, keep) -> _Rollout:
    """Both models step together; a student token outside the teacher's set is replaced by a teacher
    sample. Every position is checked (drafting ahead rarely pays: rejections are frequent)."""
    S, T = _Decoder(student, ids, mask, vocab, cfg.max_new_tokens), _Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens)
    out = _Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        y_s = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j])
        y_t = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j])
        accept = _in_acceptance_set(T.next_logits, y_s, cfg)
        out.replaced += (~accept & ~out.finished).long()
        y = out.append(torch.where(accept, y_s, y_t), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out


def _adaswitch_reference(student, teacher, ids, mask, cfg, vocab, noise, keep) -> _Rollout:
    """Algorithm 1 as it reads: two KV caches, one token at a time."""
    S, T = _Decoder(student, ids, mask, vocab, cfg.max_new_tokens), _Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens)
    out = _Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    for j in range(cfg.max_new_tokens):
        student_rows = (out.switch_at < 0) & ~out.finished
        d_j = _d(cfg, S.next_logits, T.next_logits)
        fire = out.fires(d_j[:, None], j, student_rows[:, None])[:, 0]
        out.switch(fire, j, d_j, out.window_mean(d_j[:, None], j)[:, 0])
        out.d[:, j] = torch.where(student_rows, d_j, float("nan"))
        y_s = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j])
        y_t = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j])
        y = out.append(torch.where(out.switch_at >= 0, y_t, y_s), j, T.next_logits)
        if out.finished.all() or j + 1 == cfg.max_new_tokens:
            break
        S.feed(y[:, None]), T.feed(y[:, None])
    return out


def _adaswitch(student, teacher, ids, mask, cfg, vocab, noise, keep) -> _Rollout:
    """Algorithm 1, fast: draft a chunk -> verify it in one teacher pass -> hand over at the switch."""
    S, T = _Decoder(student, ids, mask, vocab, cfg.max_new_tokens), _Decoder(teacher, ids, mask, vocab, cfg.max_new_tokens)
    out = _Rollout(ids.shape[0], cfg, ids.device, vocab if keep else None)
    n, j = cfg.max_new_tokens, 0
    while j < n and not out.finished.all():
        student_rows = (out.switch_at < 0) & ~out.finished
        if not ((out.switch_at >= 0) & ~out.finished).any():
            # Every live row is the student's: draft up to `draft_chunk` tokens, then one teacher pass.
            drafted, student_logits, finished = [], [], out.finished.clone()
            for k in range(min(cfg.draft_chunk, n - j)):
                student_logits.append(S.next_logits)
                y = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j + k])
                y = torch.where(finished, cfg.pad_token_id, y)
                drafted.append(y)
                if cfg.eos_token_id is not None:
                    finished = finished | (y == cfg.eos_token_id)
                if finished.all() or j + k + 1 == n:
                    break
                S.feed(y[:, None])
            g, chunk = len(drafted), torch.stack(drafted, 1)
            s_fed = g if j + g < n and not finished.all() else g - 1
            teacher_logits = torch.cat([T.next_logits[:, None], T.feed(chunk, all_logits=True)[:, :-1]], 1)
            d_chunk = _d(cfg, torch.stack(student_logits, 1), teacher_logits)
            # a row is live at chunk position k if it had not emitted EOS before k
            was_finished = torch.cat([out.finished[:, None], (chunk == cfg.eos_token_id)[:, :-1]], 1).cummax(1).values \
                if cfg.eos_token_id is not None else out.finished[:, None].expand(-1, g)
            fire = out.fires(d_chunk, j, student_rows[:, None] & ~was_finished)
            stop = int(fire.any(0).long().argmax()) if fire.any() else g  # first chunk position where a row switches
            for k in range(min(stop + 1, g)):
                out.d[:, j + k] = torch.where(~was_finished[:, k], d_chunk[:, k], float("nan"))
                y = chunk[:, k]
                if k == stop:
                    rows = fire[:, k]
                    out.switch(rows, j + k, d_chunk[:, k], out.window_mean(d_chunk[:, : k + 1], j)[:, k])
                    y_t = sample_from_logits(teacher_logits[:, k], cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j + k])
                    y = torch.where(rows, y_t, y)
                y = out.append(y, j + k, teacher_logits[:, k])
            if stop < g:  # rewind both caches to the switch point, then feed the final token there
                S.rewind(s_fed - stop), T.rewind(g - stop)
                if j + stop + 1 < n and not out.finished.all():
                    S.feed(y[:, None]), T.feed(y[:, None])
            j += min(stop + 1, g)
            continue
        # Some live rows are the teacher's: step one token at a time (both models while any row is
        # still the student's, the teacher alone after that).
        y_t = sample_from_logits(T.next_logits, cfg.teacher_temperature, cfg.teacher_top_p, noise[1, :, j])
        y = y_t
        if student_rows.any():
            d_j = _d(cfg, S.next_logits, T.next_logits)
            fire = out.fires(d_j[:, None], j, student_rows[:, None])[:, 0]
            out.switch(fire, j, d_j, out.window_mean(d_j[:, None], j)[:, 0])
            out.d[:, j] = torch.where(student_rows, d_j, float("nan"))
            y_s = sample_from_logits(S.next_logits, cfg.student_temperature, cfg.student_top_p, noise[0, :, j])
            y = torch.where(out.switch_at >= 0, y_t, y_s)
        y = out.append(y, j, T.next_logits)
        j += 1
        if j < n and not out.finished.all():
            if student_rows.any():
                S.feed(y[:, None])
            T.feed(y[:, None])
    return out


@torch.no_grad()
def sample_targets(method: str, student, teacher, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   cfg: SamplerConfig = SamplerConfig(), generator: torch.Generator | None = None,
                   noise: torch.Tensor | None = None) -> Targets:
    """Target sequences for a batch of left-padded prompts. `noise` [2, B, max_new_tokens] holds the
    uniform numbers of the student's (0) and the teacher's (1) draws; by default they come from
    `generator` (CPU), so a seed fixes every draw whatever the device."""
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
    if noise is None:
        noise = torch.rand(2, batch, cfg.max_new_tokens, generator=generator)
    noise = noise.to(prompt_ids.device)
    keep = cfg.keep_teacher_logits
    modes = [(m, m.training) for m in models]
    for model in models:
        model.eval()  # no dropout while sampling
    try:
        if method in ("student", "teacher"):
            model = student if method == "student" else teacher
            out = _single(model, prompt_ids, prompt_mask, cfg, vocab, noise, teacher=method == "teacher")
        else:
            run = {"skd": _skd, "adaswitch": _adaswitch, "adaswitch_reference": _adaswitch_reference}[method]
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
