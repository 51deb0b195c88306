"""Calibrating a profile's distillation regime: a grid of runs side by side, then the regime check.

Runs every (pair, task, method, seed) of the grid as `python -m adaswitch_lib distill` jobs, a few
at a time with one torch thread each, into a results folder of its own (finished runs are skipped,
so an interrupted calibration continues), and prints `adaswitch_lib.regime`'s table for them.
Profile overrides (`--set`) make the setting under test; docs/calibration.md keeps the outcomes.

    python benchmarks/calibrate.py --results-dir /tmp/cal-lr1e-3 --set kd_lr=1e-3 \
        --pairs tiny-qwen --tasks synth_gsm --methods off_policy,on_policy,adaswitch --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def job_command(args, pair: str, task: str, method: str, seed: str) -> list[str]:
    command = [sys.executable, "-m", "adaswitch_lib", "distill", "--profile", args.profile]
    for item in args.set:
        command += ["--set", item]
    command += ["--pair", pair, "--task", task, "--method", method, "--seed", seed]
    return command + ["--results-dir", args.results_dir]


def run_job(args, job) -> tuple[tuple, int, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    with open(os.path.join(args.results_dir, "calibrate.log"), "a") as log:
        done = subprocess.run(job_command(args, *job), env=env, stdout=log, stderr=log)
    return job, done.returncode, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", required=True)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE (repeatable)")
    parser.add_argument("--pairs", default="tiny-qwen,tiny-llama")
    parser.add_argument("--tasks", default="synth_gsm,synth_summ")
    parser.add_argument("--methods", default="off_policy,on_policy,adaswitch")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = parser.parse_args(argv)
    os.makedirs(args.results_dir, exist_ok=True)
    grid = list(
        itertools.product(
            *(getattr(args, k).split(",") for k in ("pairs", "tasks", "methods", "seeds"))
        )
    )
    # a pair not yet prepared first, one job each, so that two jobs never prepare it at once
    from adaswitch_lib.config import get_profile, parse_overrides
    from adaswitch_lib.prepare import pair_folder_if_ready

    profile = get_profile(args.profile, **parse_overrides(args.set))
    firsts = {job[:2]: job for job in grid if pair_folder_if_ready(profile, job[0], job[1]) is None}
    rest = [job for job in grid if job not in firsts.values()]
    failed = 0
    for batch in (list(firsts.values()), rest):
        with ThreadPoolExecutor(args.jobs) as pool:
            for job, rc, seconds in pool.map(lambda j: run_job(args, j), batch):
                failed += rc != 0
                print(
                    f"{' '.join(job):50s} {'ok' if rc == 0 else f'FAILED ({rc})'} {seconds:.0f} s",
                    flush=True,
                )
    from adaswitch_lib import regime

    regime_args = ["--profile", args.profile, "--results-dir", args.results_dir]
    regime_args += [f"--set={item}" for item in args.set + [f"seeds={args.seeds}"]]
    regime.main(regime_args)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
