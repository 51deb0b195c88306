"""The regime check: do a profile's runs end where their end means something?

A comparison of final scores says something about the methods only when the students neither
collapse below where they started, nor are still climbing when training stops, and end with room
on both sides (above the base student, below the teacher). This module reads each run's learning
curve (the test-subset score at every evaluation) and checks the three conditions on the curves'
seed means, per pair, task and method.

    python -m adaswitch_lib.regime --profile cpu [--results-dir results] [--curves]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from adaswitch_lib.config import (
    Profile,
    add_profile_options,
    get_profile,
    profile_overrides_from_args,
)
from adaswitch_lib.data import task_kind
from adaswitch_lib.prepare import CACHE_ROOT
from adaswitch_lib.report import planned_records


@dataclass(frozen=True)
class Tolerances:
    """How far a curve may dip, drift and crowd the ends, in the task's own points."""

    collapse: float  # the seed-mean curve's lowest point may fall this far below its start
    late_move: float  # its range over the last `late_share` of the steps
    room: float  # the final score's distance from base student and teacher, at least
    late_share: float = 0.2


# accuracy points on GSM, ROUGE-L points on summarisation
TOLERANCES = {
    "gsm": Tolerances(collapse=5.0, late_move=3.0, room=5.0),
    "summ": Tolerances(collapse=2.0, late_move=1.0, room=1.0),
}


def learning_curves(records):
    """One row per evaluation of every distillation run in `records` (load_records' frame):
    pair, task, method, seed, steps, step and score (the test subset's)."""
    import pandas as pd

    rows = []
    for run in records[records["kind"] == "distillation"].itertuples():
        record = json.loads((Path(run.folder) / "record.json").read_text())
        for entry in record.get("evaluations", []):
            if "test_subset" in entry:
                rows.append(
                    dict(
                        pair=run.pair,
                        task=run.task,
                        method=run.method,
                        seed=run.seed,
                        steps=run.steps,
                        step=entry["step"],
                        score=entry["test_subset"],
                    )
                )
    return pd.DataFrame(rows)


def _ends(records, runs) -> tuple[float | None, float | None]:
    """(base student, teacher) full-test scores of the pair the runs distil: from their Table 1
    records, else from the prepared pair's metrics.json."""
    first = runs.iloc[0]
    score = f"metrics.{first.task}_score"
    ends = []
    for kind in ("student", "teacher"):
        rows = records[
            (records["kind"] == kind)
            & (records["pair"] == first.pair)
            & (records["task"] == first.task)
        ]
        ends.append(float(rows[score].iloc[0]) if len(rows) and score in rows else None)
    if None in ends:  # a run made outside the pipeline: the prepared pair's own scores
        name = json.loads((Path(first.folder) / "record.json").read_text()).get("pair_folder")
        found = sorted(CACHE_ROOT.glob(f"*/{name}/metrics.json")) if name else []
        if found:
            prepared = json.loads(found[0].read_text())
            ends = [prepared.get("student_score"), prepared.get("teacher_score")]
    return tuple(ends)


def check_curves(curve, final: float, base, teacher, tolerances: Tolerances) -> dict:
    """The three conditions for one method's runs: `curve` holds (seed, step, score) rows, `final`
    is the seed-mean final score, `base` and `teacher` the pair's (None when unknown)."""
    mean = curve.groupby("step")["score"].mean()
    last_step = int(mean.index.max())
    late = mean[mean.index >= (1 - tolerances.late_share) * last_step]
    dip = float(mean.iloc[0] - mean.min())
    # how long a dip lasts: a student that loses ground for a few evaluations while it learns
    # what it lacked differs from one that never recovers
    after = mean[mean.index >= mean.idxmin()]
    back = after[after >= mean.iloc[0]]
    late_move = float(late.max() - late.min())
    room = None
    if base is not None and teacher is not None:
        room = base + tolerances.room <= final <= teacher - tolerances.room
    return dict(
        seeds=curve["seed"].nunique(),
        base=base,
        teacher=teacher,
        final=round(final, 2),
        dip=round(dip, 2),
        lowest_at=int(mean.idxmin()),
        back_at=int(back.index[0]) if len(back) else None,
        late_move=round(late_move, 2),
        no_collapse=dip <= tolerances.collapse,
        converged=late_move <= tolerances.late_move,
        room=room,
    )


def regime_table(profile: Profile, records):
    """Per pair, task and method: seeds, base and teacher scores, the seed-mean final score and
    learning curve's lowest dip (its step, and the first step back at the start) and late range,
    and whether each condition holds. Only Table 1's
    runs of `profile` count (one divergence, the default K and L)."""
    import pandas as pd

    main_runs = planned_records(profile, records, "table1")
    curves = learning_curves(main_runs)
    if curves.empty:
        return pd.DataFrame()
    runs = main_runs[main_runs["kind"] == "distillation"]
    rows = []
    for (pair, task, method), curve in curves.groupby(["pair", "task", "method"], sort=True):
        finals = runs[(runs["pair"] == pair) & (runs["task"] == task) & (runs["method"] == method)]
        final = float(finals[f"metrics.{task}_score"].mean())
        base, teacher = _ends(main_runs, finals)
        checked = check_curves(curve, final, base, teacher, TOLERANCES[task_kind(task)])
        rows.append(dict(pair=pair, task=task, method=method, **checked))
    return pd.DataFrame(rows)


def seed_mean_curves(profile: Profile, records, every: int = 100):
    """The seed-mean learning curves of Table 1's runs, one row per pair, task and method, one
    column per `every` steps (what the regime check reads, for the docs)."""
    curves = learning_curves(planned_records(profile, records, "table1"))
    if curves.empty:
        return curves
    curves = curves[curves["step"] % every == 0]
    return curves.pivot_table(
        index=["pair", "task", "method"], columns="step", values="score", aggfunc="mean"
    ).round(1)


def main(argv=None) -> int:
    from adaswitch_lib.results import load_records

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_profile_options(parser)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument(
        "--curves", action="store_true", help="also print the seed-mean curves, every 100 steps"
    )
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, **profile_overrides_from_args(args))
    records = load_records(args.profile, args.results_dir)
    table = regime_table(profile, records)
    if table.empty:
        print(f"no distillation runs of profile {args.profile!r} under {args.results_dir}")
        return 1
    print(table.to_markdown(index=False))
    if args.curves:
        print(f"\n{seed_mean_curves(profile, records).to_markdown()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
