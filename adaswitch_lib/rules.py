"""The per-token rules that decide who writes a token, as the papers state them.

- AdaSwitch's switch rule (Algorithm 1): at response position i > L the teacher takes over when
  d_i = D(p_T || p_S) exceeds K times the mean of the previous L divergences.
- SKD's acceptance set: a student token is kept when it lies in the teacher's top-k (the SKD
  paper) or inside its top-p nucleus at the teacher's temperature (the official SKD code).
- Speculative sampling's acceptance (Leviathan et al., 2023): a drafted token y ~ q is kept with
  probability min(1, p(y) / q(y)); the first rejected one is replaced by a sample of the
  normalised residual max(0, p - q). The tokens kept are then exactly samples of p.

The samplers (`sampler.py`) apply these to whole batches, every row at its own position.

    python -m adaswitch_lib.sampler      # the samplers that use them, on tiny random models
"""

from __future__ import annotations

import torch

from adaswitch_lib.decoding import SamplerConfig, top_p_nucleus


def switch_fires(
    history: torch.Tensor,
    d_new: torch.Tensor,
    position: torch.Tensor,
    rows: torch.Tensor,
    cfg: SamplerConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The switch rule where each row b is at its own response position: `d_new` [B, g] holds d at
    positions position[b] + j, `history` [B, N] the divergences before them (NaN where none).
    Returns (fire [B, g], the window mean [B, g]): fire where the row is in `rows`, the position is
    past the window L, d > K * mean of the previous L values, and d > `adaswitch_floor` (0: the
    paper's rule)."""
    k, window, floor = cfg.adaswitch_k, cfg.adaswitch_window, cfg.adaswitch_floor
    g = d_new.shape[1]
    index = position[:, None] + torch.arange(g, device=d_new.device)
    d = torch.nn.functional.pad(history.nan_to_num(0.0), (0, g)).scatter(1, index, d_new)
    sums = torch.nn.functional.pad(d.cumsum(-1), (1, 0))
    mean = (sums.gather(1, index) - sums.gather(1, (index - window).clamp(min=0))) / window
    fire = rows & (index >= window) & (d_new > k * mean) & (d_new > floor)
    return fire, mean


def in_acceptance_set(teacher_logits, tokens, cfg: SamplerConfig) -> torch.Tensor:
    """SKD: is each student token inside the teacher's top-k, or its top-p nucleus (at the teacher's
    sampling temperature, as the official SKD code warps before testing)? Shapes [...] and [...,
    V]."""
    if cfg.skd_rule == "top_k":
        k = min(cfg.skd_top_k, teacher_logits.shape[-1])
        return (teacher_logits.topk(k, dim=-1).indices == tokens[..., None]).any(-1)
    probs = torch.softmax(teacher_logits.float() / (cfg.teacher_temperature or 1.0), dim=-1)
    _, order, inside = top_p_nucleus(probs, cfg.skd_top_p)
    return (inside & (order == tokens[..., None])).any(-1)


def speculative_rejects(
    p_probs: torch.Tensor, q_probs: torch.Tensor, tokens: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    """Speculative sampling: is each drafted token [...] rejected? It is kept with probability
    min(1, p(y) / q(y)), tested against the given uniform numbers [...]."""
    ratio = (
        p_probs.gather(-1, tokens[..., None])[..., 0]
        / q_probs.gather(-1, tokens[..., None])[..., 0]
    )
    return uniform >= ratio


def residual(p_probs: torch.Tensor, q_probs: torch.Tensor) -> torch.Tensor:
    """The (unnormalised) distribution a rejected draft is resampled from: max(0, p - q)."""
    return (p_probs - q_probs).clamp(min=0)
