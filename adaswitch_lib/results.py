"""Run records: where a run's results live and how they are read back.

    results/<profile>/runs/<run_id>/
        record.json           run id, every config field, metrics, each test example's score,
                              evaluations over training, timings, provenance (git commit +
                              dirty flag, packages, device, threads), the prepared pair's
                              weights digest
        log.jsonl             one line per optimiser step (loss, lengths, time split, switch
        statistics)
        outputs_<task>.jsonl  what the student wrote for every test example, and how it was scored

A record folder is written whole (`atomic.write_folder`, record.json last), so a killed run leaves
no record. A partial or corrupt one is reported in one line and removed, so that its run is done
again. `load_records(profile)` gives every finished record as one pandas DataFrame; `run.py` makes
the records.

    python -c "from adaswitch_lib.results import load_records; print(load_records('cpu'))"
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from adaswitch_lib import atomic, kernels
from adaswitch_lib.config import RunConfig, run_id
from adaswitch_lib.errors import KitError

RECORD_KEYS = ("run_id", "kind", "config", "metrics", "timings", "provenance")


# ---------------------------------------------------------------------------- provenance
def provenance() -> dict:
    """Where and with what a result was made: code version, packages, device, threads."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in (
        "torch",
        "transformers",
        "accelerate",
        "tokenizers",
        "datasets",
        "numpy",
        "rouge-score",
        "papermill",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return dict(
        git=_git_state(),
        packages=packages,
        python=platform.python_version(),
        device=_device(),
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        kernels=kernels.in_use(),
    )


def _git_state() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        # changed tracked files outside results/ (a run rewriting committed results is not changed
        # code)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(commit=commit.stdout.strip(), dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.CalledProcessError):  # installed from a wheel, or no git
        return dict(commit=None, dirty=None)


def _device(cpuinfo: str = "/proc/cpuinfo") -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:  # the bf16 instructions matter: bf16 autocast rounds differently without them (README)
        first_cpu = Path(cpuinfo).read_text().split("\n\n")[0].splitlines()
        fields = {
            key.strip(): value.strip()
            for key, _, value in (line.partition(":") for line in first_cpu)
        }
        bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
        # family and model tell CPU generations apart where a hypervisor names them all "AMD EPYC"
        generation = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
        if "model name" in fields:
            capability = ", ".join(
                generation
                + [torch.backends.cpu.get_cpu_capability()]
                + (bf16 or ["no bf16 instructions"])
            )
            return f"cpu: {fields['model name']} ({capability})"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


# ---------------------------------------------------------------------------- record files
def run_folder(run: RunConfig) -> Path:
    return Path(run.results_dir) / run.profile.name / "runs" / run_id(run)


def read_record(folder: Path, expected_id: str | None = None) -> dict | None:
    """The finished record in `folder`, or None. A partial or corrupt one is reported in one line
    and removed, so that the run is done again rather than used."""
    folder = Path(folder)
    if not folder.exists():
        return None
    try:
        record = json.loads((folder / "record.json").read_text())
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if expected_id and record["run_id"] != expected_id:
            raise ValueError(f"it names run {record['run_id']}")
    except (OSError, ValueError) as error:
        print(
            f"results: {folder} holds a partial or corrupt record "
            f"({str(error).splitlines()[0][:100]}); "
            f"redoing the run",
            flush=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return record


def write_record(folder: Path, files: dict[str, object]) -> None:
    """Write a record folder: every file through atomic.write_folder (temporary sibling folder, then
    a rename), record.json last: a folder at `folder` is always complete."""

    def write(tmp: Path) -> None:
        for name, content in files.items():
            if name == "record.json":
                continue
            if isinstance(content, Path):
                shutil.copyfile(content, tmp / name)
            elif isinstance(content, list):
                (tmp / name).write_text("".join(json.dumps(row) + "\n" for row in content))
            else:
                (tmp / name).write_text(str(content))
        (tmp / "record.json").write_text(json.dumps(files["record.json"], indent=2))

    atomic.write_folder(folder, write)


# ---------------------------------------------------------------------------- reading
def check_one_preparation(runs_dir: Path, pair: str, task: str, digest: str) -> None:
    """Raise a one-line KitError when `runs_dir` holds a record of this pair and task made from
    other prepared weights (`weights_digest`) than `digest`: its runs and the next would compare
    students of different teachers. A resumed regeneration on another host re-prepares the pair
    with its own rounding, and must not land beside the first host's runs. Records from before the
    digest carry none and are not checked."""
    for path in sorted(Path(runs_dir).glob("[!.]*/record.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a partial record: read_record removes it when its run comes up
        where = record.get("run_config", {})
        other = record.get("weights_digest")
        if (where.get("pair"), where.get("task")) == (pair, task) and other not in (None, digest):
            raise KitError(
                f"{runs_dir} holds {pair} {task} runs made from other prepared weights "
                f"({other}, e.g. {path.parent.name}) than this preparation ({digest}); restore "
                "that prepared pair under .cache/models, or move those runs away to redo them"
            )


def load_records(profile: str, results_dir: str = "results"):
    """Every finished record of a profile as one DataFrame: one row per run, with the run's own
    fields (pair, task, method, seed, divergence, K, L, ...), `metrics.*` and `timings.*`."""
    import pandas as pd

    rows = []
    for folder in sorted((Path(results_dir) / profile / "runs").glob("[!.]*")):
        record = read_record(folder)
        if record is None:
            continue
        row = dict(
            run_id=record["run_id"], kind=record["kind"], method_label=record.get("method_label")
        )
        row.update(record.get("run_config", {}))
        row.update({f"metrics.{k}": v for k, v in record["metrics"].items()})
        row.update({f"timings.{k}": v for k, v in record["timings"].items()})
        # each test example's score, per task (records from before 2026-12-02 have none)
        row.update({f"example_scores.{k}": v for k, v in record.get("example_scores", {}).items()})
        row.update(
            steps=record.get("steps"),
            commit=record["provenance"]["git"]["commit"],
            folder=str(folder),
        )
        rows.append(row)
    return pd.DataFrame(rows)
