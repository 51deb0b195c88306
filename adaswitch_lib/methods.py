"""The distillation methods of Table 1 as data: where each step's target sequences come from and
which loss they get. The loop in `distill.py` reads this table and nothing else, so adding a
method is adding a row (and, for a new source of targets, one branch in `targets.build_targets`).

Target sources:
    ground_truth     the data set's response (off-policy)
    teacher_samples  responses the teacher sampled once for every KD prompt (SeqKD; cached)
    student          the student samples at its temperature / top-p (on-policy, GKD)
    mixed            per sequence: ground truth with probability beta, else a student sample;
                     beta decays linearly from `imitkd_beta_start` to 0 over training (ImitKD)
    skd              the student proposes, the teacher replaces tokens outside its top-k / top-p
    adaswitch        the student explores until d_i > K * mean of the last L, then the teacher
    (Algorithm 1)
Losses:
    nll              negative log-likelihood of the targets
    divergence       D(p_T || p_S) token by token, D = RunConfig.divergence (forward KL by default)

    python -m adaswitch_lib.methods        # print the table
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET_SOURCES = ("ground_truth", "teacher_samples", "student", "mixed", "skd", "adaswitch")
LOSSES = ("nll", "divergence")
# Figures 5 and 8: evaluated densely early on
EARLY_METHODS = "on_policy", "off_policy", "adaswitch"


@dataclass(frozen=True)
class Method:
    name: str
    targets: str  # one of TARGET_SOURCES
    loss: str  # one of LOSSES
    label: str  # the row name in the paper's Table 1
    description: str

    def __post_init__(self):
        if self.targets not in TARGET_SOURCES or self.loss not in LOSSES:
            raise ValueError(
                f"method {self.name}: targets must be one of {TARGET_SOURCES}, loss one of {LOSSES}"
            )

    @property
    def needs_teacher_logits(self) -> bool:
        """Divergence methods need p_T on every target position; NLL methods never run the
        teacher."""
        return self.loss == "divergence"

    @property
    def sampler_keeps_teacher_logits(self) -> bool:
        """SKD and AdaSwitch run the teacher while sampling: the loss reuses those logits."""
        return self.targets in ("skd", "adaswitch")


_ROWS = (
    Method("sft", "ground_truth", "nll", "SFT", "fine-tune on the ground truth"),
    Method(
        "seqkd",
        "teacher_samples",
        "nll",
        "SeqKD",
        "fine-tune on teacher samples made once (Kim & Rush, 2016)",
    ),
    Method(
        "off_policy",
        "ground_truth",
        "divergence",
        "Off-policy KD",
        "supervised KD: D on the ground truth",
    ),
    Method(
        "on_policy",
        "student",
        "divergence",
        "On-policy KD",
        "GKD: D on student samples (Agarwal et al., 2024)",
    ),
    Method(
        "imitkd",
        "mixed",
        "divergence",
        "ImitKD",
        "ground truth or student sample per sequence, beta decaying to 0 (Lin et al., 2020)",
    ),
    Method(
        "skd",
        "skd",
        "divergence",
        "SKD",
        "speculative KD: the teacher replaces rejected student tokens (Xu et al., 2025)",
    ),
    Method(
        "adaswitch",
        "adaswitch",
        "divergence",
        "AdaSwitch",
        "student until its divergence jumps, then the teacher (Peng et al., 2025)",
    ),
)
METHODS: dict[str, Method] = {m.name: m for m in _ROWS}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(METHODS)}")
    return METHODS[name]


if __name__ == "__main__":
    for m in _ROWS:
        print(
            f"{m.name:>11}  {m.label:<14} targets={m.targets:<16} loss={m.loss:<10} {m.description}"
        )
