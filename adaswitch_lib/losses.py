"""Token-level divergences between teacher and student, as pure functions of tensors.

Conventions: divergences at temperature 1 on the full vocabulary unless a temperature is given;
generalised JSD(beta) mixes M = beta * p_T + (1 - beta) * p_S, so beta = 0 is forward KL and beta =
1 reverse KL (the convention of trl's `generalized_jsd_loss`); prompt tokens masked, EOS kept; the
normaliser is counted after generation.

`distill_loss` is chunked over positions: it upcasts at most one [batch, chunk, vocab] block per
model to fp32 at a time and computes that chunk's gradient on the spot, so a 151,936-token
vocabulary at batch 4 x 512 positions fits in a laptop's memory.

    python -m adaswitch_lib.losses          # prints each divergence on a hand-made pair
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# fp32 logits a scoring pass (no gradients) holds at once: at a Hub vocabulary (151,936) a batch of
# long responses would be many GiB, so validation scores rows and positions in pieces of this size
LOGITS_BUDGET_BYTES = 2**29


def positions_within(vocab: int, budget_bytes: int | None = None) -> int:
    """How many positions of fp32 logits over `vocab` fit the budget (default:
    LOGITS_BUDGET_BYTES), at least one."""
    return max(1, (budget_bytes or LOGITS_BUDGET_BYTES) // (4 * vocab))


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "skew_reverse_kl")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis; 0 * log 0 counts as 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight * a + (1 - weight) * b) from log a and log b."""
    if weight == 0:
        return log_b
    if weight == 1:
        return log_a
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))


def divergence_from_logprobs(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    alpha: float = 0.1,
) -> torch.Tensor:
    """D(p_T || p_S) per position from log-probabilities [..., vocab] -> [...]."""
    s, t = student_logp, teacher_logp
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        return _kl(t, s)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        return _kl(s, t)
    if divergence == "jsd":  # beta KL(T||M) + (1-beta) KL(S||M), M = beta p_T + (1-beta) p_S
        mix = _log_mix(t, s, beta)
        return beta * _kl(t, mix) + (1 - beta) * _kl(s, mix)
    if divergence == "tvd":
        return 0.5 * (t.exp() - s.exp()).abs().sum(-1)
    if divergence == "skew_kl":  # DistiLLM: KL(p_T || alpha p_T + (1-alpha) p_S)
        return _kl(t, _log_mix(t, s, alpha))
    if divergence == "skew_reverse_kl":  # DistiLLM: KL(p_S || (1-alpha) p_T + alpha p_S)
        return _kl(s, _log_mix(s, t, alpha))
    raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    alpha: float = 0.1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """D per position from logits [..., vocab] -> [...] in fp32 (differentiable, not chunked)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; slice both to the shared vocabulary"
        )
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return divergence_from_logprobs(s, t, divergence, beta, alpha)


@torch.no_grad()
def position_divergence(
    student_logits,
    teacher_logits,
    divergence="forward_kl",
    beta=0.5,
    alpha=0.1,
    chunk_size: int = 128,
) -> torch.Tensor:
    """d_i for every position [batch, positions] without gradient, chunked (the sampler's
    signal)."""
    out = [
        token_divergence(
            student_logits[:, i : i + chunk_size],
            teacher_logits[:, i : i + chunk_size],
            divergence,
            beta,
            alpha,
        )
        for i in range(0, student_logits.shape[1], chunk_size)
    ]
    return torch.cat(out, dim=1)


def position_weights(
    mask: torch.Tensor,
    reduction: str = "sequence",
    total_rows: int | None = None,
    total_tokens: int | None = None,
) -> torch.Tensor:
    """Weights w with loss = sum(w * d). "sequence": token mean per sequence, then batch mean
    (paper Eq. 2); "token": one mean over every unmasked token of the batch. Empty rows weigh 0.
    `total_rows` / `total_tokens` give the normaliser of a larger batch this mask is one part of
    (gradient accumulation, several processes): the parts' losses then add up to the whole's."""
    mask = mask.float()
    if reduction == "sequence":
        per_row = mask.sum(-1, keepdim=True).clamp(min=1)
        return mask / per_row / (total_rows or mask.shape[0])
    if reduction == "token":
        return mask / (total_tokens or mask.sum().clamp(min=1))
    raise ValueError(f"unknown reduction {reduction!r}; valid: sequence, token")


class _ChunkedWeightedDivergence(torch.autograd.Function):
    """sum(w * D) computed chunk by chunk; each chunk's gradient w.r.t. the student logits is
    computed at once, so only one fp32 chunk is ever alive (the idea of Liger's fused losses)."""

    @staticmethod
    def forward(
        ctx,
        student_logits,
        teacher_logits,
        weights,
        divergence,
        beta,
        alpha,
        temperature,
        chunk_size,
    ):
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(student_logits) if needs_grad else None
        total = torch.zeros((), dtype=torch.float32, device=student_logits.device)
        for i in range(0, student_logits.shape[1], chunk_size):
            w = weights[:, i : i + chunk_size]
            if not bool((w != 0).any()):
                continue
            with torch.enable_grad():
                chunk = student_logits[:, i : i + chunk_size].detach().requires_grad_(needs_grad)
                value = (
                    w
                    * token_divergence(
                        chunk,
                        teacher_logits[:, i : i + chunk_size],
                        divergence,
                        beta,
                        alpha,
                        temperature,
                    )
                ).sum()
            if needs_grad:
                grad[:, i : i + chunk_size] = torch.autograd.grad(value, chunk)[0].to(grad.dtype)
            total += value.detach()
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        # in place: no second vocabulary-sized buffer (the graph is not meant to be run backward
        # twice)
        return grad.mul_(grad_output.to(grad.dtype)), None, None, None, None, None, None, None


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    divergence: str = "forward_kl",
    reduction: str = "sequence",
    beta: float = 0.5,
    alpha: float = 0.1,
    temperature: float = 1.0,
    chunk_size: int | None = 32,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distillation loss over response positions: logits [batch, positions, vocab], mask
    [batch, positions] (1 on response tokens, EOS included). Gradients flow to the student only.
    `weights` [batch, positions] replace the mask's own normalisation (gradient accumulation counts
    the normaliser over the whole accumulated batch, see `position_weights`)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")
    weights = position_weights(mask, reduction) if weights is None else weights
    teacher_logits = teacher_logits.detach()
    if chunk_size is None:
        return (
            weights
            * token_divergence(student_logits, teacher_logits, divergence, beta, alpha, temperature)
        ).sum()
    return _ChunkedWeightedDivergence.apply(
        student_logits, teacher_logits, weights, divergence, beta, alpha, temperature, chunk_size
    )


class _HeadInPieces(torch.autograd.Function):
    """sum over pieces of positions of piece_loss(hidden[:, piece] @ W^T, piece): each piece's
    logits are made, scored and differentiated (w.r.t. its hidden states and W) on the spot, so the
    [batch, positions, vocab] logits never exist at once (the idea of Liger's fused linear losses).
    One backward pass, so DDP's gradient hooks fire once per parameter as usual."""

    @staticmethod
    def forward(ctx, hidden, weight, piece_loss, piece):
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # one leaf for every piece: autocast caches its 16-bit copy once (a fresh leaf per piece
        # would cache a copy each), and its .grad gathers the pieces' gradients in place
        w = weight.detach().requires_grad_(need_weight)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, hidden.shape[1], piece):
            part = slice(i, i + piece)
            with torch.enable_grad():
                h = hidden[:, part].detach().requires_grad_(need_hidden)
                value = piece_loss(F.linear(h, w), part)
                if value is None:  # nothing to score in this piece
                    continue
                if need_hidden or need_weight:
                    value.backward()
            if need_hidden:
                grad_hidden[:, part] = h.grad
            total += value.detach().float()
        grad_weight = None
        if need_weight:
            grad_weight = w.grad if w.grad is not None else torch.zeros_like(weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        # in place: no second copy of the saved gradients (the graph is not run backward twice)
        return (
            None if grad_hidden is None else grad_hidden.mul_(grad_output),
            None if grad_weight is None else grad_weight.mul_(grad_output),
            None,
            None,
        )


def update_piece(vocab: int, rows: int) -> int:
    """Positions per piece of a training loss made from hidden states: a divergence's gradient holds
    about eight fp32 copies of its piece's logits (both log-softmaxes, the probabilities, the
    mixture, the gradient), so a piece takes an eighth of `LOGITS_BUDGET_BYTES`."""
    return max(1, positions_within(vocab, LOGITS_BUDGET_BYTES // 8) // rows)


def head_loss(hidden: torch.Tensor, head_weight: torch.Tensor, piece_loss, piece: int):
    """sum of `piece_loss(logits, positions)` over pieces of `piece` positions, the logits being
    `hidden[:, positions] @ head_weight.T`; gradients reach `hidden` and `head_weight` as if the
    whole [batch, positions, vocab] logits had been made, with one piece alive at a time.
    `piece_loss` returns a scalar, or None for a piece with nothing to score."""
    return _HeadInPieces.apply(hidden, head_weight, piece_loss, piece)


def weighted_head_loss(hidden, head_weight, weights, per_position, piece: int | None = None):
    """sum(weights * per_position(logits, positions)) over the logits `hidden @ head_weight.T`,
    made a piece at a time (default: `update_piece` positions); a piece whose weights are all 0 is
    skipped."""

    def piece_loss(logits, part):
        w = weights[:, part]
        return (w * per_position(logits, part)).sum() if bool((w != 0).any()) else None

    piece = piece or update_piece(head_weight.shape[0], hidden.shape[0])
    return head_loss(hidden, head_weight, piece_loss, piece)


def distill_loss_from_hidden(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    teacher_logits: torch.Tensor,
    weights: torch.Tensor,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    alpha: float = 0.1,
    piece: int | None = None,
) -> torch.Tensor:
    """`distill_loss` on the logits `hidden @ head_weight.T` [batch, positions, vocab], made a
    piece at a time (default: `update_piece` positions);
    `weights` [batch, positions] as from `position_weights`."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")
    teacher_logits = teacher_logits.detach()

    def divergence_of(logits, part):
        return token_divergence(logits, teacher_logits[:, part], divergence, beta, alpha)

    return weighted_head_loss(hidden, head_weight, weights, divergence_of, piece)


def nll_loss_from_hidden(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    piece: int | None = None,
) -> torch.Tensor:
    """`nll_loss` on the logits `hidden @ head_weight.T`, made a piece at a time."""

    def nll_of(logits, part):
        return F.cross_entropy(logits.float().transpose(1, 2), labels[:, part], reduction="none")

    return weighted_head_loss(hidden, head_weight, weights, nll_of, piece)


def nll_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    reduction: str = "sequence",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative log-likelihood of `labels` [batch, positions] under logits (SFT and SeqKD)."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view(
        labels.shape
    )
    return ((position_weights(mask, reduction) if weights is None else weights) * nll).sum()


if __name__ == "__main__":
    teacher = torch.tensor([[[2.0, 1.0, 0.0]]])
    student = torch.tensor([[[0.0, 1.0, 2.0]]])
    for name in DIVERGENCES:
        print(f"{name:>16}: {token_divergence(student, teacher, name).item():.4f}")
