"""The plan (which runs each artifact needs), the report writers, and the papermill pipeline on
the smoke profile: every table, figure and claims.md; resume; failures; interruption."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaswitch_lib import pipeline, plan
from adaswitch_lib.config import get_profile, parse_overrides, run_id
from adaswitch_lib.errors import ConfigError, KitError
from adaswitch_lib.figures import FIGURES
from adaswitch_lib.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
CPU, SMOKE = get_profile("cpu"), get_profile("smoke")


# ---------------------------------------------------------------------------- plan
def ids(runs):
    return {run_id(r) for r in runs}


def test_table1_is_every_method_pair_and_task():
    runs = plan.artifact_runs(CPU, "table1")
    assert len(runs) == len(METHODS) * 2 * 2 == len(ids(runs))
    assert {(r.pair, r.task) for r in runs} == {(p, t) for p in CPU.pairs for t in CPU.train_tasks}


def test_shared_runs_are_planned_once():
    table1 = ids(plan.artifact_runs(CPU, "table1"))
    for artifact in ("table2", "fig4", "fig5", "fig7", "fig8", "fig9"):
        assert ids(plan.artifact_runs(CPU, artifact)) <= table1, artifact
    # Figure 6's K = 3, L = 10 point and Figure 3's forward-KL bars are Table 1's runs
    assert (
        ids(plan.artifact_runs(CPU, "fig6")) & table1
        and ids(plan.artifact_runs(CPU, "fig3")) & table1
    )
    planned = plan.plan_runs(CPU)
    every = set().union(*(ids(plan.artifact_runs(CPU, a)) for a in plan.ARTIFACTS))
    assert len(planned) == len(every) == len({p.run_id for p in planned})
    adaswitch = next(
        p
        for p in planned
        if p.run.method == "adaswitch"
        and p.run.pair == "tiny-qwen"
        and p.run.task == "synth_gsm"
        and p.run.adaswitch_k == 3.0
        and p.run.divergence == "forward_kl"
    )
    assert {"table1", "table2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9"} == set(
        adaswitch.artifacts
    )


def test_cpu_full_runs_three_seeds_of_the_whole_grid():
    full = plan.plan_runs(get_profile("cpu-full"))
    assert {p.run.seed for p in full} == {0, 1, 2}
    assert len(full) > 3 * len(plan.plan_runs(CPU, "table1"))


def test_claims_get_every_seed_and_the_other_runs_the_unclaimed_ones():
    claims = get_profile("cpu-claims")
    seeds = {}
    for planned in plan.plan_runs(claims):
        r = planned.run
        key = (r.pair, r.task, r.method, r.divergence, r.adaswitch_k, r.adaswitch_window)
        seeds.setdefault(key, set()).add(r.seed)
    every, one = set(claims.seeds), set(claims.seeds[: claims.unclaimed_seed_count])
    assert one == {0} and every == {0, 1, 2}
    for (pair, task, method, divergence, k, window), got in seeds.items():
        # Figure 3's forward-KL runs are Table 1's; its other divergence is read by no claim
        read = divergence == "forward_kl" and (
            task == "synth_gsm" or method in ("off_policy", "on_policy", "adaswitch")
        )
        assert got == (every if read else one), (pair, task, method, divergence, k, window)
    # the K and L grid (claim f) keeps every seed
    assert seeds[("tiny-qwen", "synth_gsm", "adaswitch", "forward_kl", 5.0, 10)] == every
    every_seed = get_profile("cpu-claims", unclaimed_seed_count=0)
    assert len(plan.plan_runs(claims)) < len(plan.plan_runs(every_seed))


def test_unclaimed_runs_take_the_first_seeds_of_any_seed_override():
    """`--set seeds=...` composes with the count: the unclaimed runs take the first seeds given,
    which the claimed runs have too (so they pair)."""
    assert parse_overrides(["unclaimed_seed_count=2"]) == dict(unclaimed_seed_count=2)
    other = get_profile("cpu-claims", seeds=(4, 5, 6))
    assert {p.run.seed for p in plan.plan_runs(other, "fig3")} == {4}
    with pytest.raises(ConfigError, match="unclaimed_seed_count"):
        get_profile("cpu-claims", unclaimed_seed_count=-1)


def test_scope_fields_do_not_change_run_ids():
    wider = get_profile("cpu", seeds=(0, 1), figure_pairs=(), fig6_k=(2.0,))
    assert run_id(plan.artifact_runs(CPU, "table1")[0]) == run_id(
        plan.artifact_runs(wider, "table1")[0]
    )


def test_unknown_artifact_is_one_line():
    with pytest.raises(KitError, match="unknown artifact 'fig10'.*valid names: table1"):
        plan.parse_only("table1,fig10")


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert (
        pipeline.main(
            [
                "--profile",
                "smoke",
                "--dry-run",
                "--results-dir",
                str(tmp_path / "r"),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "estimated" in out
        and "distill tiny-qwen synth_gsm adaswitch s0" in out
        and "report 04_table1" in out
    )
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_cpu_preparations_start_longest_first_one_per_worker(tmp_path):
    # the two synth_gsm pairs (700 teacher steps, measured 585 s) before the synth_summ ones (493
    # s): two workers then finish together instead of one running both long ones
    jobs = [
        j
        for j in pipeline.build_jobs(CPU, results_dir=str(tmp_path), cache_dir=tmp_path)
        if j.kind == "prepare"
    ]
    first = sorted(jobs, key=lambda j: -j.estimate)[:2]
    assert {j.parameters["task"] for j in first} == {"synth_gsm"}
    assert {j.parameters["pair"] for j in first} == set(CPU.pairs)


def test_notebooks_declare_the_parameters_the_pipeline_passes():
    import papermill as pm

    for job in pipeline.build_jobs(SMOKE, results_dir="/nonexistent"):
        declared = set(pm.inspect_notebook(str(ROOT / "notebooks" / job.notebook)))
        assert set(job.parameters) <= declared, (job.notebook, set(job.parameters) - declared)


# ---------------------------------------------------------------------------- the smoke pipeline
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    args = [
        "--profile",
        "smoke",
        "--results-dir",
        str(base / "results"),
        "--cache-dir",
        str(base / "cache"),
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "adaswitch_lib.pipeline", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return dict(
        base=base,
        args=args,
        proc=proc,
        seconds=time.perf_counter() - start,
        out=base / "results" / "smoke",
    )


@pytest.mark.slow  # the smoke pipeline: ~4 min on 2 cores
def test_smoke_pipeline_writes_every_table_figure_and_claims(smoke_run):
    proc, out = smoke_run["proc"], smoke_run["out"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("table1", "table2"):
        for kind in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{kind}").stat().st_size > 0
    for stem in FIGURES.values():
        for kind in ("png", "pdf"):
            assert (out / "figures" / f"{stem}.{kind}").stat().st_size > 1000, stem
    claims = (out / "claims.md").read_text()
    assert all(f"**({k})**" in claims for k in "abcdef")
    table1 = (out / "tables" / "table1.csv").read_text().splitlines()
    assert table1[0].startswith("method,Qwen SUMM,Qwen GSM,Qwen GSM-Plus,Llama SUMM")
    assert [line.split(",")[0] for line in table1[1:]] == ["Teacher", "Student"] + [
        m.label for m in METHODS.values()
    ]
    # one progress line per job, and no library progress bars on the console
    lines = proc.stdout.splitlines()
    n_jobs = len(pipeline.build_jobs(SMOKE, results_dir="/nonexistent"))
    assert sum(line.startswith("[") for line in lines) == n_jobs
    assert "Loading weights" not in proc.stdout + proc.stderr and "%|" not in proc.stdout


@pytest.mark.slow  # the smoke pipeline: ~4 min on 2 cores
def test_every_run_keeps_its_executed_notebook_and_the_manifest_says_how(smoke_run):
    out = smoke_run["out"]
    runs = sorted((out / "runs").iterdir())
    distilled = [
        r for r in runs if json.loads((r / "record.json").read_text())["kind"] == "distillation"
    ]
    assert len(distilled) == len(plan.plan_runs(SMOKE))
    for folder in distilled:
        notebook = json.loads((folder / "distill.ipynb").read_text())
        assert notebook["metadata"]["papermill"]["exception"] in (None, False)
    reports = {p.name for p in (out / "reports").iterdir()}
    assert reports == set(pipeline.REPORTS.values()) | {
        pipeline.CLAIMS
    }  # every report notebook ran cleanly
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["provenance"]["device"] and manifest["provenance"]["packages"]["torch"]
    assert manifest["phase_seconds"]["distill"] > 0 and not manifest["failed"]


@pytest.mark.slow  # the smoke pipeline: ~4 min on 2 cores
def test_a_second_pipeline_skips_every_finished_run(smoke_run):
    out = smoke_run["out"]
    before = {p: p.stat().st_mtime for p in (out / "runs").glob("*/record.json")}
    manifest = (out / "manifest.json").read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "adaswitch_lib.pipeline", *smoke_run["args"], "--only", "table1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("… finished before") == len(plan.plan_runs(SMOKE, "table1")) + 4
    assert before == {p: p.stat().st_mtime for p in (out / "runs").glob("*/record.json")}
    # only reports ran: the manifest still describes the pipeline that made the runs (a cached
    # ./run_all.sh leaves a fresh clone's committed manifest as it is)
    assert (out / "manifest.json").read_text() == manifest and "manifest.json kept" in proc.stdout


@pytest.mark.slow  # the smoke pipeline: ~4 min on 2 cores
def test_an_interrupted_pipeline_leaves_no_half_record_and_resumes(smoke_run, tmp_path):
    """Kill run_all while runs are in flight: finished runs stay, nothing half-written is taken
    for a result, and the next call does only what is missing."""
    results = tmp_path / "results"
    args = [
        "--profile",
        "smoke",
        "--only",
        "fig9",
        "--jobs",
        "1",
        "--results-dir",
        str(results),
        "--cache-dir",
        str(smoke_run["base"] / "cache"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaswitch_lib.pipeline", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    runs = results / "smoke" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob("*adaswitch*/record.json"))) < 1:
        time.sleep(0.5)
    time.sleep(3)  # the next run is in flight now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in runs.glob("*adaswitch*/record.json")}
    assert 1 <= len(finished) < 4
    assert all(
        (folder / "record.json").is_file()
        for folder in runs.iterdir()
        if not folder.name.startswith(".")
    )
    again = subprocess.run(
        [sys.executable, "-m", "adaswitch_lib.pipeline", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.stdout.count("… finished before") >= len(finished)
    assert len(list(runs.glob("*adaswitch*/record.json"))) == 4


@pytest.mark.slow  # the smoke pipeline: ~4 min on 2 cores
def test_a_failing_notebook_is_reported_and_the_others_finish(smoke_run, capsys):
    results = str(smoke_run["out"].parent)
    good = pipeline.Job(
        "report",
        "report 04_table1",
        "04_table1.ipynb",
        dict(profile="smoke", results_dir=results, show_progress=False),
        "04_table1",
        1.0,
    )
    bad = pipeline.Job(
        "report",
        "report broken",
        "04_table1.ipynb",
        dict(profile="no-such-profile", results_dir=results, show_progress=False),
        "broken",
        1.0,
    )
    original = pipeline.build_jobs
    pipeline.build_jobs = lambda *a, **k: [bad, good]
    try:
        rc = pipeline.run_pipeline(
            SMOKE, jobs=1, results_dir=results, cache_dir=smoke_run["base"] / "cache"
        )
    finally:
        pipeline.build_jobs = original
    err = capsys.readouterr().err
    assert rc == 1 and "1 job(s) failed" in err and "report broken" in err
    failed = json.loads((smoke_run["out"] / "logs" / "broken.ipynb").read_text())
    assert failed["metadata"]["papermill"]["exception"]
    assert (
        "unknown profile 'no-such-profile'"
        in (smoke_run["out"] / "logs" / "broken.log").read_text()
    )
    assert (smoke_run["out"] / "reports" / "04_table1.ipynb").is_file()


def test_prune_deletes_only_the_records_the_profile_no_longer_plans(tmp_path):
    from adaswitch_lib.config import config_hash
    from adaswitch_lib.pipeline import stale_records
    from adaswitch_lib.plan import plan_runs

    profile = get_profile("smoke")
    runs = tmp_path / "smoke" / "runs"
    planned = plan_runs(profile)[0].run_id
    keep = [planned, f"tiny-qwen-synth_gsm-teacher-{config_hash(profile)}"]
    old = [
        "tiny-qwen-synth_gsm-adaswitch-s0-000000000000",
        "tiny-qwen-synth_gsm-teacher-000000000000",
    ]
    for name in keep + old:
        (runs / name).mkdir(parents=True)
    assert [p.name for p in stale_records(profile, tmp_path)] == sorted(old)
    assert pipeline.main(["--profile", "smoke", "--results-dir", str(tmp_path), "--prune"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == sorted(keep)


def test_provenance_names_the_cpu_generation_and_its_bf16_instructions(tmp_path, monkeypatch):
    """Hosts a hypervisor names alike ("AMD EPYC") differ in speed by generation: the family and
    model go into every record, with the bf16 instructions that decide bf16 rounding."""
    import torch

    from adaswitch_lib.results import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    head = (
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
        "model name\t: AMD EPYC\n"
    )
    (tmp_path / "bf16").write_text(head + "flags\t\t: fpu avx512f avx512_bf16\n")
    (tmp_path / "plain").write_text(head.replace("26", "23") + "flags\t\t: fpu avx2\n")
    capability = torch.backends.cpu.get_cpu_capability()
    assert (
        _device(str(tmp_path / "bf16"))
        == f"cpu: AMD EPYC (cpu family 26, model 2, {capability}, avx512_bf16)"
    )
    assert (
        _device(str(tmp_path / "plain"))
        == f"cpu: AMD EPYC (cpu family 23, model 2, {capability}, no bf16 instructions)"
    )
