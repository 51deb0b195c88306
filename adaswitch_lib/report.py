"""Tables from run records: Table 1 (scores), Table 2 (relative runtime), written as CSV, Markdown
and LaTeX with the best of each column in bold, and the paper's own numbers beside ours.

    python -m adaswitch_lib.report --profile smoke      # writes results/smoke/tables/*
    python -m adaswitch_lib.report --profile cpu-claims --against cpu   # cell by cell, with CIs

Every number comes from `results.load_records`; nothing here is typed in except the paper's tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adaswitch_lib import atomic
from adaswitch_lib.config import Profile, config_hash, get_profile, run_id
from adaswitch_lib.data import ROBUSTNESS_TWIN
from adaswitch_lib.errors import KitError
from adaswitch_lib.methods import METHODS
from adaswitch_lib.plan import TABLE2_METHODS, artifact_runs
from adaswitch_lib.results import load_records

COLUMN_LABEL = {
    "dialogsum": "SUMM",
    "synth_summ": "SUMM",
    "gsm8k": "GSM",
    "synth_gsm": "GSM",
    "gsm_plus": "GSM-Plus",
    "synth_gsm_plus": "GSM-Plus",
}
FAMILY = {
    "qwen": "Qwen",
    "qwen-small": "Qwen",
    "tiny-qwen": "Qwen",
    "llama": "Llama",
    "tiny-llama": "Llama",
}
ROW_ORDER = ["Teacher", "Student"] + [m.label for m in METHODS.values()]

# The paper's Table 1 (ROUGE-L for SUMM, accuracy % for GSM and GSM-Plus) and Table 2 (whole
# distillation time relative to on-policy), as printed (arXiv 2510.07842, Tables 1 and 2).
PAPER_TABLE1 = {
    "Teacher": (37.45, 59.59, 38.58, 37.41, 65.35, 45.42),
    "Student": (13.48, 0.00, 0.00, 12.07, 0.00, 0.00),
    "SFT": (32.34, 29.04, 12.00, 30.28, 31.01, 15.54),
    "SeqKD": (32.09, 28.20, 11.78, 30.13, 30.42, 14.42),
    "Off-policy KD": (34.57, 30.55, 13.83, 32.44, 33.51, 17.92),
    "On-policy KD": (34.34, 32.68, 14.33, 32.31, 34.12, 20.17),
    "ImitKD": (35.07, 30.55, 15.63, 32.50, 34.57, 21.29),
    "SKD": (34.88, 32.37, 16.88, 32.27, 32.98, 20.38),
    "AdaSwitch": (35.56, 35.03, 17.33, 32.60, 36.32, 21.63),
}
PAPER_TABLE1_COLUMNS = (
    "Llama SUMM",
    "Llama GSM",
    "Llama GSM-Plus",
    "Qwen SUMM",
    "Qwen GSM",
    "Qwen GSM-Plus",
)
PAPER_TABLE2 = {
    "Off-policy KD": (0.77, 0.79, 0.61, 0.57),
    "On-policy KD": (1.00, 1.00, 1.00, 1.00),
    "SKD": (1.28, 1.31, 1.61, 1.53),
    "AdaSwitch": (1.20, 1.22, 1.41, 1.38),
}
PAPER_TABLE2_COLUMNS = ("SUMM Llama", "SUMM Qwen", "GSM Llama", "GSM Qwen")
RUNTIME = "timings.distill_without_evaluation"  # the paper's Table 2: the distillation itself


def paper_table(which: str):
    import pandas as pd

    rows, columns = (
        (PAPER_TABLE1, PAPER_TABLE1_COLUMNS)
        if which == "table1"
        else (PAPER_TABLE2, PAPER_TABLE2_COLUMNS)
    )
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns))


def planned_records(profile: Profile, records, artifact: str):
    """The records of an artifact's planned runs (plus Teacher/Student rows), by run id."""
    wanted = {run_id(run) for run in artifact_runs(profile, artifact)}
    if records.empty:
        return records
    keep = records["run_id"].isin(wanted)
    # the pairs this profile prepares (records of an earlier profile state stay out)
    if artifact == "table1":
        keep |= records["kind"].isin(["teacher", "student"]) & records["run_id"].str.endswith(
            f"-{config_hash(profile)}"
        )
    return records[keep]


def pair_label(pair: str, pairs: tuple) -> str:
    family = FAMILY.get(pair, pair)
    return family if sum(FAMILY.get(p, p) == family for p in pairs) == 1 else pair


def scores_long(profile: Profile, records):
    """Table 1 in long form: one row per (run, column): pair, column, method label, seed, score,
    and each test example's score (None in records that predate them)."""
    import pandas as pd

    rows = []
    for _, r in planned_records(profile, records, "table1").iterrows():
        for task in (r["task"], ROBUSTNESS_TWIN.get(r["task"])):
            value = r.get(f"metrics.{task}_score") if task else None
            if task in profile.eval_tasks and value is not None and value == value:
                examples = r.get(f"example_scores.{task}")
                rows.append(
                    dict(
                        pair=pair_label(r["pair"], profile.pairs),
                        column=COLUMN_LABEL.get(task, task),
                        method=r["method_label"],
                        seed=r.get("seed"),
                        score=float(value),
                        examples=examples if isinstance(examples, list) else None,
                    )
                )
    return pd.DataFrame(rows, columns=["pair", "column", "method", "seed", "score", "examples"])


def table1(profile: Profile, records=None, results_dir: str = "results"):
    """Rows: Teacher, Student and the seven methods; columns: (pair, SUMM / GSM / GSM-Plus).
    Returns (mean, std, n): std is NaN where a cell has one seed."""
    records = load_records(profile.name, results_dir) if records is None else records
    long = scores_long(profile, records)
    if long.empty:
        raise KitError(
            f"no Table 1 records under {results_dir}/{profile.name}/runs; "
            f"run ./run_all.sh --profile {profile.name} --only table1 first"
        )
    long["cell"] = long["pair"] + " " + long["column"]
    grouped = long.groupby(["method", "cell"])["score"]
    pairs = [pair_label(p, profile.pairs) for p in profile.pairs]
    columns = [
        f"{p} {c}"
        for p in pairs
        for c in ("SUMM", "GSM", "GSM-Plus")
        if f"{p} {c}" in set(long["cell"])
    ]
    order = [m for m in ROW_ORDER if m in set(long["method"])]
    shape = lambda s: s.unstack("cell").reindex(index=order, columns=columns)  # noqa: E731
    return shape(grouped.mean()), shape(grouped.std()), shape(grouped.count())


def table2(profile: Profile, records=None, results_dir: str = "results"):
    """Whole-distillation time relative to on-policy (paper Table 2), per (task, pair). Timings
    are means over seeds; returns (ratios, seconds)."""
    records = load_records(profile.name, results_dir) if records is None else records
    runs = planned_records(profile, records, "table2")
    if runs.empty or RUNTIME not in runs:
        raise KitError(
            f"no Table 2 records under {results_dir}/{profile.name}/runs; "
            f"run ./run_all.sh --profile {profile.name} --only table2 first"
        )
    runs = runs.assign(
        cell=[
            f"{COLUMN_LABEL.get(t, t)} {pair_label(p, profile.pairs)}"
            for t, p in zip(runs["task"], runs["pair"])
        ]
    )
    seconds = runs.groupby(["method_label", "cell"])[RUNTIME].mean().unstack("cell")
    order = [METHODS[m].label for m in TABLE2_METHODS if METHODS[m].label in seconds.index]
    seconds = seconds.reindex(
        index=order, columns=sorted(seconds.columns, key=lambda c: (c.split(" ")[0] != "SUMM", c))
    )
    on_policy = METHODS["on_policy"].label
    if on_policy not in seconds.index:
        raise KitError("Table 2 needs the on-policy runs (its reference); run them first")
    return seconds / seconds.loc[on_policy], seconds


# ---------------------------------------------------------------------------- writing
def _cell(mean, spread, n, digits: int, bold: bool, latex: bool) -> str:
    if mean != mean:  # NaN: the run is missing
        return "–"
    text = f"{mean:.{digits}f}"
    if spread == spread:  # not NaN
        text += (r" $\pm$ " if latex else " ± ") + f"{spread:.{digits}f}"
        if n == n and n > 1:
            text += f" ({int(n)})"
    if bold:
        return rf"\textbf{{{text}}}" if latex else f"**{text}**"
    return text


def ci_half_widths(std, n):
    """Each cell's 95 % t-interval half-width over its n seeds (NaN where n < 2)."""
    from adaswitch_lib.stats import t_half_width

    out = std.copy()
    for row in std.index:
        for col in std.columns:
            count = n.loc[row, col]
            out.loc[row, col] = t_half_width(std.loc[row, col], int(count) if count == count else 0)
    return out


def formatted(
    mean,
    spread=None,
    digits: int = 2,
    best: str | None = "max",
    exclude=("Teacher", "Student"),
    latex: bool = False,
    n=None,
):
    """A table of strings: mean (± spread, and (n) where `n` is given and above 1), the best of
    each column (over rows not in `exclude`) in bold."""
    spread = mean * float("nan") if spread is None else spread
    n = mean * float("nan") if n is None else n
    candidates = mean.drop(index=[r for r in exclude if r in mean.index])
    best_value = (candidates.max() if best == "max" else candidates.min()) if best else None
    out = mean.copy().astype(object)
    for row in mean.index:
        for col in mean.columns:
            is_best = (
                best is not None
                and row in candidates.index
                and mean.loc[row, col] == best_value[col]
            )
            out.loc[row, col] = _cell(
                mean.loc[row, col], spread.loc[row, col], n.loc[row, col], digits, is_best, latex
            )
    return out


def write_table(
    name: str,
    mean,
    spread=None,
    out_dir: Path = Path("results/tables"),
    digits: int = 2,
    best: str | None = "max",
    exclude=("Teacher", "Student"),
    note: str = "",
    n=None,
) -> dict[str, Path]:
    """`<name>.csv` (means, and `<col> ci95` / `<col> n` columns when seeds exist), `<name>.md`
    and `<name>.tex` (mean ± spread (n), best in bold). `note` is appended to the Markdown (e.g.
    the paper's table beside ours)."""
    out_dir = Path(out_dir)
    mean = mean.rename_axis(index="method", columns=None)
    spread = None if spread is None else spread.rename_axis(index="method", columns=None)
    n = None if n is None else n.rename_axis(index="method", columns=None)
    csv = mean.copy()
    if spread is not None and spread.notna().any().any():
        for col in mean.columns:
            csv[f"{col} ci95"] = spread[col]
            if n is not None:
                csv[f"{col} n"] = n[col]
    paths = {kind: out_dir / f"{name}.{kind}" for kind in ("csv", "md", "tex")}
    atomic.write_text(paths["csv"], csv.rename_axis("method").to_csv(float_format="%.4f"))
    atomic.write_text(
        paths["md"],
        formatted(mean, spread, digits, best, exclude, n=n)
        .rename_axis("method")
        .to_markdown(disable_numparse=True)
        + "\n"
        + (f"\n{note}\n" if note else ""),
    )
    tex = formatted(mean, spread, digits, best, exclude, latex=True, n=n).rename_axis("method")
    atomic.write_text(
        paths["tex"], tex.to_latex(escape=False, column_format="l" + "r" * len(tex.columns))
    )
    return paths


def cells_against(mean, half_width, n, earlier):
    """Each Table 1 cell beside an earlier table's (another profile or regeneration): the new mean,
    its 95 % half-width and n, the earlier value, their difference, and whether the earlier value
    lies inside the new interval ("n/a" where the new cell has one seed). Cells missing from
    either table are left out."""
    import pandas as pd

    rows = []
    for method in mean.index:
        for cell in mean.columns:
            new, old = mean.loc[method, cell], _at(earlier, method, cell)
            if new != new or old is None or old != old:
                continue
            half = half_width.loc[method, cell]
            inside = "n/a" if half != half else ("yes" if abs(new - old) <= half else "no")
            rows.append(
                dict(
                    method=method,
                    cell=cell,
                    new=new,
                    ci95=half,
                    n=int(n.loc[method, cell]),
                    earlier=old,
                    difference=new - old,
                    inside=inside,
                )
            )
    return pd.DataFrame(rows)


def _at(table, row, column):
    if row in table.index and column in table.columns:
        return table.loc[row, column]
    return None


def write_report_table(profile: Profile, name: str, results_dir: str = "results", records=None):
    """Build Table 1 or 2 and write it (CSV, Markdown with the paper's table beside, LaTeX) into
    results/<profile>/tables/; returns (mean, spread) for display: Table 1's 95 % interval
    half-widths over seeds, None for Table 2."""
    n = None
    if name == "table1":
        mean, std, n = table1(profile, records, results_dir)
        spread, best = ci_half_widths(std, n), "max"
    elif name == "table2":
        (mean, _), spread, best = table2(profile, records, results_dir), None, None
    else:
        raise KitError(f"unknown table {name!r}; valid names: table1, table2")
    what = (
        "ROUGE-L / accuracy %"
        if name == "table1"
        else "whole distillation time relative to on-policy"
    )
    note = f"The paper ({what}):\n\n{paper_table(name).to_markdown(floatfmt='.2f')}"
    if name == "table1" and (n > 1).any().any():
        note = (
            "± is the half-width of the 95 % t interval over the seeds, and (n) their number; a "
            "cell without them has one seed.\n\n" + note
        )
    write_table(
        name, mean, spread, Path(results_dir) / profile.name / "tables", best=best, note=note, n=n
    )
    return mean, spread


def compare_table1(profile: Profile, earlier: str, results_dir: str = "results") -> str:
    """`cells_against` for a profile's Table 1 and another profile's committed `table1.csv`, as
    Markdown: which differences fall inside the new intervals."""
    import pandas as pd

    path = Path(results_dir) / earlier / "tables" / "table1.csv"
    if not path.exists():
        raise KitError(f"no {path}; run ./run_all.sh --profile {earlier} --only table1 first")
    mean, std, n = table1(profile, None, results_dir)
    old = pd.read_csv(path, index_col="method")
    cells = cells_against(mean, ci_half_widths(std, n), n, old)
    inside = cells["inside"].value_counts().to_dict()
    return (
        cells.to_markdown(index=False, floatfmt=".2f")
        + f"\n\nearlier value inside the new 95 % interval: {inside.get('yes', 0)} cells; "
        f"outside: {inside.get('no', 0)}; one seed (no interval): {inside.get('n/a', 0)}"
    )


def write_tables(profile: Profile, results_dir: str = "results") -> list[str]:
    """Table 1 and Table 2 of a profile; a table whose records are missing is reported and
    skipped."""
    records, written = load_records(profile.name, results_dir), []
    for name in ("table1", "table2"):
        try:
            write_report_table(profile, name, results_dir, records)
            written.append(name)
        except KitError as error:
            print(f"report: {name} skipped: {error}", file=sys.stderr)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Write Table 1 and Table 2 of a profile from its run records."
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument(
        "--against",
        metavar="PROFILE",
        help="print each Table 1 cell beside this profile's committed Table 1 instead of writing",
    )
    args = parser.parse_args(argv)
    try:
        if args.against:
            print(compare_table1(get_profile(args.profile), args.against, args.results_dir))
            return 0
        written = write_tables(get_profile(args.profile), args.results_dir)
    except KitError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    for name in written:
        print(f"{name}: {args.results_dir}/{args.profile}/tables/{name}.{{csv,md,tex}}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
