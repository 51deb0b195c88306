"""One distillation run, end to end: prepare (or find) the pair, distil, evaluate, write the record.

A run whose finished record exists is returned as it is, so a run is never made twice. Table 1's
Teacher and Student rows are records too (`record_pair_baselines`), scored by the same evaluation.

    python -m adaswitch_lib distill --profile smoke --pair tiny-qwen --task synth_gsm --method
    adaswitch
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adaswitch_lib import memory, models
from adaswitch_lib.config import Profile, RunConfig, baseline_id, plain, run_id
from adaswitch_lib.data import (
    ROBUSTNESS_TWIN,
    load_profile_task,
    prompt_style,
    token_limits,
    tokenize_pairs,
)
from adaswitch_lib.distill import DistillResult, distill, is_sharded, make_accelerator
from adaswitch_lib.evaluate import Evaluation, evaluate, validation_divergence
from adaswitch_lib.methods import get_method
from adaswitch_lib.prepare import (
    CACHE_ROOT,
    load_prepared,
    prepare_pair,
    seqkd_pairs,
    weights_digest,
)
from adaswitch_lib.results import (
    check_one_preparation,
    provenance,
    read_record,
    run_folder,
    write_record,
)
from adaswitch_lib.sampler import shared_vocab_size


def final_scores(
    student, tokenizer, profile: Profile, task: str, synced: bool = False
) -> dict[str, Evaluation]:
    """The full test metric, and for a GSM student its robustness twin (GSM-Plus)."""
    out = {}
    for name in (task, ROBUSTNESS_TWIN.get(task)):
        if name is None or (name != task and name not in profile.eval_tasks):
            continue
        max_prompt, max_new = token_limits(profile, name)
        out[name] = evaluate(
            student,
            tokenizer,
            name,
            load_profile_task(profile, name, "test"),
            max_new,
            max_prompt,
            profile.eval_batch_size,
            prompt_style(profile),
            synced=synced,
        )
    return out


def _score_metrics(finals: dict[str, Evaluation]) -> dict:
    return dict(
        {f"{name}_score": e.score for name, e in finals.items()},
        **{f"{name}_examples": len(e.outputs) for name, e in finals.items()},
    )


def _output_files(finals: dict[str, Evaluation]) -> dict:
    return {f"outputs_{name}.jsonl": e.outputs for name, e in finals.items()}


@dataclass
class RunInputs:
    """What a run trains and scores with, loaded once on every process."""

    pair_folder: Path
    teacher: object
    student: object
    tokenizer: object
    kd: list  # the KD prompts with their reference responses
    validation: list  # the validation pairs of the KD validation divergence
    test_subset: list  # the test examples scored at every evaluation
    teacher_pairs: list | None  # SeqKD's teacher samples, aligned with `kd`
    max_prompt: int
    max_new: int


def _on_main_first(accelerator, make):
    """`make()` on the main process, then on the others (which then load what it wrote)."""
    if accelerator.is_main_process:
        make()
    accelerator.wait_for_everyone()
    return make()


def load_inputs(run: RunConfig, cache_root: Path, accelerator) -> RunInputs:
    """The prepared pair (prepared first if missing) and the run's data, on the accelerator's
    device."""
    profile = run.profile
    if accelerator.is_main_process:  # a Hub pair on a GPU the estimator says is too small
        for line in memory.fit_warnings(profile, run.pair, run.task, memory.this_gpu()):
            print(f"warning: {line} (python -m adaswitch_lib.plan --memory)", flush=True)
    pair_folder = _on_main_first(
        accelerator, lambda: prepare_pair(profile, run.pair, run.task, cache_root)
    )
    # the student trains in fp32 (master weights; autocast does the rest); the frozen teacher in the
    # profile's dtype
    teacher, _, tokenizer = load_prepared(pair_folder, profile.dtype, str(accelerator.device))
    student = models.load_model(str(pair_folder / "student"), "float32", str(accelerator.device))
    max_prompt, max_new = token_limits(profile, run.task)
    style = prompt_style(profile)
    kd = tokenize_pairs(
        tokenizer, load_profile_task(profile, run.task, "kd"), max_prompt, max_new, style
    )
    validation_examples = load_profile_task(profile, run.task, "validation")[
        : profile.val_loss_examples
    ]
    validation = tokenize_pairs(tokenizer, validation_examples, max_prompt, max_new, style)
    test_subset = load_profile_task(profile, run.task, "test")[: profile.eval_subset]
    teacher_pairs = None
    if get_method(run.method).targets == "teacher_samples":
        teacher_pairs = _on_main_first(
            accelerator, lambda: seqkd_pairs(pair_folder, profile, teacher, tokenizer, kd, max_new)
        )
    return RunInputs(
        pair_folder,
        teacher,
        student,
        tokenizer,
        kd,
        validation,
        test_subset,
        teacher_pairs,
        max_prompt,
        max_new,
    )


def make_evaluator(run: RunConfig, inputs: RunInputs, synced: bool):
    """`evaluator(step, model)` for the loop: the KD validation divergence (the frozen teacher's
    logits scored once, then cached) and the test-subset metric."""
    profile, tokenizer = run.profile, inputs.tokenizer
    vocab = shared_vocab_size(inputs.student, inputs.teacher, len(tokenizer))
    teacher_cache = {}

    def evaluator(step: int, model) -> dict:
        out = dict(
            val_loss=validation_divergence(
                run,
                model,
                inputs.teacher,
                inputs.validation,
                tokenizer.pad_token_id,
                vocab,
                profile.eval_batch_size,
                teacher_cache,
            )
        )
        if inputs.test_subset:
            out["test_subset"] = evaluate(
                model,
                tokenizer,
                run.task,
                inputs.test_subset,
                inputs.max_new,
                inputs.max_prompt,
                profile.eval_batch_size,
                prompt_style(profile),
                synced=synced,
            ).score
        return out

    return evaluator


def distillation_record(
    run: RunConfig,
    inputs: RunInputs,
    result: DistillResult,
    finals: dict[str, Evaluation],
    seconds: dict,
    processes: int,
) -> dict:
    """The record.json of a finished run."""
    last = result.log[-1] if result.log else {}
    loop = result.seconds
    metrics = dict(
        _score_metrics(finals),
        final_val_loss=result.evaluations[-1]["val_loss"] if result.evaluations else None,
        final_loss=last.get("loss"),
    )
    timings = dict(
        total=seconds["total"],
        setup=seconds["setup"],
        distill=loop["total"],
        distill_without_evaluation=loop["total"] - loop["evaluation"],
        sampling=loop["sampling"],
        teacher_scoring=loop["teacher_scoring"],
        student_update=loop["student_update"],
        evaluation=loop["evaluation"],
        final_evaluation=seconds["final_evaluation"],
    )
    config = plain(run)
    return dict(
        run_id=run_id(run),
        kind="distillation",
        method_label=get_method(run.method).label,
        config=config,
        run_config={k: v for k, v in config.items() if k != "profile"},
        metrics=metrics,
        example_scores={name: e.example_scores() for name, e in finals.items()},
        evaluations=result.evaluations,
        steps=result.steps,
        kd_examples=len(inputs.kd),
        timings=timings,
        student_checksums=result.student_checksums,
        # teacher_continuation = "auto": the continuation the first step chose, and its timings
        **({"continuation": result.continuation} if result.continuation else {}),
        processes=processes,
        provenance=provenance(),
        pair_folder=inputs.pair_folder.name,
    )


def run_distillation(run: RunConfig, cache_root: Path = CACHE_ROOT, accelerator=None) -> dict:
    """Prepare (or find) the pair, distil, evaluate, and write the run's record; a run whose
    finished record exists is returned as it is. Returns the record ({} on the other processes)."""
    rid, folder = run_id(run), run_folder(run)
    record = read_record(folder, rid)
    if record is not None:
        print(f"results: {rid} is finished; skipped ({folder})", flush=True)
        return record
    start = time.perf_counter()
    accelerator = accelerator or make_accelerator(run.profile)
    inputs = load_inputs(run, cache_root, accelerator)
    digest = weights_digest(inputs.pair_folder)
    check_one_preparation(folder.parent, run.pair, run.task, digest)
    sharded = is_sharded(accelerator)  # then every process evaluates, stepping together
    seconds = dict(setup=time.perf_counter() - start)
    print(f"==> distill {rid}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="adaswitch-log-"))
    try:
        result = distill(
            run,
            inputs.teacher,
            inputs.student,
            inputs.tokenizer,
            inputs.kd,
            max_new_tokens=inputs.max_new,
            teacher_pairs=inputs.teacher_pairs,
            evaluator=make_evaluator(run, inputs, sharded),
            log_path=scratch / "log.jsonl",
            accelerator=accelerator,
        )
        t0 = time.perf_counter()
        # a sharded student's forward needs every process
        if accelerator.is_main_process or sharded:
            finals = final_scores(
                accelerator.unwrap_model(inputs.student),
                inputs.tokenizer,
                run.profile,
                run.task,
                synced=sharded,
            )
        if not accelerator.is_main_process:
            return {}
        seconds.update(final_evaluation=time.perf_counter() - t0, total=time.perf_counter() - start)
        record = distillation_record(
            run, inputs, result, finals, seconds, accelerator.num_processes
        )
        record["weights_digest"] = digest
        write_record(
            folder,
            {"log.jsonl": scratch / "log.jsonl", "record.json": record, **_output_files(finals)},
        )
        print(
            f"    {rid}: "
            + ", ".join(f"{n} {e.score:.2f}" for n, e in finals.items())
            + f" in {record['timings']['total']:.0f} s -> {folder}",
            flush=True,
        )
        return record
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def record_pair_baselines(
    profile: Profile,
    pair: str,
    task: str,
    results_dir: str = "results",
    cache_root: Path = CACHE_ROOT,
) -> list[dict]:
    """Table 1's Teacher and Student rows: the prepared teacher and base student, scored by the
    same evaluation as the distilled students, as records of kind "teacher" / "student"."""
    folder = prepare_pair(profile, pair, task, cache_root)
    # the base student in fp32, as the distilled students are scored; the teacher as it teaches
    teacher, student, tokenizer = load_prepared(folder, profile.dtype, student_dtype="float32")
    digest = weights_digest(folder)
    check_one_preparation(Path(results_dir) / profile.name / "runs", pair, task, digest)
    out = []
    for who, model in (("teacher", teacher), ("student", student)):
        rid = baseline_id(profile, pair, task, who)
        target = Path(results_dir) / profile.name / "runs" / rid
        record = read_record(target, rid)
        if record is None:
            start = time.perf_counter()
            finals = final_scores(model, tokenizer, profile, task)
            record = dict(
                run_id=rid,
                kind=who,
                method_label=who.capitalize(),
                config=plain(profile),
                run_config=dict(pair=pair, task=task, method=who),
                metrics=_score_metrics(finals),
                example_scores={name: e.example_scores() for name, e in finals.items()},
                timings=dict(total=time.perf_counter() - start),
                provenance=provenance(),
                pair_folder=folder.name,
                weights_digest=digest,
            )
            write_record(target, {"record.json": record, **_output_files(finals)})
        out.append(record)
    return out
