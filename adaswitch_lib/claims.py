"""The paper's qualitative claims, checked against a profile's run records -> `claims.md`.

    python -m adaswitch_lib.claims --profile smoke

Each claim gets the paper's statement, our measurement (mean ± standard deviation over seeds where
the profile has several) and a verdict: holds, does not hold, or not resolvable — when the
difference is no larger than the noise: the seed spread where seeds exist, else the binomial
standard error of an accuracy on the test set (a single seed cannot show training noise, and the
verdict says so)."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from adaswitch_lib import atomic
from adaswitch_lib.config import Profile, get_profile
from adaswitch_lib.errors import KitError
from adaswitch_lib.figures import final_scores, switch_statistics
from adaswitch_lib.plan import DEFAULT_K, DEFAULT_WINDOW
from adaswitch_lib.report import scores_long, table2
from adaswitch_lib.results import load_records


def _cell(values) -> tuple[float, float, int]:
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def _text(mean, std, n) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if n > 1 else "")


def _compare(a, b, test_examples: int | None = None) -> str:
    """Verdict for "a > b": a and b are (mean, std, n) of scores (percent)."""
    diff = a[0] - b[0]
    if a[2] > 1 and b[2] > 1:
        noise, note = max(a[1], b[1]), ""
    else:
        p = min(max((a[0] + b[0]) / 200, 0.0), 1.0)
        noise = 100 * math.sqrt(p * (1 - p) / test_examples) if test_examples else 0.0
        note = " (one seed)"
    if abs(diff) <= noise:
        return "not resolvable" + note
    return ("holds" if diff > 0 else "does not hold") + note


def best_methods(scores: dict) -> tuple[str, str]:
    """(every method at the best mean score, in name order, joined; the first of them) from
    {method: (mean, ...)}: a tie names all, whatever order the records came in."""
    top = max(score[0] for score in scores.values())
    tied = sorted(m for m, score in scores.items() if score[0] == top)
    return ", ".join(tied), tied[0]


def _score(long, pair, column, method):
    part = long[(long["pair"] == pair) & (long["column"] == column) & (long["method"] == method)][
        "score"
    ]
    return _cell(part) if len(part) else None


def _one_seed_order(high, low) -> str:
    """The verdict for "high > low" from one seed each: the order alone, marked as one seed."""
    return (
        "holds" if high[0] > low[0] else "not resolvable" if high[0] == low[0] else "does not hold"
    ) + " (one seed)"


class Records:
    """A profile's records and the views the claims read, each computed once (None when missing)."""

    def __init__(self, profile: Profile, results_dir: str):
        self.profile, self.results_dir = profile, results_dir
        self.records = load_records(profile.name, results_dir)
        self.n_test = profile.max_eval_examples or None
        self.long = scores_long(profile, self.records) if not self.records.empty else None
        empty = self.long is None or self.long.empty
        self.pairs = [] if empty else sorted(set(self.long["pair"]))

    def switch_statistics(self):
        return _or_none(lambda: switch_statistics(self.profile, self.records, "fig7"))

    def table2(self):
        return _or_none(lambda: table2(self.profile, self.records, self.results_dir)[0])

    def fig6(self):
        return _or_none(lambda: final_scores(self.profile, self.records, "fig6"))


def _or_none(make):
    try:
        return make()
    except KitError:
        return None


def adaswitch_best_on_gsm(r: Records):
    for pair in r.pairs:
        long = r.long
        distilled = long[
            (long["pair"] == pair)
            & (long["column"] == "GSM")
            & ~long["method"].isin(["Teacher", "Student"])
        ]
        ada = _score(long, pair, "GSM", "AdaSwitch")
        others = {
            m: _score(long, pair, "GSM", m)
            for m in sorted(set(distilled["method"]) - {"AdaSwitch"})
        }
        others = {m: score for m, score in others.items() if score}
        if ada and others:
            tied, best_other = best_methods(others)
            yield (
                f"{pair} GSM",
                f"AdaSwitch {_text(*ada)} vs best other ({tied}) {_text(*others[best_other])}",
                _compare(ada, others[best_other], r.n_test),
            )


def on_policy_wins_gsm_off_policy_summ(r: Records):
    for pair in r.pairs:
        for column, winner, loser in (
            ("GSM", "On-policy KD", "Off-policy KD"),
            ("SUMM", "Off-policy KD", "On-policy KD"),
        ):
            w, lo = _score(r.long, pair, column, winner), _score(r.long, pair, column, loser)
            if w and lo:
                yield (
                    f"{pair} {column}",
                    f"{winner} {_text(*w)} vs {loser} {_text(*lo)}",
                    _compare(w, lo, r.n_test if column == "GSM" else None),
                )


def _switch_parts(r: Records):
    """(pair, its switch statistics, {task: switch rate per seed as a cell}) for each pair."""
    stats = r.switch_statistics()
    if stats is None:
        return
    for pair in sorted(set(stats["pair"])):
        part = stats[stats["pair"] == pair]
        # one value per run (seed): the switch rate averaged over its training windows
        rate = {
            task: _cell(part[part["task"] == task].groupby("seed")["switch_rate"].mean())
            for task in set(part["task"])
        }
        yield pair, part, rate


def switch_rate_higher_on_gsm(r: Records):
    for pair, _, rate in _switch_parts(r):
        if {"GSM", "SUMM"} <= set(rate):
            gsm, summ = rate["GSM"], rate["SUMM"]
            yield (
                pair,
                f"mean switch rate over training: GSM {_text(*gsm)} vs SUMM {_text(*summ)}",
                _compare(gsm, summ) if gsm[2] > 1 else _one_seed_order(gsm, summ),
            )


def kld_at_switch_falls(r: Records):
    for pair, part, rate in _switch_parts(r):
        for task in sorted(rate):
            runs = part[part["task"] == task].dropna(subset=["d_at_switch"])
            if runs.empty:
                continue
            ends = runs.sort_values("step_bin").groupby("seed")["d_at_switch"]
            first, last = _cell(ends.first()), _cell(ends.last())
            yield (
                f"{pair} {task}",
                f"KLD at the switch: first window {_text(*first)} -> last {_text(*last)}",
                _compare(first, last)
                if first[2] > 1
                else ("holds" if last[0] < first[0] else "does not hold") + " (one seed)",
            )


def adaswitch_cheaper_than_skd(r: Records):
    ratios = r.table2()
    if ratios is None or not {"AdaSwitch", "SKD"} <= set(ratios.index):
        return
    for column in ratios.columns:
        ada, skd = ratios.loc["AdaSwitch", column], ratios.loc["SKD", column]
        if ada == ada and skd == skd:  # neither is NaN
            yield (
                column,
                f"AdaSwitch {ada:.2f}x vs SKD {skd:.2f}x on-policy time",
                "holds" if ada < skd else "does not hold",
            )


def k_and_l_near_the_paper(r: Records):
    fig6 = r.fig6()
    if fig6 is None or fig6.empty:
        return
    for panel, part in fig6.groupby(fig6["pair_label"] + " " + fig6["column"]):
        by_k = (
            part[part["adaswitch_window"] == DEFAULT_WINDOW].groupby("adaswitch_k")["score"].mean()
        )
        by_l = part[part["adaswitch_k"] == DEFAULT_K].groupby("adaswitch_window")["score"].mean()
        if len(by_k) > 1 and len(by_l) > 1:
            best_k, best_l = by_k.idxmax(), int(by_l.idxmax())
            spread = max(by_k.max() - by_k.min(), by_l.max() - by_l.min())
            verdict = "holds" if 3 <= best_k <= 4 and 5 < best_l < 20 else "does not hold"
            if spread == 0:
                verdict = "not resolvable"
            yield (
                panel,
                f"best K = {best_k:g} of {sorted(by_k.index)}, best L = {best_l} of "
                f"{[int(x) for x in sorted(by_l.index)]}; scores span {spread:.2f}",
                verdict + " (one seed)" if len(r.profile.seeds) == 1 else verdict,
            )


@dataclass(frozen=True)
class Claim:
    statement: str  # the paper's words, shortened
    check: object  # Records -> (where, ours, verdict) rows


CLAIMS = {
    "a": Claim(
        "AdaSwitch is the best method on GSM for both pairs (Table 1).", adaswitch_best_on_gsm
    ),
    "b": Claim(
        "On-policy KD beats off-policy KD on GSM; off-policy beats on-policy on SUMM (Table 1).",
        on_policy_wins_gsm_off_policy_summ,
    ),
    "c": Claim(
        "The switch rate is higher on GSM (above 95 %) than on SUMM (Figures 4, 7).",
        switch_rate_higher_on_gsm,
    ),
    "d": Claim(
        "The KLD at the switch token falls during training (Figures 4, 7).", kld_at_switch_falls
    ),
    "e": Claim(
        "AdaSwitch costs less time than SKD (Table 2: 1.20-1.41x against 1.28-1.61x on-policy).",
        adaswitch_cheaper_than_skd,
    ),
    "f": Claim("K of 3-4 and L near 10 work best (Figure 6).", k_and_l_near_the_paper),
}


def check_claims(profile: Profile, results_dir: str = "results") -> list[dict]:
    """One row per (claim, pair/task): claim, paper, ours, verdict."""
    records = Records(profile, results_dir)
    rows = []
    for key, claim in CLAIMS.items():
        found = [
            dict(claim=key, where=where, paper=claim.statement, ours=ours, verdict=verdict)
            for where, ours, verdict in claim.check(records)
        ]
        rows += found or [
            dict(
                claim=key,
                where="-",
                paper=claim.statement,
                ours="the runs it needs have no records",
                verdict="not measured",
            )
        ]
    return sorted(rows, key=lambda r: (r["claim"], r["where"]))


def write_claims(profile: Profile, results_dir: str = "results") -> Path:
    """results/<profile>/claims.md from the records; returns its path."""
    import pandas as pd

    rows = check_claims(profile, results_dir)
    table = pd.DataFrame(rows)[["claim", "where", "ours", "verdict"]].to_markdown(
        index=False, disable_numparse=True
    )
    claims = "\n".join(f"- **({k})** {claim.statement}" for k, claim in CLAIMS.items())
    seeds = len(profile.seeds)
    text = (
        f"# The paper's claims on the `{profile.name}` profile\n\n"
        "Generated from the run records by `python -m adaswitch_lib.claims --profile "
        f"{profile.name}`; "
        f"{seeds} seed(s) per run. Scores are ROUGE-L (SUMM) and accuracy % (GSM).\n\n"
        f"The paper's claims:\n\n{claims}\n\nWhat the records say:\n\n{table}\n"
    )
    path = Path(results_dir) / profile.name / "claims.md"
    atomic.write_text(path, text)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Check the paper's claims against a profile's records."
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    print(write_claims(get_profile(args.profile), args.results_dir).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
