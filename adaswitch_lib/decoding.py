"""Decoding building blocks shared by the samplers: settings, the target batch, warped sampling
distributions driven by given uniform numbers, a KV-cached decoder whose rows may advance by
different amounts, and the per-row bookkeeping of a rollout.

    python -m adaswitch_lib.sampler      # the samplers that use them, on tiny random models
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from adaswitch_lib.config import (
    CONTINUATIONS,
    DIVERGENCES,
    SKD_RULES,
    _check_name,
    _check_range,
    _field,
)
from adaswitch_lib.errors import ConfigError


@dataclass(frozen=True)
class SamplerConfig:
    """How targets are sampled: the models' sampling settings and each method's knobs."""

    max_new_tokens: int = _field(64, "response tokens to generate")
    student_temperature: float = _field(
        0.5, "the student's sampling temperature (paper §3.3); 0 = greedy"
    )
    student_top_p: float = _field(0.5, "the student's top-p")
    teacher_temperature: float = _field(0.2, "the teacher's sampling temperature; 0 = greedy")
    teacher_top_p: float = _field(0.5, "the teacher's top-p")
    adaswitch_k: float = _field(3.0, "K: switch when d_i > K * mean(d_{i-L} .. d_{i-1})")
    adaswitch_window: int = _field(
        10, "L: the window, also the shortest stretch the student writes"
    )
    adaswitch_floor: float = _field(0.0, "optional absolute floor on d_i; 0 = the paper's rule")
    divergence: str = _field("forward_kl", "D in the switch rule, at temperature 1")
    jsd_beta: float = _field(0.5, "the mixture weight of divergence='jsd' (TRL convention)")
    skew_alpha: float = _field(0.1, "alpha of skew_kl / skew_reverse_kl")
    skd_rule: str = _field(
        "top_k", "keep a student token inside the teacher's top-k or its nucleus"
    )
    skd_top_k: int = _field(25, "SKD's k")
    skd_top_p: float = _field(0.5, "SKD's p for skd_rule='top_p'")
    draft_chunk: int = _field(
        8, "gamma: the first draft length per teacher pass (then adapts, up to 2x)"
    )
    verify_cost: float = _field(
        3.0,
        "a teacher pass's fixed cost in draft steps (a student step plus the teacher's per-token "
        "share); with the rate drafts are kept it sets gamma: ~3 for the cpu pair on CPU, ~1 where "
        "both models' steps are launch-bound (GPU)",
    )
    teacher_continuation: str = _field(
        "exact",
        "a switched AdaSwitch row: 'exact' (the teacher token by token) or 'speculative' (student "
        "drafts, min(1, p/q) acceptance: the teacher's distribution, fewer teacher passes)",
    )
    continuation_draft: str = _field(
        "teacher_warp",
        "q of speculative continuation: the student at the teacher's or its own warp",
    )
    keep_teacher_logits: bool = _field(
        False, "return the teacher's response logits (SKD, AdaSwitch) for the loss"
    )
    eos_token_id: int | tuple | None = _field(
        None,
        "a row ends at this token, or at any of these (every EOS id of the model's generation "
        "config, e.g. Qwen-Instruct's <|im_end|> and <|endoftext|>); None: at max_new_tokens",
    )
    pad_token_id: int = _field(0, "what a finished row writes")
    vocab_size: int | None = _field(
        None, "the tokenizer's length; logits past it (padding rows) are dropped"
    )

    def __post_init__(self):
        _check_range("max_new_tokens", self.max_new_tokens, low=1)
        for eos in () if self.eos_token_id is None else _as_tuple(self.eos_token_id):
            _check_range("eos_token_id", eos, low=0)
        for name in ("student_temperature", "teacher_temperature", "adaswitch_floor"):
            _check_range(name, getattr(self, name), low=0)
        for name in ("student_top_p", "teacher_top_p", "skd_top_p"):
            _check_range(name, getattr(self, name), low=0, high=1, low_open=True)
        _check_range("adaswitch_k (K)", self.adaswitch_k, low=0, low_open=True)
        _check_range("adaswitch_window (L)", self.adaswitch_window, low=1)
        _check_range("skd_top_k", self.skd_top_k, low=1)
        _check_range("draft_chunk", self.draft_chunk, low=1)
        _check_range("verify_cost", self.verify_cost, low=0)
        _check_name("divergence", self.divergence, DIVERGENCES)
        _check_name("skd_rule", self.skd_rule, SKD_RULES)
        _check_name("teacher_continuation", self.teacher_continuation, CONTINUATIONS)
        _check_name("continuation_draft", self.continuation_draft, ("teacher_warp", "student_warp"))


def _as_tuple(ids) -> tuple:
    return (ids,) if isinstance(ids, int) else tuple(ids)


def is_eos(tokens: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """Which tokens end a row: any of the config's EOS ids (none when it has none)."""
    if cfg.eos_token_id is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    if isinstance(cfg.eos_token_id, int):
        return tokens == cfg.eos_token_id
    return torch.isin(tokens, torch.tensor(cfg.eos_token_id, device=tokens.device))


@dataclass
class Targets:
    sequences: torch.Tensor  # [B, P + N]: left-padded prompt, then the response (pad after EOS)
    attention_mask: torch.Tensor  # [B, P + N]
    response_mask: torch.Tensor  # [B, N]: 1 on response tokens up to and including EOS
    prompt_length: int  # P
    stats: dict = field(default_factory=dict)  # per-sequence tensors [B]
    teacher_logits: torch.Tensor | None = None  # [B, N, V] when kept

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_length :]

    def select(self, rows: torch.Tensor) -> "Targets":
        """These rows alone, without the columns of padding they all share (leading prompt padding,
        trailing response padding). Every kept position scores as before: causal attention never
        sees the trailing columns and the mask hides the leading ones."""
        attended = self.attention_mask[rows, : self.prompt_length].any(0)
        cut = int(attended.int().argmax()) if bool(attended.any()) else 0
        written = self.response_mask[rows].any(0).nonzero()
        width = int(written.max()) + 1 if len(written) else 1
        keep = slice(cut, self.prompt_length + width)
        batch = self.sequences.shape[0]
        stats = {
            k: v[rows]
            for k, v in self.stats.items()
            if torch.is_tensor(v) and v.dim() and len(v) == batch
        }
        logits = None if self.teacher_logits is None else self.teacher_logits[rows, :width]
        return Targets(
            self.sequences[rows, keep],
            self.attention_mask[rows, keep],
            self.response_mask[rows, :width],
            self.prompt_length - cut,
            stats,
            logits,
        )


def length_groups(targets: Targets, groups: int) -> list[Targets]:
    """The batch as `groups` parts of rows of similar length (prompt + response), each trimmed of
    the padding its rows share. A loss summed over the parts with the whole batch's normaliser
    (`position_weights(total_rows=, total_tokens=)`) equals the whole batch's up to rounding, while
    less padding is computed (docs/performance.md). groups <= 1: the batch itself."""
    rows = targets.sequences.shape[0]
    if groups <= 1 or rows < 2:
        return [targets]
    lengths = targets.attention_mask[:, : targets.prompt_length].sum(
        -1
    ) + targets.response_mask.sum(-1)
    order = torch.argsort(lengths, stable=True)
    return [targets.select(part) for part in order.chunk(min(groups, rows))]


def shared_vocab_size(student, teacher, tokenizer_size: int | None = None) -> int:
    """The vocabulary both models score. Embedding matrices may differ by padding rows (Qwen2.5
    0.5B-3B: 151,936; 7B+: 152,064): then logits are sliced to the tokenizer's length."""
    s, t = student.config.vocab_size, teacher.config.vocab_size
    if tokenizer_size is None and s != t:
        raise ConfigError(
            f"teacher vocabulary ({t}) and student vocabulary ({s}) differ; pass the shared "
            f"tokenizer's length if they differ only by padding rows"
        )
    size = tokenizer_size or s
    if size > min(s, t):
        raise ConfigError(
            f"teacher vocabulary ({t}) and student vocabulary ({s}) cannot both hold the "
            f"tokenizer's {size} tokens: the models do not share a vocabulary"
        )
    return size


def _sample(
    probs: torch.Tensor, uniform: torch.Tensor, order: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse CDF: the token whose cumulative (unnormalised) probability first reaches u *
    total."""
    cdf = probs.cumsum(-1)
    index = torch.searchsorted(cdf, (uniform.to(cdf) * cdf[..., -1]).unsqueeze(-1)).clamp(
        max=cdf.shape[-1] - 1
    )
    return (index if order is None else order.gather(-1, index)).squeeze(-1)


def top_p_nucleus(probs: torch.Tensor, top_p: float, first: int = 32):
    """The nucleus over probabilities [..., V]: the top-k probabilities in descending order, their
    token ids and which of them are inside. k starts small and doubles until the top k hold top_p of
    the mass in every row (then the nucleus is inside them, as over a full sort): a top-k costs a
    fraction of a full sort, and warped nuclei are small."""
    k = min(first, probs.shape[-1])
    while True:
        ranked, order = probs.topk(k, dim=-1)
        mass = ranked.cumsum(-1)
        if k == probs.shape[-1] or bool((mass[..., -1] >= top_p).all()):
            # inside: the smallest prefix whose mass reaches top_p (at least one token)
            return ranked, order, (mass - ranked) < top_p
        k = min(2 * k, probs.shape[-1])


def sample_from_logits(
    logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor
) -> torch.Tensor:
    """One token per row by inverse CDF over the temperature/top-p distribution, driven by the given
    uniform numbers [B] (so two samplers given the same numbers draw the same tokens). T=0:
    greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    # keep the smallest prefix (by probability) whose mass reaches top_p, at least one token
    if top_p < 1:
        ranked, order, inside = top_p_nucleus(probs, top_p)
        probs = ranked * inside
    return _sample(probs, uniform, order)


def warped_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution `sample_from_logits` draws from, normalised, in vocabulary order [...,
    V]."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        ranked, order, inside = top_p_nucleus(probs, top_p)
        probs = torch.zeros_like(probs).scatter(-1, order, ranked * inside)
    return probs / probs.sum(-1, keepdim=True)


def sample_from_probs(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row from (possibly unnormalised) probabilities [..., V] by inverse CDF."""
    return _sample(probs, uniform)


def cache_argument(model) -> str:
    """The name a model's forward takes its KV cache by: `cache` from transformers 5 on
    (`past_key_values` is deprecated there), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class Decoder:
    """One model's KV cache over a left-padded batch. Position ids come from the attention mask (a
    hand-written loop must supply them, `generate` would derive them itself). Rows may advance by
    different amounts: a round feeds the same number of slots to every row, then `settle` keeps
    each row's first `valid` slots and masks the rest out (the cache keeps them; attention skips
    them)."""

    def __init__(self, model, ids, mask, vocab: int, max_new_tokens: int):
        self.model, self.vocab = model, vocab
        self.cache = DynamicCache()
        self.cache_kwargs = {cache_argument(model): self.cache}
        # one mask with room for the new slots, sliced per step (no concatenation per token)
        self.mask = torch.cat([mask, mask.new_ones(mask.shape[0], 2 * max_new_tokens + 16)], dim=1)
        self.width = mask.shape[1]
        self.next_position = mask.sum(-1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **self.cache_kwargs,
        )
        self.next_logits = out.logits[:, -1, :vocab]

    def feed(self, tokens: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        """Append tokens [B, k]; return their logits [B, k, V] (only the last unless all_logits)."""
        k = tokens.shape[1]
        if self.width + k > self.mask.shape[1]:  # wasted draft slots used the room up: grow it
            self.mask = torch.cat(
                [self.mask, self.mask.new_ones(self.mask.shape[0], self.mask.shape[1])], dim=1
            )
        self.mask[:, self.width : self.width + k] = 1
        self.width += k
        positions = self.next_position[:, None] + torch.arange(k, device=tokens.device)
        out = self.model(
            input_ids=tokens,
            attention_mask=self.mask[:, : self.width],
            position_ids=positions,
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
            **self.cache_kwargs,
        )
        self.next_position = self.next_position + k
        logits = out.logits[..., : self.vocab]
        self.next_logits = logits[:, -1]
        return logits

    def keep_rows(self, index: torch.Tensor) -> None:
        """Hold only the rows `index` (of those held now): a finished row's steps cost compute and
        write nothing."""
        self.cache.batch_select_indices(index)
        self.mask, self.next_position, self.next_logits = (
            self.mask[index],
            self.next_position[index],
            self.next_logits[index],
        )

    def settle(self, fed: int, valid: torch.Tensor) -> None:
        """Of the last `fed` slots keep each row's first valid[b]; the others no longer exist."""
        if fed:
            keep = torch.arange(fed, device=valid.device) < valid[:, None]
            self.mask[:, self.width - fed : self.width] = keep.to(self.mask.dtype)
            self.next_position = self.next_position - fed + valid


class Rollout:
    """Per-row bookkeeping shared by the samplers: tokens, finished rows, divergences, switches."""

    def __init__(self, batch: int, cfg: SamplerConfig, device, keep_logits_vocab: int | None):
        n = cfg.max_new_tokens
        self.cfg, self.length = cfg, 0
        self.tokens = torch.full((batch, n), cfg.pad_token_id, dtype=torch.long, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.d = torch.full((batch, n), float("nan"), device=device)
        # 0-based; i = switch_at + 1
        self.switch_at = torch.full((batch,), -1, dtype=torch.long, device=device)
        self.d_at_switch = torch.full((batch,), float("nan"), device=device)
        self.mean_at_switch = torch.full((batch,), float("nan"), device=device)
        self.replaced = torch.zeros(batch, dtype=torch.long, device=device)
        self.keep_logits = bool(keep_logits_vocab)
        self.teacher_logits = None  # [B, N, V] in the model's dtype, allocated at the first write
        # speculative continuation: (drafts verified, drafts accepted) per row
        self.continuation = None

    def switch(self, rows: torch.Tensor, j: int, d_j: torch.Tensor, mean_j: torch.Tensor) -> None:
        self.switch_at = torch.where(rows, j, self.switch_at)
        self.d_at_switch = torch.where(rows, d_j, self.d_at_switch)
        self.mean_at_switch = torch.where(rows, mean_j, self.mean_at_switch)

    def put(
        self,
        buffer: torch.Tensor,
        values: torch.Tensor,
        position: torch.Tensor,
        count: torch.Tensor,
    ) -> None:
        """buffer[b, position[b] + k] = values[b, k] for k < count[b] (in place; other cells
        untouched)."""
        g = values.shape[1]
        k = torch.arange(g, device=values.device)
        written = k < count[:, None]
        # unwritten -> scratch columns
        index = torch.where(written, position[:, None] + k, buffer.shape[1] + k)
        wide = torch.cat([buffer, buffer.new_zeros(buffer.shape[0], g)], 1).scatter(
            1, index, values.to(buffer.dtype)
        )
        buffer.copy_(wide[:, : buffer.shape[1]])

    def write(
        self,
        tokens: torch.Tensor,
        count: torch.Tensor,
        position: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> None:
        """Row b writes tokens[b, :count[b]] at response positions position[b]...; it finishes at
        EOS."""
        self.put(self.tokens, tokens, position, count)
        written = torch.arange(tokens.shape[1], device=tokens.device) < count[:, None]
        if self.keep_logits and teacher_logits is not None:
            if self.teacher_logits is None:
                self.teacher_logits = teacher_logits.new_zeros(
                    tokens.shape[0], self.cfg.max_new_tokens, teacher_logits.shape[-1]
                )
            rows, k = written.nonzero(as_tuple=True)
            self.teacher_logits[rows, position[rows] + k] = teacher_logits[rows, k]
        self.finished |= (written & is_eos(tokens, self.cfg)).any(-1)
        self.length = max(self.length, int((position + count).max()))

    def append(
        self, y: torch.Tensor, j: int, teacher_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Write position j (pad for finished rows); return the tokens written."""
        y = torch.where(self.finished, self.cfg.pad_token_id, y)
        self.tokens[:, j] = y
        if self.keep_logits and teacher_logits is not None:
            if self.teacher_logits is None:
                self.teacher_logits = teacher_logits.new_zeros(
                    y.shape[0], self.cfg.max_new_tokens, teacher_logits.shape[-1]
                )
            self.teacher_logits[:, j] = teacher_logits
        self.finished = self.finished | is_eos(y, self.cfg)
        self.length = j + 1
        return y

    def targets(self, ids, mask, method: str) -> Targets:
        n = self.length
        tokens = self.tokens[:, :n]
        response_mask = torch.ones_like(tokens)
        if self.cfg.eos_token_id is not None:  # 1 up to and including the first EOS
            eos = is_eos(tokens, self.cfg).long()
            response_mask = ((eos.cumsum(-1) - eos) == 0).long()
        lengths = response_mask.sum(-1)
        switched = self.switch_at >= 0
        stats = dict(response_length=lengths)
        if method.startswith("adaswitch"):
            student_tokens = torch.where(switched, self.switch_at, lengths)
            stats.update(
                switched=switched,
                switch_index=torch.where(switched, self.switch_at + 1, -1),
                relative_switch_position=torch.where(
                    switched, self.switch_at / lengths.clamp(min=1), float("nan")
                ),
                student_token_share=student_tokens / lengths.clamp(min=1),
                teacher_tokens=lengths - student_tokens,
                d_at_switch=self.d_at_switch,
                window_mean_at_switch=self.mean_at_switch,
            )
        if self.continuation is not None:
            stats.update(
                continuation_drafted=self.continuation[0],
                continuation_accepted=self.continuation[1],
            )
        if method.startswith("skd"):
            stats.update(
                replaced_tokens=self.replaced, replaced_rate=self.replaced / lengths.clamp(min=1)
            )
        logits = self.teacher_logits[:, :n] if self.teacher_logits is not None else None
        return Targets(
            torch.cat([ids, tokens], 1),
            torch.cat([mask, response_mask], 1),
            response_mask,
            ids.shape[1],
            stats,
            logits,
        )
