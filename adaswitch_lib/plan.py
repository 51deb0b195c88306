"""Which runs each table and figure needs: the one source of truth for `./run_all.sh` and the
report notebooks. A run that feeds several artifacts (Table 1's AdaSwitch run feeds Table 2 and
Figures 4-9) appears once, with every artifact it feeds.

    python -m adaswitch_lib.plan --profile cpu            # every run of the profile, one per line
    python -m adaswitch_lib.plan --profile cpu --only fig6
    python -m adaswitch_lib.plan --memory --profile colab --gpu t4   # peak GPU memory per phase

The grids come from the profile: `seeds` (`unclaimed_seed_count` for the runs no claim reads), and
`figure_pairs`, `figure_tasks`, `fig3_*`, `fig6_*` for the figures the cpu profile shrinks to fit
its time budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from adaswitch_lib.config import (
    Profile,
    RunConfig,
    add_profile_options,
    get_profile,
    profile_overrides_from_args,
    run_id,
)
from adaswitch_lib.data import task_kind
from adaswitch_lib.errors import KitError
from adaswitch_lib.methods import EARLY_METHODS, METHODS

ARTIFACTS = ("table1", "table2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9")
TABLE2_METHODS = ("off_policy", "on_policy", "skd", "adaswitch")  # paper Table 2's rows
DEFAULT_K, DEFAULT_WINDOW = 3.0, 10  # paper §3.3, and RunConfig's defaults
# Table 1's SUMM rows a claim reads (claims.md: b, c, d); every GSM row is read (a)
CLAIMED_SUMM_METHODS = ("off_policy", "on_policy", "adaswitch")


@dataclasses.dataclass
class PlannedRun:
    run: RunConfig
    artifacts: list[str]

    @property
    def run_id(self) -> str:
        return run_id(self.run)

    @property
    def label(self) -> str:
        r = self.run
        extra = "" if r.divergence == "forward_kl" else f" {r.divergence}"
        if r.method == "adaswitch" and (r.adaswitch_k, r.adaswitch_window) != (
            DEFAULT_K,
            DEFAULT_WINDOW,
        ):
            extra += f" K={r.adaswitch_k:g} L={r.adaswitch_window}"
        return f"{r.pair} {r.task} {r.method}{extra} s{r.seed}"


def figure_pairs(profile: Profile) -> tuple:
    return profile.figure_pairs or profile.pairs


def figure_tasks(profile: Profile) -> tuple:
    return profile.figure_tasks or profile.train_tasks


def claimed(task: str, method: str) -> bool:
    """Whether a claim of claims.md reads this Table 1 cell, and so needs every seed: each GSM row
    (a: AdaSwitch against each method; b: on- against off-policy) and, on SUMM, off- and on-policy
    (b) and AdaSwitch (c, d: its switches)."""
    return task_kind(task) != "summ" or method in CLAIMED_SUMM_METHODS


def run_seeds(profile: Profile, is_claimed: bool) -> tuple:
    """The seeds of a run that a claim reads (all) or that none reads (the first
    `unclaimed_seed_count`, so that they pair with the claimed runs of the same seeds)."""
    return profile.seeds[: None if is_claimed else profile.unclaimed_seed_count or None]


def _grid(
    profile: Profile, pairs, tasks, methods, cells=lambda task, method: True, **fields
) -> list[RunConfig]:
    """Runs of every (pair, task, method) and its seeds; `cells(task, method)` says whether a claim
    reads the cell (see `claimed`)."""
    return [
        RunConfig(profile, pair=pair, task=task, method=method, seed=seed, **fields)
        for pair in pairs
        for task in tasks
        for method in methods
        for seed in run_seeds(profile, cells(task, method))
    ]


def artifact_runs(profile: Profile, artifact: str) -> list[RunConfig]:
    """The distillation runs one artifact reads (Table 1 also reads the pairs' teacher and
    student records, which preparation writes)."""
    every = dict(pairs=profile.pairs, tasks=profile.train_tasks)
    if artifact == "table1":
        return _grid(profile, methods=tuple(METHODS), cells=claimed, **every)
    if artifact == "table2":  # claim e is about time: the runs of Table 1, whatever their seeds
        return _grid(profile, methods=TABLE2_METHODS, cells=claimed, **every)
    # switch statistics of the AdaSwitch runs (4: first pair only)
    if artifact in ("fig4", "fig7", "fig9"):
        pairs = profile.pairs[:1] if artifact == "fig4" else profile.pairs
        return _grid(profile, pairs, profile.train_tasks, ("adaswitch",))
    if artifact in ("fig5", "fig8"):  # early-stage curves (5: first pair only)
        pairs = profile.pairs[:1] if artifact == "fig5" else profile.pairs
        return _grid(profile, pairs, profile.train_tasks, EARLY_METHODS)
    if artifact == "fig3":
        return [
            run
            for divergence in profile.fig3_divergences
            for run in _grid(
                profile,
                figure_pairs(profile),
                figure_tasks(profile),
                profile.fig3_methods,
                cells=lambda task, method: False,  # no claim reads Figure 3
                divergence=divergence,
            )
        ]
    if artifact == "fig6":
        grid = dict(
            pairs=figure_pairs(profile), tasks=figure_tasks(profile), methods=("adaswitch",)
        )
        return [
            run for k in profile.fig6_k for run in _grid(profile, **grid, adaswitch_k=float(k))
        ] + [
            run
            for w in profile.fig6_window
            for run in _grid(profile, **grid, adaswitch_window=int(w))
        ]
    raise KitError(f"unknown artifact {artifact!r}; valid names: {', '.join(ARTIFACTS)}")


def parse_only(only=None) -> tuple:
    """`--only table1,fig6` (or a list of names) -> ("table1", "fig6"); None or "" -> every
    artifact."""
    if isinstance(only, str):
        only = only.split(",")
    names = tuple(a.strip() for a in (only or ()) if a.strip()) or ARTIFACTS
    for name in names:
        if name not in ARTIFACTS:
            raise KitError(
                f"unknown artifact {name!r} in --only; valid names: {', '.join(ARTIFACTS)}"
            )
    return names


def plan_runs(profile: Profile, only=None) -> list[PlannedRun]:
    """Every distinct run the chosen artifacts need, in a stable order, each with its artifacts."""
    planned: dict[str, PlannedRun] = {}
    for artifact in parse_only(only):
        for run in artifact_runs(profile, artifact):
            entry = planned.setdefault(run_id(run), PlannedRun(run, []))
            if artifact not in entry.artifacts:
                entry.artifacts.append(artifact)
    return list(planned.values())


def plan_preparations(profile: Profile, runs: list[PlannedRun]) -> list[tuple[str, str]]:
    """The (pair, task) sets the runs use, in profile order; preparing one also writes its Teacher
    and Student records (Table 1's first rows)."""
    needed = {(p.run.pair, p.run.task) for p in runs}
    return [
        (pair, task)
        for pair in profile.pairs
        for task in profile.train_tasks
        if (pair, task) in needed
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="List the runs each table and figure needs.")
    add_profile_options(parser)
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(ARTIFACTS)}"
    )
    parser.add_argument(
        "--memory", action="store_true", help="print each phase's peak GPU memory instead"
    )
    parser.add_argument("--gpu", default="", help="with --memory: t4, l4, a100-40, a100-80, h100")
    args = parser.parse_args(argv)
    try:
        profile = get_profile(args.profile, **profile_overrides_from_args(args))
        if args.memory:
            from adaswitch_lib.memory import advice, memory_table

            gpus = [g for g in args.gpu.split(",") if g] or None
            print(memory_table(profile, gpus).to_string(index=False))
            for line in advice(profile, gpus):
                print(line)
            return 0
        runs = plan_runs(profile, args.only)
    except KitError as error:
        print(f"plan: {error}", file=sys.stderr)
        return 2
    for i, planned in enumerate(runs, 1):
        print(f"[{i:>3}] {planned.label:<48} {planned.run_id:<52} {','.join(planned.artifacts)}")
    print(
        f"{len(runs)} runs; preparations: "
        f"{', '.join(f'{p}/{t}' for p, t in plan_preparations(profile, runs))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
