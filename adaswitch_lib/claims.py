"""The paper's qualitative claims, checked against a profile's run records -> `claims.md`.

    python -m adaswitch_lib.claims --profile smoke
    python -m adaswitch_lib.claims --profile cpu-claims --results-dir A --against B  # two settings

Each claim gets the paper's statement, our measurement and a verdict from the paired difference
it is about (`stats.py`): per seed, method A's score minus method B's, with a 95 % t interval over
the seeds. "holds" when the difference is significantly in the claimed direction, "does not
hold" when significantly against it, "not resolved" otherwise; one seed has no spread and is
never more than "not resolved". A claim made of several comparisons (AdaSwitch against each other
method) corrects them with Holm's method. Where the paper gives the gap, a power line says how
many paired seeds the measured spread would need to resolve it."""

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
from adaswitch_lib.regime import TOLERANCES, regime_table
from adaswitch_lib.report import PAPER_TABLE1, PAPER_TABLE1_COLUMNS, scores_long, table2
from adaswitch_lib.results import load_records
from adaswitch_lib.stats import Difference, holm, paired_difference, seeds_needed, verdict


def _cell(values) -> tuple[float, float, int]:
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std, n


def _text(mean, std, n) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if n > 1 else "")


def _by_seed(values) -> dict:
    """{seed: value} from (seed, value) pairs; a run without a seed counts as seed 0."""
    return {int(seed) if seed == seed and seed is not None else 0: float(v) for seed, v in values}


def _difference_verdict(a: dict, b: dict) -> tuple[Difference, str]:
    """The paired difference a - b over seeds, and its verdict for the claim "a > b"."""
    difference = paired_difference(a, b)
    return difference, verdict(difference)


def power_line(diffs_sd: float | None, paper_gap: float | None) -> str:
    """How many paired seeds the measured spread would need to resolve the paper's gap."""
    if paper_gap is None:
        return ""
    if diffs_sd is None:
        return f"; the paper's gap {paper_gap:+.2f} needs the spread of >= 2 seeds to size"
    needed = seeds_needed(diffs_sd, paper_gap)
    return f"; to resolve the paper's gap {paper_gap:+.2f} at this spread: " + (
        f"{needed} seeds" if needed else "more than 10,000 seeds"
    )


def _sd_of_differences(a: dict, b: dict) -> float | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean = sum(diffs) / len(diffs)
    return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))


def paper_gap(pair: str, column: str, a: str, b: str) -> float | None:
    """The paper's Table 1 difference a - b in the pair's column (None where it has none)."""
    label = f"{pair} {column}"
    if label not in PAPER_TABLE1_COLUMNS or a not in PAPER_TABLE1 or b not in PAPER_TABLE1:
        return None
    i = PAPER_TABLE1_COLUMNS.index(label)
    return round(PAPER_TABLE1[a][i] - PAPER_TABLE1[b][i], 2)


def best_methods(scores: dict) -> tuple[str, str]:
    """(every method at the best mean score, in name order, joined; the first of them) from
    {method: (mean, ...)}: a tie names all, whatever order the records came in."""
    top = max(score[0] for score in scores.values())
    tied = sorted(m for m, score in scores.items() if score[0] == top)
    return ", ".join(tied), tied[0]


def _rows(long, pair, column, method):
    return long[(long["pair"] == pair) & (long["column"] == column) & (long["method"] == method)]


def _score(long, pair, column, method):
    part = _rows(long, pair, column, method)["score"]
    return _cell(part) if len(part) else None


def test_sample_line(long, pair, column, a: str, b: str) -> str:
    """The test sample's own uncertainty in a - b: both methods answered the same questions, so
    the per-question differences of one seed's runs give an interval (the first seed both have
    per-question scores for); "" when the records predate per-question scores."""
    if "examples" not in long:
        return ""
    ra, rb = _rows(long, pair, column, a), _rows(long, pair, column, b)
    for seed in sorted(set(ra["seed"]) & set(rb["seed"])):
        xa = ra[ra["seed"] == seed]["examples"].iloc[0]
        xb = rb[rb["seed"] == seed]["examples"].iloc[0]
        if isinstance(xa, list) and isinstance(xb, list) and len(xa) == len(xb) > 1:
            per_question = paired_difference(dict(enumerate(xa)), dict(enumerate(xb)))
            return (
                f"; test sample alone (seed {seed}): {per_question.mean:+.2f} "
                f"[{per_question.low:+.2f}, {per_question.high:+.2f}] over {per_question.n} "
                "questions"
            )
    return ""


def _seeds(long, pair, column, method) -> dict:
    part = _rows(long, pair, column, method)
    return _by_seed(zip(part["seed"], part["score"]))


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
    """AdaSwitch against every other distilled method on GSM, paired by seed, Holm-corrected: the
    claim holds when AdaSwitch is significantly ahead of each, and does not hold when some method
    is significantly ahead of it."""
    for pair in r.pairs:
        long = r.long
        distilled = long[
            (long["pair"] == pair)
            & (long["column"] == "GSM")
            & ~long["method"].isin(["Teacher", "Student", "AdaSwitch"])
        ]
        ada = _seeds(long, pair, "GSM", "AdaSwitch")
        others = {m: _seeds(long, pair, "GSM", m) for m in sorted(set(distilled["method"]))}
        others = {m: seeds for m, seeds in others.items() if set(seeds) & set(ada)}
        if not (ada and others):
            continue
        differences = {m: paired_difference(ada, seeds) for m, seeds in others.items()}
        closest = min(differences, key=lambda m: differences[m].mean)
        n = min(d.n for d in differences.values())
        if n < 2:
            overall = "not resolved (one seed)"
        else:
            adjusted = dict(zip(differences, holm([d.p for d in differences.values()])))
            each = {m: verdict(d, adjusted[m]) for m, d in differences.items()}
            overall = (
                "holds"
                if all(v == "holds" for v in each.values())
                else "does not hold"
                if "does not hold" in each.values()
                else "not resolved"
            )
        yield (
            f"{pair} GSM",
            f"AdaSwitch {_text(*_cell(ada.values()))} − closest other ({closest}) "
            f"{_text(*_cell(others[closest].values()))} = {differences[closest].text()}, "
            f"Holm over {len(differences)} comparisons"
            + test_sample_line(long, pair, "GSM", "AdaSwitch", closest)
            # the paper's own headline gap: AdaSwitch - on-policy
            + power_line(
                _sd_of_differences(ada, others.get("On-policy KD", {})),
                paper_gap(pair, "GSM", "AdaSwitch", "On-policy KD"),
            ),
            overall,
        )


def on_policy_wins_gsm_off_policy_summ(r: Records):
    for pair in r.pairs:
        for column, winner, loser in (
            ("GSM", "On-policy KD", "Off-policy KD"),
            ("SUMM", "Off-policy KD", "On-policy KD"),
        ):
            w, lo = _seeds(r.long, pair, column, winner), _seeds(r.long, pair, column, loser)
            if set(w) & set(lo):
                difference, v = _difference_verdict(w, lo)
                yield (
                    f"{pair} {column}",
                    f"{winner} − {loser} = {difference.text()}"
                    + test_sample_line(r.long, pair, column, winner, loser)
                    + power_line(
                        _sd_of_differences(w, lo),
                        paper_gap(pair, column, winner, loser),
                    ),
                    v,
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
            task: _by_seed(part[part["task"] == task].groupby("seed")["switch_rate"].mean().items())
            for task in set(part["task"])
        }
        yield pair, part, rate


def switch_rate_higher_on_gsm(r: Records):
    for pair, _, rate in _switch_parts(r):
        if {"GSM", "SUMM"} <= set(rate):
            difference, v = _difference_verdict(rate["GSM"], rate["SUMM"])
            yield (
                pair,
                f"mean switch rate over training, GSM − SUMM = {difference.text(3)}",
                v,
            )


def kld_at_switch_falls(r: Records):
    for pair, part, rate in _switch_parts(r):
        for task in sorted(rate):
            runs = part[part["task"] == task].dropna(subset=["d_at_switch"])
            if runs.empty:
                continue
            ends = runs.sort_values("step_bin").groupby("seed")["d_at_switch"]
            first, last = _by_seed(ends.first().items()), _by_seed(ends.last().items())
            difference, v = _difference_verdict(first, last)
            yield (
                f"{pair} {task}",
                f"KLD at the switch, first window − last = {difference.text(3)}",
                v,
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
            found = "holds" if 3 <= best_k <= 4 and 5 < best_l < 20 else "does not hold"
            if spread == 0:
                found = "not resolved"
            yield (
                panel,
                f"best K = {best_k:g} of {sorted(by_k.index)}, best L = {best_l} of "
                f"{[int(x) for x in sorted(by_l.index)]}; scores span {spread:.2f}",
                # one seed shows an order, not a verdict
                "not resolved (one seed)" if len(r.profile.seeds) == 1 else found,
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


def verdicts_side_by_side(rows: list[dict], other_rows: list[dict]):
    """Two `check_claims` outputs of one profile (two CPU settings, two hosts) side by side: each
    (claim, where) with both verdicts and whether they agree; a row only one side has disagrees."""
    import pandas as pd

    def verdicts(found):
        return pd.DataFrame(found, columns=["claim", "where", "verdict"])

    both = verdicts(rows).merge(
        verdicts(other_rows), on=["claim", "where"], how="outer", suffixes=("", " (other)")
    )
    both = both.fillna("no record")
    both["same"] = both["verdict"] == both["verdict (other)"]
    return both.sort_values(["claim", "where"]).reset_index(drop=True)


def compare_verdicts(profile: Profile, results_dir: str, other_dir: str) -> str:
    """`verdicts_side_by_side` of two results folders, as Markdown with a count of agreements."""
    both = verdicts_side_by_side(
        check_claims(profile, results_dir), check_claims(profile, other_dir)
    )
    return (
        both.to_markdown(index=False)
        + f"\n\n{int(both['same'].sum())} of {len(both)} verdicts agree "
        f"({results_dir} against {other_dir})"
    )


def regime_section(profile: Profile, results_dir: str = "results") -> str:
    """Whether the runs end where final scores compare (regime.py), as a Markdown section."""
    table = regime_table(profile, load_records(profile.name, results_dir))
    if table.empty:
        return ""
    tolerances = "; ".join(
        f"{kind}: dip <= {t.collapse:g}, late move <= {t.late_move:g}, room >= {t.room:g}"
        for kind, t in TOLERANCES.items()
    )
    conditions = ["no_collapse", "converged", "room"]
    words = {True: "yes", False: "no", None: "—"}
    table[conditions] = table[conditions].apply(lambda column: column.map(words))
    columns = ["pair", "task", "method", "seeds", "dip", "late_move", "final", *conditions]
    return (
        "\nWhere the runs end (`python -m adaswitch_lib.regime`): a final score compares methods "
        "only when no seed-mean learning curve dips far below its start, none still moves over "
        "the last 20 % of the steps, and each ends clearly between base student and teacher "
        f"(points of the task's metric; {tolerances}):\n\n"
        f"{table[columns].to_markdown(index=False, disable_numparse=True)}\n"
    )


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
        f"{regime_section(profile, results_dir)}"
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
    parser.add_argument(
        "--against",
        default="",
        help="another results folder of the profile (another CPU setting): print both verdicts "
        "side by side instead of writing claims.md",
    )
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    if args.against:
        print(compare_verdicts(profile, args.results_dir, args.against))
        return 0
    print(write_claims(profile, args.results_dir).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
