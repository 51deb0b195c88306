"""Run records: one distillation run, end to end, into `results/<profile>/runs/<run_id>/`.

    record.json           run id, every config field, metrics, evaluations over training, timings,
                          git commit (+ dirty flag), package versions, device, torch threads
    log.jsonl             one line per optimiser step (loss, lengths, time split, switch statistics)
    outputs_<task>.jsonl  what the student wrote for every test example, and how it was scored

A run is written into a temporary folder that is renamed when everything is in it, so a killed run
leaves no record. A finished record is skipped; a partial or corrupt one is reported in one line
and redone. `load_records(profile)` gives every finished run as one pandas DataFrame.

    python -m adaswitch_lib distill --profile smoke --pair tiny-qwen --task synth_gsm --method adaswitch
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from adaswitch_lib import models
from adaswitch_lib.config import Profile, RunConfig, config_hash, run_id
from adaswitch_lib.data import load_profile_task, token_limits, tokenize_pairs
from adaswitch_lib.distill import distill, is_sharded, make_accelerator
from adaswitch_lib.evaluate import Evaluation, evaluate, validation_loss
from adaswitch_lib.methods import get_method
from adaswitch_lib.prepare import CACHE_ROOT, load_prepared, prepare_pair, seqkd_pairs
from adaswitch_lib.sampler import shared_vocab_size

RECORD_KEYS = ("run_id", "kind", "config", "metrics", "timings", "provenance")
ROBUSTNESS_TWIN = {"gsm8k": "gsm_plus", "synth_gsm": "synth_gsm_plus"}  # GSM students are also scored here


# ---------------------------------------------------------------------------- provenance
def provenance() -> dict:
    """Where and with what a result was made: code version, packages, device, threads."""
    from importlib.metadata import PackageNotFoundError, version
    packages = {}
    for name in ("torch", "transformers", "accelerate", "tokenizers", "datasets", "numpy", "rouge-score", "papermill"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return dict(git=_git_state(), packages=packages, python=platform.python_version(), device=_device(),
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count())


def _git_state() -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        # changed tracked files outside results/ (a run rewriting committed results is not changed code)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True, check=True)
        return dict(commit=commit.stdout.strip(), dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.CalledProcessError):  # installed from a wheel, or no git
        return dict(commit=None, dirty=None)


def _device(cpuinfo: str = "/proc/cpuinfo") -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:  # the bf16 instructions matter: bf16 autocast rounds differently without them (README)
        first_cpu = Path(cpuinfo).read_text().split("\n\n")[0].splitlines()
        fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_cpu)}
        bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
        # family and model tell CPU generations apart where a hypervisor names them all "AMD EPYC"
        generation = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
        if "model name" in fields:
            capability = ", ".join(generation + [torch.backends.cpu.get_cpu_capability()] +
                                   (bf16 or ["no bf16 instructions"]))
            return f"cpu: {fields['model name']} ({capability})"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine()}"


# ---------------------------------------------------------------------------- notebooks
def project_root(start: Path | None = None) -> Path:
    """The kit's folder (the one holding `adaswitch_lib/` and `notebooks/`) at or above `start`
    (default: the working directory), else `start` itself. Notebooks change to it so that
    `results/` and `.cache/` mean the same folders whether Jupyter started in `notebooks/`, in the
    kit's root, or papermill runs them."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "adaswitch_lib").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def quiet_libraries() -> None:
    """Silence transformers' and datasets' progress bars and advisory warnings: under papermill
    and run_all they drown the kit's own progress lines."""
    import warnings
    import transformers
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning, module="(transformers|accelerate|torch)")


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
        print(f"results: {folder} holds a partial or corrupt record ({str(error).splitlines()[0][:100]}); "
              f"redoing the run", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return record


def _write_folder(folder: Path, files: dict[str, object]) -> None:
    """Write every file through models.save_atomic (temporary sibling folder, then a rename),
    record.json last: a folder at `folder` is always complete."""
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

    models.save_atomic(folder, write)


def _plain(obj):
    """A config as JSON: nested dataclasses as dicts, infinities as "inf"."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------- one run, end to end
def _final_scores(student, tokenizer, profile: Profile, task: str, synced: bool = False) -> dict[str, Evaluation]:
    """The full test metric, and for a GSM student its robustness twin (GSM-Plus)."""
    out = {}
    for name in (task, ROBUSTNESS_TWIN.get(task)):
        if name is None or (name != task and name not in profile.eval_tasks):
            continue
        max_prompt, max_new = token_limits(profile, name)
        out[name] = evaluate(student, tokenizer, name, load_profile_task(profile, name, "test"), max_new, max_prompt,
                             profile.eval_batch_size, synced=synced)
    return out


def run_distillation(run: RunConfig, cache_root: Path = CACHE_ROOT, accelerator=None) -> dict:
    """Prepare (or find) the pair, distil, evaluate, and write the run's record; a run whose
    finished record exists is returned as it is. Returns the record."""
    rid, folder = run_id(run), run_folder(run)
    record = read_record(folder, rid)
    if record is not None:
        print(f"results: {rid} is finished; skipped ({folder})", flush=True)
        return record
    start = time.perf_counter()
    profile, method = run.profile, get_method(run.method)
    accelerator = accelerator or make_accelerator(profile)
    if accelerator.is_main_process:  # one process trains the pair; the others wait and load it
        pair_folder = prepare_pair(profile, run.pair, run.task, cache_root)
    accelerator.wait_for_everyone()
    pair_folder = prepare_pair(profile, run.pair, run.task, cache_root)
    # the student trains in fp32 (master weights; autocast does the rest); the frozen teacher in the profile's dtype
    teacher, _, tokenizer = load_prepared(pair_folder, profile.dtype, str(accelerator.device))
    student = models.load_model(str(pair_folder / "student"), "float32", str(accelerator.device))
    max_prompt, max_new = token_limits(profile, run.task)
    kd = tokenize_pairs(tokenizer, load_profile_task(profile, run.task, "kd"), max_prompt, max_new)
    val = tokenize_pairs(tokenizer, load_profile_task(profile, run.task, "validation")[: profile.val_loss_examples],
                         max_prompt, max_new)
    test = load_profile_task(profile, run.task, "test")
    subset = test[: profile.eval_subset]
    teacher_pairs = None
    if method.targets == "teacher_samples":
        if accelerator.is_main_process:
            seqkd_pairs(pair_folder, profile, teacher, tokenizer, kd, max_new)
        accelerator.wait_for_everyone()
        teacher_pairs = seqkd_pairs(pair_folder, profile, teacher, tokenizer, kd, max_new)
    vocab = shared_vocab_size(student, teacher, len(tokenizer))

    sharded = is_sharded(accelerator)  # then every process evaluates, stepping together
    teacher_cache = {}  # the frozen teacher's validation logits, scored once for every evaluation

    def evaluator(step: int, model) -> dict:
        out = dict(val_loss=validation_loss(run, model, teacher, val, tokenizer.pad_token_id, vocab,
                                            profile.eval_batch_size, teacher_cache))
        if subset:
            out["test_subset"] = evaluate(model, tokenizer, run.task, subset, max_new, max_prompt,
                                          profile.eval_batch_size, synced=sharded).score
        return out

    setup_seconds = time.perf_counter() - start
    print(f"==> distill {rid}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="adaswitch-log-"))
    try:
        result = distill(run, teacher, student, tokenizer, kd, max_new_tokens=max_new, teacher_pairs=teacher_pairs,
                         evaluator=evaluator, log_path=scratch / "log.jsonl", accelerator=accelerator)
        t0 = time.perf_counter()
        if accelerator.is_main_process or sharded:  # a sharded student's forward needs every process
            finals = _final_scores(accelerator.unwrap_model(student), tokenizer, profile, run.task, synced=sharded)
        if not accelerator.is_main_process:
            return {}
        final_seconds = time.perf_counter() - t0
        last = result.log[-1] if result.log else {}
        record = dict(
            run_id=rid, kind="distillation", method_label=method.label,
            config=_plain(run), run_config={k: v for k, v in _plain(run).items() if k != "profile"},
            metrics=dict({f"{name}_score": e.score for name, e in finals.items()},
                         **{f"{name}_examples": len(e.outputs) for name, e in finals.items()},
                         final_val_loss=result.evaluations[-1]["val_loss"] if result.evaluations else None,
                         final_loss=last.get("loss")),
            evaluations=result.evaluations,
            steps=result.steps, kd_examples=len(kd),
            timings=dict(total=time.perf_counter() - start, setup=setup_seconds,
                         distill=result.seconds["total"],
                         distill_without_evaluation=result.seconds["total"] - result.seconds["evaluation"],
                         sampling=result.seconds["sampling"], teacher_scoring=result.seconds["teacher_scoring"],
                         student_update=result.seconds["student_update"],
                         evaluation=result.seconds["evaluation"], final_evaluation=final_seconds),
            student_checksums=result.student_checksums, processes=accelerator.num_processes,
            provenance=provenance(), pair_folder=pair_folder.name)
        files = {"log.jsonl": scratch / "log.jsonl", "record.json": record}
        files.update({f"outputs_{name}.jsonl": e.outputs for name, e in finals.items()})
        _write_folder(folder, files)
        print(f"    {rid}: " + ", ".join(f"{n} {e.score:.2f}" for n, e in finals.items()) +
              f" in {record['timings']['total']:.0f} s -> {folder}", flush=True)
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def record_pair_baselines(profile: Profile, pair: str, task: str, results_dir: str = "results",
                          cache_root: Path = CACHE_ROOT) -> list[dict]:
    """Table 1's Teacher and Student rows: the prepared teacher and base student, scored by the
    same evaluation as the distilled students, as records of kind "teacher" / "student"."""
    folder = prepare_pair(profile, pair, task, cache_root)
    # the base student in fp32, as the distilled students are scored; the teacher as it teaches
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, student_dtype="float32")
    out = []
    for who, model in (("teacher", teacher), ("student", student)):
        rid = f"{pair}-{task}-{who}-{config_hash(profile)}"
        target = Path(results_dir) / profile.name / "runs" / rid
        record = read_record(target, rid)
        if record is None:
            start = time.perf_counter()
            finals = _final_scores(model, tokenizer, profile, task)
            record = dict(run_id=rid, kind=who, method_label=who.capitalize(),
                          config=_plain(profile), run_config=dict(pair=pair, task=task, method=who),
                          metrics=dict({f"{name}_score": e.score for name, e in finals.items()},
                                       **{f"{name}_examples": len(e.outputs) for name, e in finals.items()}),
                          timings=dict(total=time.perf_counter() - start), provenance=provenance(),
                          pair_folder=folder.name)
            files = {"record.json": record, **{f"outputs_{n}.jsonl": e.outputs for n, e in finals.items()}}
            _write_folder(target, files)
        out.append(record)
    return out


# ---------------------------------------------------------------------------- reading
def load_records(profile: str, results_dir: str = "results"):
    """Every finished record of a profile as one DataFrame: one row per run, with the run's own
    fields (pair, task, method, seed, divergence, K, L, ...), `metrics.*` and `timings.*`."""
    import pandas as pd
    rows = []
    for folder in sorted((Path(results_dir) / profile / "runs").glob("[!.]*")):
        record = read_record(folder)
        if record is None:
            continue
        row = dict(run_id=record["run_id"], kind=record["kind"], method_label=record.get("method_label"))
        row.update(record.get("run_config", {}))
        row.update({f"metrics.{k}": v for k, v in record["metrics"].items()})
        row.update({f"timings.{k}": v for k, v in record["timings"].items()})
        row.update(steps=record.get("steps"), commit=record["provenance"]["git"]["commit"],
                   folder=str(folder))
        rows.append(row)
    return pd.DataFrame(rows)

