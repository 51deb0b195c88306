"""The main job behind `./run_all.sh`: prepare the pairs, execute every missing run through
papermill, then the report notebooks that write the tables, figures and claims.

    python -m adaswitch_lib.pipeline --profile smoke
    python -m adaswitch_lib.pipeline --profile cpu --only table1,fig6 --jobs 2 --dry-run

Each run executes `notebooks/03_distill.ipynb` in its own process (a kernel started by papermill
with `-k python3`), with `cores // jobs` torch threads: oversubscribed threads are many times
slower on a small machine. Finished runs are skipped, so an interrupted pipeline continues where
it stopped; a run's record appears only when the run is complete. Console: one line per job; the
notebooks' own output goes to `results/<profile>/logs/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from adaswitch_lib import atomic, kernels, runtime
from adaswitch_lib.config import (
    Profile,
    add_profile_options,
    baseline_id,
    config_hash,
    get_profile,
    profile_overrides,
    profile_overrides_from_args,
    run_id,
)
from adaswitch_lib.data import token_limits
from adaswitch_lib.errors import KitError
from adaswitch_lib.notebook import project_root
from adaswitch_lib.plan import ARTIFACTS, parse_only, plan_preparations, plan_runs
from adaswitch_lib.prepare import CACHE_ROOT, pair_folder_if_ready, task_sft_steps
from adaswitch_lib.results import provenance, run_folder

NOTEBOOKS = project_root(Path(__file__).parent) / "notebooks"
REPORTS = {
    "table1": "04_table1.ipynb",
    "table2": "05_table2.ipynb",
    "fig3": "06_fig3.ipynb",
    "fig4": "07_fig4_fig7.ipynb",
    "fig7": "07_fig4_fig7.ipynb",
    "fig5": "08_fig5_fig8.ipynb",
    "fig8": "08_fig5_fig8.ipynb",
    "fig6": "09_fig6.ipynb",
    "fig9": "10_fig9.ipynb",
}
CLAIMS = "11_claims.ipynb"
PHASES = ("prepare", "distill", "report")  # each phase needs the one before it
# Rough seconds per KD step (its evaluations included) of one 1-thread process on the cpu profile's
# shapes, for the time estimate before any run of the method has finished (measured records replace
# them): the medians of the committed cpu run's jobs (results/cpu/manifest.json), less JOB_OVERHEAD,
# over 500 steps. Hosts differ (docs/reproducibility.md).
SECONDS_PER_STEP = {
    "sft": 0.08,
    "seqkd": 0.095,
    "off_policy": 0.15,
    "on_policy": 0.18,
    "imitkd": 0.18,
    "skd": 0.25,
    "adaswitch": 0.24,
}
JOB_OVERHEAD = 8.0  # seconds: papermill, a kernel, the imports, loading the pair
# ... and per (SFT step x token of the task's length budget), teacher and base student, for
# preparation
SECONDS_PER_STEP_TOKEN = {"teacher": 0.002, "student": 0.00053}


@dataclass
class Job:
    kind: str  # "prepare" | "distill" | "report"
    label: str  # what the progress line says
    notebook: str  # file in notebooks/
    parameters: dict
    name: str  # file stem of its executed notebook and log
    estimate: float  # seconds, for the plan's time estimate
    done: bool = False  # finished before this pipeline started (skipped)
    # folder the executed notebook moves into on success (a run's record)
    keep_in: Path | None = None
    seconds: float = field(default=0.0)


def default_jobs(profile: Profile) -> int:
    """Parallel processes: one per core for the tiny offline pairs, one for Hub-size models."""
    return max(1, os.cpu_count() or 1) if profile.offline else 1


def _estimate(profile: Profile, run, history) -> float:
    """A run's seconds: the median of the finished runs of its method, else a roofline from the
    shapes on this machine's GPU (Hub pairs, runtime.py), else the cpu profile's per-step
    constants."""
    method = run.method
    if history is not None and not history.empty and "timings.total" in history:
        same = history[(history["kind"] == "distillation") & (history["method"] == method)]
        if not same.empty:
            return float(same["timings.total"].median())
    if not profile.offline:
        gpu = runtime.detected_gpu()
        return runtime.distill_seconds(profile, run.pair, run.task, method, gpu) + JOB_OVERHEAD
    steps = profile.kd_steps or 100
    return (
        10.0
        if profile.name == "smoke"
        else steps * SECONDS_PER_STEP.get(method, 0.25) + JOB_OVERHEAD
    )


def _prepare_estimate(profile: Profile, pair: str, task: str) -> float:
    """Seconds to prepare a pair on one core (the cpu profile's medians, results/cpu/manifest.json).
    The order matters more than the value: preparations start longest first, so that two workers
    finish together instead of one running both long ones."""
    if profile.name == "smoke":
        return 5.0
    if not pair.startswith("tiny-"):
        return runtime.prepare_seconds(profile, pair, task, runtime.detected_gpu())
    teacher_steps, warmup_steps = task_sft_steps(profile, task)
    tokens = sum(token_limits(profile, task))
    return 20.0 + tokens * (
        SECONDS_PER_STEP_TOKEN["teacher"] * (teacher_steps or 1000)
        + SECONDS_PER_STEP_TOKEN["student"] * warmup_steps
    )


def _run_jobs(profile: Profile, planned, common: dict, results_dir, cache_dir) -> list[Job]:
    """One papermill job per planned run, done when its record exists."""
    from adaswitch_lib.results import load_records

    history = load_records(profile.name, results_dir)
    jobs = []
    for item in planned:
        run = dataclasses.replace(item.run, results_dir=str(results_dir))
        params = dict(
            common,
            pair=run.pair,
            task=run.task,
            method=run.method,
            divergence=run.divergence,
            adaswitch_k=float(run.adaswitch_k),
            adaswitch_window=int(run.adaswitch_window),
            seed=run.seed,
            cache_dir=str(cache_dir),
        )
        estimate = _estimate(profile, run, history)
        done = (run_folder(run) / "record.json").is_file()
        jobs.append(
            Job(
                "distill",
                f"distill {item.label}",
                "03_distill.ipynb",
                params,
                run_id(run),
                estimate,
                done=done,
                keep_in=run_folder(run),
            )
        )
    return jobs


def _preparation_jobs(
    profile: Profile, planned, runs: list[Job], common: dict, results_dir, cache_dir
):
    """One job per pair and task; a pair is prepared only when a run still needs it (committed
    records need no models) or its Teacher/Student records are missing."""
    needed = {(j.parameters["pair"], j.parameters["task"]) for j in runs if not j.done}
    jobs = []
    for pair, task in plan_preparations(profile, planned):
        runs_dir = Path(results_dir) / profile.name / "runs"
        records = [
            runs_dir / baseline_id(profile, pair, task, who) / "record.json"
            for who in ("teacher", "student")
        ]
        ready = pair_folder_if_ready(profile, pair, task, Path(cache_dir)) is not None
        done = (ready or (pair, task) not in needed) and all(r.is_file() for r in records)
        params = dict(common, pair=pair, task=task, cache_dir=str(cache_dir))
        jobs.append(
            Job(
                "prepare",
                f"prepare {pair} {task}",
                "02_prepare.ipynb",
                params,
                f"prepare-{pair}-{task}",
                estimate=_prepare_estimate(profile, pair, task),
                done=done,
            )
        )
    return jobs


def build_jobs(
    profile: Profile, only=None, results_dir: str = "results", cache_dir: Path = CACHE_ROOT
) -> list[Job]:
    """Preparations, then runs, then reports, each marked done when its result already exists."""
    artifacts = parse_only(only)
    planned = plan_runs(profile, artifacts)
    common = dict(
        profile=profile.name,
        overrides=profile_overrides(profile),
        results_dir=str(results_dir),
        show_progress=False,
    )
    runs = _run_jobs(profile, planned, common, results_dir, cache_dir)
    jobs = _preparation_jobs(profile, planned, runs, common, results_dir, cache_dir) + runs
    reports = list(dict.fromkeys(REPORTS[a] for a in artifacts))
    if set(artifacts) == set(ARTIFACTS) and (NOTEBOOKS / CLAIMS).is_file():
        reports.append(CLAIMS)
    for notebook in reports:
        stem = Path(notebook).stem
        jobs.append(Job("report", f"report {stem}", notebook, dict(common), stem, estimate=8.0))
    return jobs


def _clock(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def execute(job: Job, profile: Profile, results_dir: str, threads: int) -> tuple[bool, Path]:
    """Run one notebook under papermill in its own process; returns (ok, where to look)."""
    logs = Path(results_dir) / profile.name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out, log = logs / f"{job.name}.ipynb", logs / f"{job.name}.log"
    command = [
        sys.executable,
        "-m",
        "papermill",
        str(NOTEBOOKS / job.notebook),
        str(out),
        "-k",
        "python3",
        "--cwd",
        str(NOTEBOOKS),
        "--log-output",
        "--no-progress-bar",
    ]
    for key, value in job.parameters.items():
        if isinstance(value, dict):  # YAML reads JSON
            command += ["-y", json.dumps({key: value})]
        else:
            command += ["-p", key, str(value)] if not isinstance(value, str) else ["-r", key, value]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        **kernels.environment(profile.cpu_kernels),
    )
    start = time.perf_counter()
    with open(log, "w") as handle:
        rc = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=project_root()
        ).returncode
    job.seconds = time.perf_counter() - start
    if rc != 0:
        return False, out
    # the executed notebook lives beside its record
    if job.keep_in is not None and job.keep_in.is_dir():
        shutil.move(str(out), job.keep_in / "distill.ipynb")
        return True, job.keep_in
    kept = Path(results_dir) / profile.name / ("reports" if job.kind == "report" else "prepare")
    kept.mkdir(parents=True, exist_ok=True)
    os.replace(out, kept / out.name)
    return True, kept / out.name


@dataclass
class _Progress:
    """The console's view of a pipeline: jobs counted as they end, time left estimated."""

    plan: list
    jobs: int
    count: int = 0

    def line(self, job, text: str) -> None:
        self.count += 1
        print(f"[{self.count}/{len(self.plan)}] {job.label} … {text}", flush=True)


def _run_phase(phase: str, progress: _Progress, profile, results_dir, threads: int) -> list:
    """Every job of one phase, `jobs` at a time, longest first (the last job to start is a short
    one, so no core idles through a long tail). Reports run side by side too: they only read the
    records, and each writes its own files. Returns the failures as (job, where)."""
    plan, jobs = progress.plan, progress.jobs
    batch = sorted(
        (j for j in plan if j.kind == phase), key=lambda j: -j.estimate if jobs > 1 else 0
    )
    later = PHASES[PHASES.index(phase) + 1 :]
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for job in batch:
            if job.done:
                progress.line(job, "finished before")
                continue
            job_threads = threads if jobs > 1 else os.cpu_count() or 1
            futures[pool.submit(execute, job, profile, results_dir, job_threads)] = job
        left = sum(j.estimate for j in futures.values())
        for future in as_completed(futures):
            job = futures[future]
            ok, where = future.result()
            left -= job.estimate
            eta = left / jobs + sum(j.estimate for j in plan if j.kind in later and not j.done)
            status = (
                f"{job.seconds:.0f} s" if ok else f"FAILED after {job.seconds:.0f} s: see {where}"
            )
            progress.line(job, f"{status}  (~{_clock(max(eta, 0))} left)")
            if not ok:
                failures.append((job, where))
    return failures


def _print_failures(failures) -> None:
    print(
        f"\n{len(failures)} job(s) failed; the executed notebooks (with papermill's error banner) "
        "and logs:",
        file=sys.stderr,
    )
    for job, where in failures:
        print(f"  {job.label}: {where} (log: {where.with_suffix('.log')})", file=sys.stderr)


def run_pipeline(
    profile: Profile,
    only=None,
    jobs: int | None = None,
    dry_run: bool = False,
    results_dir: str = "results",
    cache_dir: Path = CACHE_ROOT,
) -> int:
    """Everything the chosen artifacts need; returns the exit status (0 = all done)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    jobs = jobs or default_jobs(profile)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    plan = build_jobs(profile, only, results_dir, cache_dir)
    todo = [j for j in plan if not j.done]
    print(
        f"==> [{profile.name}] {len(plan)} jobs ({len(plan) - len(todo)} finished before), {jobs} "
        f"at a time x {threads} torch thread(s); estimated "
        f"{_clock(sum(j.estimate for j in todo) / jobs)}"
        + ("" if profile.offline else f" (a roofline on one {runtime.detected_gpu()}: runtime.py)"),
        flush=True,
    )
    if dry_run:
        for i, job in enumerate(plan, 1):
            state = "done" if job.done else f"~{_clock(job.estimate)}"
            print(f"[{i}/{len(plan)}] {job.label:<58} {state}")
        return 0
    failures, phase_seconds, progress = [], {}, _Progress(plan, jobs)
    for phase in PHASES:
        t0 = time.perf_counter()
        failures += _run_phase(phase, progress, profile, results_dir, threads)
        phase_seconds[phase] = round(time.perf_counter() - t0, 1)
        if phase == "prepare" and failures:
            break  # runs need their pairs
    manifest = Path(results_dir) / profile.name / "manifest.json"
    if failures or not manifest.is_file() or any(j.seconds for j in plan if j.kind != "report"):
        write_manifest(profile, results_dir, started, jobs, threads, phase_seconds, plan, failures)
    # only the reports ran again (same records, same files): the manifest still tells how the runs
    # were made
    else:
        print(f"==> [{profile.name}] every run finished before: {manifest} kept", flush=True)
    if failures:
        _print_failures(failures)
        return 1
    print(
        f"==> [{profile.name}] done: tables in {results_dir}/{profile.name}/tables, "
        f"figures in {results_dir}/{profile.name}/figures",
        flush=True,
    )
    return 0


def stale_records(profile: Profile, results_dir: str = "results") -> list[Path]:
    """Run folders of `results/<profile>/runs` that the profile no longer plans: runs of an earlier
    state of the profile (another run id), and its Teacher/Student records."""
    planned = {p.run_id for p in plan_runs(profile)}
    planned |= {
        baseline_id(profile, pair, task, who)
        for pair, task in plan_preparations(profile, plan_runs(profile))
        for who in ("teacher", "student")
    }
    runs = Path(results_dir) / profile.name / "runs"
    return (
        sorted(p for p in runs.iterdir() if p.is_dir() and p.name not in planned)
        if runs.is_dir()
        else []
    )


def write_manifest(
    profile, results_dir, started, jobs, threads, phase_seconds, plan, failures
) -> None:
    """results/<profile>/manifest.json: code version, packages, machine, and the pipeline's
    timings."""
    manifest = dict(
        profile=profile.name,
        profile_hash=config_hash(profile),
        **({"overrides": profile_overrides(profile)} if profile_overrides(profile) else {}),
        provenance=provenance(),
        started=started.isoformat(timespec="seconds"),
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        jobs=jobs,
        threads_per_job=threads,
        phase_seconds=phase_seconds,
        job_seconds={j.name: round(j.seconds, 1) for j in plan if j.seconds},
        skipped=[j.name for j in plan if j.done],
        failed=[j.name for j, _ in failures],
    )
    atomic.write_json(Path(results_dir) / profile.name / "manifest.json", manifest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the tables and figures of a profile.")
    add_profile_options(parser)
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated artifacts: {', '.join(ARTIFACTS)} (default: all)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="runs side by side (default: one per core for the offline profiles, 1 for Hub models)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and its estimated time; run nothing"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the run records the profile no longer plans "
        "(an earlier state of the profile), then stop",
    )
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--cache-dir", default=str(CACHE_ROOT))
    args = parser.parse_args(argv)
    try:
        if args.jobs < 0:
            raise KitError(f"--jobs {args.jobs}: give a positive number (0 = the default)")
        profile = get_profile(args.profile, **profile_overrides_from_args(args))
        if args.prune:
            stale = stale_records(profile, args.results_dir)
            for folder in stale:
                shutil.rmtree(folder)
            print(
                f"run_all: {len(stale)} run record(s) the {profile.name} profile no longer plans "
                "deleted"
            )
            return 0
        return run_pipeline(
            profile,
            args.only,
            args.jobs or None,
            args.dry_run,
            args.results_dir,
            Path(args.cache_dir),
        )
    except KitError as error:
        print(f"run_all: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nrun_all: interrupted; finished runs are kept, run it again to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
