import math

import pytest
import torch
import torch.nn.functional as F

from adaswitch_lib.losses import (
    DIVERGENCES,
    distill_loss,
    distill_loss_from_hidden,
    nll_loss,
    nll_loss_from_hidden,
    position_divergence,
    position_weights,
    token_divergence,
)


def logits_of(probs):
    return torch.tensor(probs).log()[None, None]


P, Q = [0.5, 0.5], [0.25, 0.75]  # teacher p_T, student p_S


def test_known_values_on_hand_made_distributions():
    t, s = logits_of(P), logits_of(Q)
    kl_pq = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_qp = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert token_divergence(s, t, "forward_kl").item() == pytest.approx(kl_pq, abs=1e-6)
    assert token_divergence(s, t, "reverse_kl").item() == pytest.approx(kl_qp, abs=1e-6)
    assert token_divergence(s, t, "tvd").item() == pytest.approx(0.25, abs=1e-6)
    m = [0.5 * a + 0.5 * b for a, b in zip(P, Q)]
    js = 0.5 * sum(a * math.log(a / c) for a, c in zip(P, m)) + 0.5 * sum(
        b * math.log(b / c) for b, c in zip(Q, m)
    )
    assert token_divergence(s, t, "jsd", beta=0.5).item() == pytest.approx(js, abs=1e-6)
    mix = [0.1 * a + 0.9 * b for a, b in zip(P, Q)]  # skew KL: KL(p_T || 0.1 p_T + 0.9 p_S)
    assert token_divergence(s, t, "skew_kl", alpha=0.1).item() == pytest.approx(
        sum(a * math.log(a / c) for a, c in zip(P, mix)), abs=1e-6
    )
    rmix = [0.9 * a + 0.1 * b for a, b in zip(P, Q)]  # skew RKL: KL(p_S || 0.9 p_T + 0.1 p_S)
    assert token_divergence(s, t, "skew_reverse_kl", alpha=0.1).item() == pytest.approx(
        sum(b * math.log(b / c) for b, c in zip(Q, rmix)), abs=1e-6
    )
    # a temperature divides the logits of both models first
    assert token_divergence(s * 2, t * 2, "forward_kl", temperature=2.0).item() == pytest.approx(
        kl_pq, abs=1e-6
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_divergence_of_a_distribution_with_itself_is_zero(divergence):
    logits = torch.randn(3, 5, 50)
    assert torch.allclose(
        token_divergence(logits, logits.clone(), divergence), torch.zeros(3, 5), atol=1e-6
    )
    assert (token_divergence(torch.randn(3, 5, 50), logits, divergence) > 0).all()


def trl_generalized_jsd_loss(student_logits, teacher_logits, labels, beta):
    """Reference copy of the formula of trl's GKDTrainer.generalized_jsd_loss (temperature 1,
    batchmean)."""
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture = torch.logsumexp(
            torch.stack(
                [student_log_probs + torch.log(1 - beta), teacher_log_probs + torch.log(beta)]
            ),
            dim=0,
        )
        kl_teacher = F.kl_div(mixture, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    mask = labels != -100
    return jsd[mask].sum() / mask.sum()


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalised_jsd_matches_trl(beta):
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 7, 30), torch.randn(2, 7, 30)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1]])
    labels = torch.where(mask.bool(), 1, -100)
    ours = distill_loss(student, teacher, mask, "jsd", reduction="token", beta=beta)
    assert ours.item() == pytest.approx(
        trl_generalized_jsd_loss(student, teacher, labels, beta).item(), rel=1e-5
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("reduction", ["sequence", "token"])
def test_chunked_equals_unchunked_in_value_and_gradient(divergence, reduction):
    torch.manual_seed(1)
    teacher = torch.randn(3, 11, 40)
    mask = torch.tensor([[1] * 11, [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0], [0] * 4 + [1] * 7])
    grads, values = [], []
    for chunk in (None, 1, 4, 64):
        student = torch.randn(
            3, 11, 40, generator=torch.Generator().manual_seed(2)
        ).requires_grad_()
        value = distill_loss(student, teacher, mask, divergence, reduction, chunk_size=chunk)
        value.backward()
        values.append(value.item()), grads.append(student.grad)
    for value, grad in zip(values[1:], grads[1:]):
        assert value == pytest.approx(values[0], rel=1e-5)
        assert torch.allclose(grad, grads[0], atol=1e-6)
    assert grads[0][1, :2].abs().sum() == 0  # masked positions get no gradient


def test_reductions():
    d_student, teacher = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    # one position with divergence, in a row of 1 token vs 4 tokens
    teacher[0, 0] = torch.tensor([5.0, 0, 0])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    d = token_divergence(d_student[0, 0], teacher[0, 0]).item()
    # (d/1 + 0)/2
    assert distill_loss(d_student, teacher, mask, reduction="sequence").item() == pytest.approx(
        d / 2
    )
    assert distill_loss(d_student, teacher, mask, reduction="token").item() == pytest.approx(d / 5)
    assert torch.allclose(
        position_divergence(d_student, teacher, chunk_size=3), token_divergence(d_student, teacher)
    )


def test_nll_loss_matches_cross_entropy():
    logits, labels = torch.randn(2, 5, 9), torch.randint(0, 9, (2, 5))
    mask = torch.ones(2, 5)
    assert nll_loss(logits, labels, mask, "token").item() == pytest.approx(
        F.cross_entropy(logits.flatten(0, 1), labels.flatten()).item(), rel=1e-6
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown divergence 'kl'"):
        distill_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), torch.ones(1, 1), "kl")
    with pytest.raises(ValueError, match="slice both to the shared vocabulary"):
        token_divergence(torch.zeros(1, 3), torch.zeros(1, 4))


@pytest.mark.parametrize("divergence", [*DIVERGENCES, "nll"])
def test_the_head_in_pieces_equals_the_whole_logits(divergence):
    """`distill_loss_from_hidden` / `nll_loss_from_hidden` make the logits a few positions at a time
    and differentiate each piece on the spot: the loss and the gradients w.r.t. the hidden states
    and the head weight are those of the whole [batch, positions, vocab] logits (fp64 here, so equal
    to rounding); a piece whose weights are all 0 (row 2, the last positions) is skipped."""
    torch.manual_seed(0)
    batch, positions, hidden_size, vocab = 3, 7, 16, 50
    hidden = torch.randn(batch, positions, hidden_size, dtype=torch.float64, requires_grad=True)
    head = torch.randn(vocab, hidden_size, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(batch, positions, vocab, dtype=torch.float64)
    labels = torch.randint(0, vocab, (batch, positions))
    mask = (torch.rand(batch, positions) > 0.3).float()
    mask[2], mask[:, 5:] = 0, 0
    weights = position_weights(mask, "sequence")
    logits = torch.nn.functional.linear(hidden, head)
    if divergence == "nll":
        whole = nll_loss(logits, labels, mask, "sequence")
        pieces = nll_loss_from_hidden(hidden, head, labels, weights, piece=2)
    else:
        whole = distill_loss(logits, teacher, mask, divergence, "sequence", chunk_size=None)
        pieces = distill_loss_from_hidden(hidden, head, teacher, weights, divergence, piece=2)
    assert pieces.item() == pytest.approx(whole.item(), rel=1e-6)
    for a, b in zip(
        torch.autograd.grad(whole, [hidden, head]), torch.autograd.grad(pieces, [hidden, head])
    ):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


# The KD update's loss at Qwen2.5's vocabulary, 4 rows x 512 response tokens (colab's update), in a
# process of its own (peak resident memory is per process). The teacher's logits (1.16 GiB) are
# held either way; the student's whole logits and their gradient added 2.8 GiB (docs/gpu.md).
_REAL_VOCAB_UPDATE = """
import resource, torch
from adaswitch_lib.losses import distill_loss_from_hidden, position_weights
torch.set_num_threads(2)
V, B, N, H = 151936, 4, 512, 64
g = torch.Generator().manual_seed(0)
hidden = torch.randn(B, N, H, generator=g, requires_grad=True)
head = torch.nn.Parameter(torch.randn(V, H, generator=g) * 0.02)
teacher = torch.randn(B, N, V, generator=g)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
distill_loss_from_hidden(hidden, head, teacher, position_weights(torch.ones(B, N))).backward()
assert head.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)
"""


@pytest.mark.slow
def test_the_kd_update_at_the_real_vocabulary_adds_under_1_gib():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _REAL_VOCAB_UPDATE], capture_output=True, text=True, check=True
    )
    added_gib = float(out.stdout.split()[-1])
    # the student's fp32 logits alone are 1.16 GiB, and their gradient as much again
    assert added_gib < 1.0, f"the update's loss added {added_gib:.2f} GiB"
