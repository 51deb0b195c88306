"""A profile's `cpu_kernels`: the pinned kernels reach every process that computes, a process
without them stops before any arithmetic, and pinned results are kept apart from native ones."""

import json
import os
import subprocess
import sys

import pytest
import torch

from adaswitch_lib import kernels, pipeline
from adaswitch_lib.config import RunConfig, baseline_id, get_profile, run_id
from adaswitch_lib.errors import ConfigError, KitError
from adaswitch_lib.prepare import pair_key, prepare_pair

PINNED = kernels.PINNED["avx2"]


@pytest.fixture
def without_pinned_kernels(monkeypatch):
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)


def test_a_process_without_the_pinned_kernels_stops_before_computing(
    without_pinned_kernels, monkeypatch, tmp_path
):
    with pytest.raises(KitError, match="ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT"):
        kernels.check("avx2")
    profile = get_profile("smoke", cpu_kernels="avx2")
    with pytest.raises(KitError, match="cpu_kernels=avx2 needs"):
        prepare_pair(profile, "tiny-qwen", "synth_gsm", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was written
    for name, value in PINNED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    with pytest.raises(KitError, match="PyTorch runs AVX512 kernels: this CPU lacks AVX2"):
        kernels.check("avx2")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    kernels.check("avx2")
    # native kernels, or a GPU, ask nothing of the environment
    monkeypatch.delenv("MKL_CBWR")
    kernels.check("native")
    kernels.check("avx2", "cuda")
    with pytest.raises(ConfigError, match="cpu_kernels"):
        get_profile("smoke", cpu_kernels="avx512")


def test_pinned_kernels_get_their_own_pairs_records_and_runs():
    native, pinned = get_profile("cpu"), get_profile("cpu", cpu_kernels="avx2")
    assert pair_key(native, "tiny-qwen", "synth_gsm") == pair_key(
        get_profile("cpu", cpu_kernels="native"), "tiny-qwen", "synth_gsm"
    )
    assert pair_key(native, "tiny-qwen", "synth_gsm") != pair_key(pinned, "tiny-qwen", "synth_gsm")
    assert baseline_id(native, "tiny-qwen", "synth_gsm", "teacher") != baseline_id(
        pinned, "tiny-qwen", "synth_gsm", "teacher"
    )
    run = dict(pair="tiny-qwen", task="synth_gsm", method="adaswitch")
    assert run_id(RunConfig(native, **run)) != run_id(RunConfig(pinned, **run))


def test_the_pipeline_starts_its_jobs_with_the_pinned_kernels(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(env)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    job = pipeline.Job("report", "report 04_table1", "04_table1.ipynb", {}, "04_table1", 1.0)
    pipeline.execute(job, get_profile("smoke", cpu_kernels="avx2"), str(tmp_path), 1)
    assert {name: seen.get(name) for name in PINNED} == PINNED
    seen.clear()
    pipeline.execute(job, get_profile("smoke"), str(tmp_path), 1)
    assert not any(name in seen and name not in os.environ for name in PINNED)


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="no AVX2 here"
)
def test_the_command_line_starts_again_with_the_pinned_kernels(tmp_path):
    """A record made from the command line says which kernels made it: the pinned ones."""
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    command = [sys.executable, "-m", "adaswitch_lib", "baselines", "--profile", "smoke"]
    command += ["--set", "cpu_kernels=avx2", "--pair", "tiny-qwen", "--task", "synth_gsm"]
    proc = subprocess.run(
        command, cwd=tmp_path, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cpu_kernels=avx2: starting again" in proc.stdout
    (record,) = tmp_path.glob("results/smoke/runs/*-teacher-*/record.json")
    used = json.loads(record.read_text())["provenance"]["kernels"]
    assert used == dict(PINNED, torch_capability="AVX2")
