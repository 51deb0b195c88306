"""Figures 3-9 from run records and step logs, as PNG + PDF (seaborn paper theme, colour-blind
palette, TrueType fonts embedded in the PDF).

    python -m adaswitch_lib.figures --profile smoke     # writes results/smoke/figures/*

Figure 3: KD methods under the profile's divergences (forward KL / JSD / reverse KL); 4 and 7:
switch rate and KLD at the switch token over training; 5 and 8: validation loss and test metric
early in training; 6: K and L; 9: relative switch position over training. 4 and 5 show the first
pair, 7 and 8 every pair."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from adaswitch_lib.config import Profile, get_profile, run_id
from adaswitch_lib.data import ROBUSTNESS_TWIN
from adaswitch_lib.errors import KitError
from adaswitch_lib.plan import DEFAULT_K, DEFAULT_WINDOW, artifact_runs
from adaswitch_lib.report import COLUMN_LABEL, pair_label
from adaswitch_lib.results import load_records

FIGURES = {
    "fig3": "fig3_divergences",
    "fig4": "fig4_switch_rate_kld",
    "fig5": "fig5_early_stage",
    "fig6": "fig6_k_and_l",
    "fig7": "fig7_switch_rate_kld_all",
    "fig8": "fig8_early_stage_all",
    "fig9": "fig9_switch_position",
}
SWITCH_COLUMNS = {
    "switch_rate": "switch rate",
    "d_at_switch": "KLD at the switch token",
    "relative_switch_position": "relative switch position",
}

# bands and bars: the 95 % interval of the mean over seeds (seaborn's bootstrap, seeded, so a
# regeneration draws the same figure); a point with one seed gets none
SEED_INTERVAL = dict(errorbar=("ci", 95), seed=0)


def use_paper_style() -> None:
    import matplotlib
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update(
        {"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "figure.dpi": 110}
    )


def save_figure(fig, name: str, out_dir: Path) -> list[Path]:
    """`<name>.png` and `<name>.pdf`, each written to a temp file and renamed into place."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("png", "pdf"):
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{kind}")
        os.close(fd)
        # no creation date in the PDF: regenerating unchanged results leaves the files unchanged
        fig.savefig(
            tmp,
            format=kind,
            dpi=200 if kind == "png" else None,
            metadata={"CreationDate": None} if kind == "pdf" else None,
        )
        os.replace(tmp, out_dir / f"{name}.{kind}")
        paths.append(out_dir / f"{name}.{kind}")
    return paths


def read_log(folder):
    """A run's step log (log.jsonl) as a DataFrame; `seconds.*` columns hold the time split."""
    import pandas as pd

    rows = [
        json.loads(line)
        for line in (Path(folder) / "log.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return pd.json_normalize(rows)


def _records_for(profile: Profile, records, artifact: str):
    wanted = {run_id(run) for run in artifact_runs(profile, artifact)}
    found = records[records["run_id"].isin(wanted)] if not records.empty else records
    if found.empty:
        raise KitError(
            f"{artifact}: none of its {len(wanted)} runs has a record yet; "
            f"run ./run_all.sh --profile {profile.name} --only {artifact} first"
        )
    return found.assign(
        pair_label=[pair_label(p, profile.pairs) for p in found["pair"]],
        task_label=[COLUMN_LABEL.get(t, t) for t in found["task"]],
    )


def switch_statistics(profile: Profile, records, artifact: str = "fig7", bins: int = 10):
    """Switch statistics of the AdaSwitch runs, averaged over `bins` equal windows of training
    (the paper: every 100 steps over the first 1,000)."""
    import pandas as pd

    frames = []
    for _, r in _records_for(profile, records, artifact).iterrows():
        log = read_log(r["folder"])
        width = max(1, -(-int(log["step"].max()) // bins))
        log["step_bin"] = ((log["step"] - 1) // width + 1) * width
        means = (
            log.groupby("step_bin")[[c for c in SWITCH_COLUMNS if c in log]].mean().reset_index()
        )
        frames.append(means.assign(pair=r["pair_label"], task=r["task_label"], seed=r["seed"]))
    return pd.concat(frames, ignore_index=True)


def figure_switch(profile: Profile, records, artifact: str, columns=("switch_rate", "d_at_switch")):
    """Figures 4/7 (switch rate, KLD at the switch token) and 9 (relative switch position)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    stats = switch_statistics(profile, records, artifact)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 2.8), squeeze=False)
    for ax, column in zip(axes[0], columns):
        last = ax is axes[0][-1]
        sns.lineplot(
            stats,
            x="step_bin",
            y=column,
            hue="task",
            style="pair",
            marker="o",
            ax=ax,
            **SEED_INTERVAL,
            legend=last,
        )
        ax.set(xlabel="training step", ylabel=SWITCH_COLUMNS[column])
        if last:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1), frameon=False)
    fig.tight_layout()
    return fig


def early_stage(profile: Profile, records, artifact: str = "fig8"):
    """Validation loss and test-subset metric at every evaluation of the on-policy, off-policy and
    AdaSwitch runs, in long form."""
    import pandas as pd

    rows = []
    for _, r in _records_for(profile, records, artifact).iterrows():
        record = json.loads((Path(r["folder"]) / "record.json").read_text())
        for e in record.get("evaluations", []):
            rows.append(
                dict(
                    step=e["step"],
                    val_loss=e.get("val_loss"),
                    test_subset=e.get("test_subset"),
                    method=r["method_label"],
                    pair=r["pair_label"],
                    task=r["task_label"],
                    seed=r["seed"],
                )
            )
    return pd.DataFrame(rows)


def figure_early(profile: Profile, records, artifact: str):
    """Figures 5/8: the early stage (the profile's dense evaluation window) of training."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = early_stage(profile, records, artifact)
    data = data[data["step"] <= max(profile.eval_early_steps, profile.eval_every_early)]
    panels = sorted(set(zip(data["pair"], data["task"])))
    fig, axes = plt.subplots(
        2, len(panels), figsize=(3.2 * len(panels), 5.2), squeeze=False, sharex=True
    )
    for j, (pair, task) in enumerate(panels):
        part = data[(data["pair"] == pair) & (data["task"] == task)]
        for i, (column, label) in enumerate(
            (("val_loss", "validation loss"), ("test_subset", f"test {task}"))
        ):
            sns.lineplot(
                part,
                x="step",
                y=column,
                hue="method",
                marker="o",
                ax=axes[i][j],
                **SEED_INTERVAL,
                legend=(i == 0 and j == 0),
            )
            axes[i][j].set(
                xlabel="training step", ylabel=label, title=f"{pair} {task}" if i == 0 else ""
            )
    return fig


def final_scores(profile: Profile, records, artifact: str):
    """Final scores of an artifact's runs in long form: one row per (run, evaluated task)."""
    import pandas as pd

    rows = []
    for _, r in _records_for(profile, records, artifact).iterrows():
        for task in (r["task"], ROBUSTNESS_TWIN.get(r["task"])):
            value = r.get(f"metrics.{task}_score") if task else None
            if task in profile.eval_tasks and value is not None and value == value:
                rows.append(
                    dict(
                        r[
                            [
                                "method_label",
                                "divergence",
                                "adaswitch_k",
                                "adaswitch_window",
                                "seed",
                                "pair_label",
                            ]
                        ],
                        column=COLUMN_LABEL.get(task, task),
                        score=value,
                    )
                )
    return pd.DataFrame(rows)


def figure_divergences(profile: Profile, records):
    """Figure 3: final score of each KD method under each divergence, one panel per task."""
    import seaborn as sns

    data = final_scores(profile, records, "fig3")
    data["panel"] = data["pair_label"] + " " + data["column"]
    grid = sns.catplot(
        data,
        kind="bar",
        x="method_label",
        y="score",
        hue="divergence",
        col="panel",
        sharey=False,
        height=2.8,
        aspect=1.2,
        **SEED_INTERVAL,
    )
    grid.set_axis_labels("", "score").set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return grid.figure


def figure_k_and_l(profile: Profile, records):
    """Figure 6: final score against K (L = 10) and against L (K = 3)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = final_scores(profile, records, "fig6")
    data["panel"] = data["pair_label"] + " " + data["column"]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    k_part = data[data["adaswitch_window"] == DEFAULT_WINDOW]
    l_part = data[data["adaswitch_k"] == DEFAULT_K]
    for ax, part, x in ((axes[0], k_part, "adaswitch_k"), (axes[1], l_part, "adaswitch_window")):
        sns.lineplot(part, x=x, y="score", hue="panel", marker="o", ax=ax, **SEED_INTERVAL)
    axes[0].set(xlabel=f"K (L = {DEFAULT_WINDOW})")
    axes[1].set(xlabel=f"L (K = {DEFAULT_K:g})")
    return fig


def plot_run(folder):
    """One run at a glance (the distill notebook): loss per step, and the switch statistics of an
    AdaSwitch run or the replacement rate of an SKD run."""
    import matplotlib.pyplot as plt

    log = read_log(folder)
    extra = [c for c in (*SWITCH_COLUMNS, "replacement_rate") if c in log]
    fig, axes = plt.subplots(
        1, 1 + len(extra), figsize=(3.2 * (1 + len(extra)), 2.6), squeeze=False
    )
    smooth = max(1, len(log) // 20)
    for ax, column in zip(axes[0], ("loss", *extra)):
        ax.plot(log["step"], log[column], alpha=0.3)
        ax.plot(log["step"], log[column].rolling(smooth, min_periods=1).mean())
        ax.set(xlabel="step", ylabel=SWITCH_COLUMNS.get(column, column.replace("_", " ")))
    fig.tight_layout()
    return fig


def build_figure(profile: Profile, name: str, records=None, results_dir: str = "results"):
    """One figure ("fig3" ... "fig9") of a profile, from its records (loaded when not given)."""
    records = load_records(profile.name, results_dir) if records is None else records
    builders = {
        "fig3": lambda: figure_divergences(profile, records),
        "fig4": lambda: figure_switch(profile, records, "fig4"),
        "fig5": lambda: figure_early(profile, records, "fig5"),
        "fig6": lambda: figure_k_and_l(profile, records),
        "fig7": lambda: figure_switch(profile, records, "fig7"),
        "fig8": lambda: figure_early(profile, records, "fig8"),
        "fig9": lambda: figure_switch(profile, records, "fig9", ("relative_switch_position",)),
    }
    if name not in builders:
        raise KitError(f"unknown figure {name!r}; valid names: {', '.join(builders)}")
    use_paper_style()
    return builders[name]()


def write_figure(profile: Profile, name: str, results_dir: str = "results", records=None):
    """Build one figure and save it as results/<profile>/figures/<file>.{png,pdf}; returns the
    figure."""
    fig = build_figure(profile, name, records, results_dir)
    save_figure(fig, FIGURES[name], Path(results_dir) / profile.name / "figures")
    return fig


def write_figures(
    profile: Profile, results_dir: str = "results", only=None
) -> dict[str, list[Path]]:
    """Every figure of the profile (or those in `only`); one whose runs are missing is reported
    and skipped."""
    import matplotlib.pyplot as plt

    records = load_records(profile.name, results_dir)
    written = {}
    for name in only or FIGURES:
        try:
            fig = write_figure(profile, name, results_dir, records)
        except KitError as error:
            print(f"figures: {name} skipped: {error}", file=sys.stderr)
            continue
        written[name] = [
            Path(results_dir) / profile.name / "figures" / f"{FIGURES[name]}.{k}"
            for k in ("png", "pdf")
        ]
        plt.close(fig)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Write Figures 3-9 of a profile from its run records."
    )
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    written = write_figures(get_profile(args.profile), args.results_dir)
    for name, paths in written.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
