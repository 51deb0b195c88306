"""Statistics for comparisons between methods: paired differences over seeds with a t confidence
interval, Holm's correction for a claim made of several comparisons, a verdict from the interval,
and the seeds a comparison would need to resolve a given gap.

    python -m adaswitch_lib.stats 1.5 2.0 -0.5 2.5     # a paired difference from per-seed values

Seeds are paired: a seed gives every method the same KD data order and the same evaluation set
(tests/test_distill.py checks it), so the per-seed differences between two methods carry the
training noise of the comparison without the noise they share. One seed has no spread: its
difference gets no interval, and no verdict beyond "not resolved".
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """A paired difference a - b over n seeds: its mean, the interval, and its two-sided p-value
    (None with one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    p: float | None

    def text(self, digits: int = 2) -> str:
        if self.low is None:
            return f"{self.mean:+.{digits}f} (n = {self.n})"
        return (
            f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
            f"(n = {self.n})"
        )


def paired_difference(a: dict, b: dict, confidence: float = CONFIDENCE) -> Difference:
    """a - b over the seeds both have ({seed: score}): the mean difference, Student's t interval
    and the paired t-test's two-sided p-value."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common: the comparison is not paired")
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    if n == 1:
        return Difference(mean, None, None, 1, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:  # every seed agrees exactly: the interval is the point
        return Difference(mean, mean, mean, n, 0.0 if mean else 1.0)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1)
    return Difference(mean, mean - half, mean + half, n, float(p))


def t_half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half the width of Student's t interval of a mean over n values of standard deviation sd
    (NaN for fewer than two values)."""
    from scipy import stats

    if n < 2 or sd != sd:
        return float("nan")
    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the family-wise error stays at
    the level of each test when a claim is several comparisons at once."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(difference: Difference, p: float | None = None, level: float = 1 - CONFIDENCE) -> str:
    """For a claim that the difference is positive: "holds" when it is significantly above 0,
    "does not hold" when significantly below, "not resolved" otherwise. `p` replaces the
    difference's own p-value (a Holm-adjusted one); one seed is never more than "not resolved"."""
    if difference.n < 2:
        return "not resolved (one seed)"
    p = difference.p if p is None else p
    if p < level:
        return "holds" if difference.mean > 0 else "does not hold"
    return "not resolved"


def seeds_needed(
    sd: float, gap: float, confidence: float = CONFIDENCE, power: float = 0.8, most: int = 10_000
) -> int | None:
    """The fewest paired seeds for which a two-sided paired t-test at `confidence` detects a true
    mean difference `gap` with probability `power`, given the per-seed differences' standard
    deviation `sd` (noncentral t). None when `most` seeds would not do."""
    from scipy import stats

    if gap == 0:
        return None
    if sd == 0:
        return 2
    effect = abs(gap) / sd
    for n in range(2, most + 1):
        df = n - 1
        critical = stats.t.ppf((1 + confidence) / 2, df)
        shift = effect * math.sqrt(n)
        if stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift) >= power:
            return n
    return None


if __name__ == "__main__":
    values = [float(x) for x in sys.argv[1:]] or [1.5, 2.0, -0.5, 2.5]
    difference = paired_difference(dict(enumerate(values)), dict.fromkeys(range(len(values)), 0))
    print(f"a - b = {difference.text()}, p = {difference.p}: {verdict(difference)}")
