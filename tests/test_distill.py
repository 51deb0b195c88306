"""The distillation loop on the smoke profile: every method, the consistency between methods,
gradient accumulation, determinism, and the run records."""

import json
import math
from pathlib import Path

import pytest
import torch

from adaswitch_lib import distill as distill_module
from adaswitch_lib import results
from adaswitch_lib import run as run_module
from adaswitch_lib.config import METHODS, RunConfig, get_profile
from adaswitch_lib.data import load_profile_task, token_limits, tokenize_pairs
from adaswitch_lib.distill import distill, mixed_precision, response_logits, target_loss
from adaswitch_lib.errors import KitError
from adaswitch_lib.methods import EARLY_METHODS
from adaswitch_lib.prepare import load_prepared, prepare_pair
from adaswitch_lib.targets import build_targets, ground_truth_targets, sampler_config, step_noise

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    prepare_pair(SMOKE, "tiny-qwen", "synth_gsm", cache_root=root)
    return root


@pytest.fixture(scope="module")
def pair(cache):
    folder = prepare_pair(SMOKE, "tiny-qwen", "synth_gsm", cache_root=cache)
    teacher, student, tokenizer = load_prepared(folder)
    max_prompt, max_new = token_limits(SMOKE, "synth_gsm")
    kd = tokenize_pairs(tokenizer, load_profile_task(SMOKE, "synth_gsm", "kd"), max_prompt, max_new)
    return dict(
        folder=folder, teacher=teacher, student=student, tokenizer=tokenizer, kd=kd, max_new=max_new
    )


def fresh_student(pair):
    student = load_prepared(pair["folder"])[1]
    return student


def run_for(method, profile=SMOKE, tmp_path=None, **fields):
    return RunConfig(
        profile=profile,
        pair="tiny-qwen",
        task="synth_gsm",
        method=method,
        results_dir=str(tmp_path or "results"),
        **fields,
    )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_writes_a_valid_record(method, cache, tmp_path, monkeypatch):
    # the layer count of each model the loop runs over targets (the smoke teacher has more)
    scored_by = []
    real = distill_module.response_logits
    monkeypatch.setattr(
        distill_module,
        "response_logits",
        lambda model, *args: scored_by.append(model.config.num_hidden_layers) or real(model, *args),
    )
    run = run_for(method, get_profile("smoke", kd_steps=3), tmp_path)
    record = run_module.run_distillation(run, cache_root=cache)
    folder = results.run_folder(run)
    assert json.loads((folder / "record.json").read_text()) == record
    assert record["run_id"].startswith(f"tiny-qwen-synth_gsm-{method}-s0-")
    assert (
        record["run_config"]["method"] == method and record["config"]["profile"]["name"] == "smoke"
    )
    assert (
        0 <= record["metrics"]["synth_gsm_score"] <= 100
        and 0 <= record["metrics"]["synth_gsm_plus_score"] <= 100
    )
    assert record["metrics"]["synth_gsm_examples"] == len(
        load_profile_task(SMOKE, "synth_gsm", "test")
    )
    # each test question's score, in test order: paired across methods, their mean is the score
    for task in ("synth_gsm", "synth_gsm_plus"):
        per_question = record["example_scores"][task]
        assert len(per_question) == record["metrics"][f"{task}_examples"]
        assert set(per_question) <= {0.0, 100.0}
        assert sum(per_question) / len(per_question) == pytest.approx(
            record["metrics"][f"{task}_score"]
        )
    assert record["provenance"]["torch_threads"] >= 1 and record["provenance"]["packages"]["torch"]
    assert set(record["timings"]) >= {
        "total",
        "sampling",
        "teacher_scoring",
        "student_update",
        "evaluation",
    }
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3] and all(math.isfinite(e["loss"]) for e in log)
    assert all(
        e["response_tokens"] > 0
        and set(e["seconds"]) == {"sampling", "teacher_scoring", "student_update"}
        for e in log
    )
    # smoke: every 2 early steps for the methods of Figures 5/8, every 4 for the others, and the
    # last
    assert [e["step"] for e in record["evaluations"]] == (
        [0, 2, 3] if method in EARLY_METHODS else [0, 3]
    )
    outputs = [
        json.loads(line) for line in (folder / "outputs_synth_gsm.jsonl").read_text().splitlines()
    ]
    assert (
        100 * sum(o["correct"] for o in outputs) / len(outputs)
        == record["metrics"]["synth_gsm_score"]
    )
    assert {"id", "prompt", "response", "answer", "extracted", "correct"} <= set(outputs[0])
    if method == "adaswitch":
        assert all(0 <= e["switch_rate"] <= 1 and 0 < e["student_token_share"] <= 1 for e in log)
    if method == "skd":
        assert all(0 <= e["replacement_rate"] <= 1 for e in log)
    if method == "imitkd":
        assert [e["imitkd_beta"] for e in log] == pytest.approx([1.0, 2 / 3, 1 / 3])
    # a teacher scoring pass only where the loss needs teacher logits the sampler did not keep (SKD
    # and AdaSwitch reuse theirs; NLL methods never run the teacher on targets); a student pass
    # every step
    assert SMOKE.teacher_shape.layers != SMOKE.student_shape.layers
    scoring_pass = get_method_loss(method) == "divergence" and method not in ("skd", "adaswitch")
    teacher_passes = scored_by.count(SMOKE.teacher_shape.layers)  # one per length group and step
    assert (teacher_passes >= 3) if scoring_pass else (teacher_passes == 0)
    assert scored_by.count(SMOKE.student_shape.layers) >= 3


def get_method_loss(method):
    from adaswitch_lib.methods import get_method

    return get_method(method).loss


@pytest.mark.parametrize("method", METHODS)
def test_every_method_lowers_its_loss_on_one_fixed_batch(method, pair):
    profile = get_profile(
        "smoke",
        kd_lr=1e-2,
        kd_warmup_ratio=0.0,
        kd_batch_size=8,
        eval_every_early=100,
        eval_every=100,
    )
    run = run_for(method, profile)
    batch = pair["kd"][:8]  # one batch: every step sees the same prompts
    teacher_pairs = None
    if method == "seqkd":
        from adaswitch_lib.prepare import seqkd_pairs

        teacher_pairs = seqkd_pairs(
            pair["folder"], profile, pair["teacher"], pair["tokenizer"], batch, pair["max_new"]
        )
    out = distill(
        run,
        pair["teacher"],
        fresh_student(pair),
        pair["tokenizer"],
        batch,
        max_new_tokens=pair["max_new"],
        teacher_pairs=teacher_pairs,
        steps=12,
    )
    losses = [e["loss"] for e in out.log]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3, losses


def test_on_policy_loss_on_ground_truth_equals_the_off_policy_loss(pair, monkeypatch):
    """The loss, its normaliser and the update do not depend on where the targets came from."""
    profile = get_profile("smoke", grad_accum_steps=2)
    off = distill(
        run_for("off_policy", profile),
        pair["teacher"],
        fresh_student(pair),
        pair["tokenizer"],
        pair["kd"],
        max_new_tokens=pair["max_new"],
        steps=2,
    )
    real = distill_module.build_targets

    def gold_instead(method, run, student, teacher, pairs, *args, **kwargs):
        return real("off_policy", run, student, teacher, pairs, *args, **kwargs)

    monkeypatch.setattr(distill_module, "build_targets", gold_instead)
    on = distill(
        run_for("on_policy", profile),
        pair["teacher"],
        fresh_student(pair),
        pair["tokenizer"],
        pair["kd"],
        max_new_tokens=pair["max_new"],
        steps=2,
    )
    assert [e["loss"] for e in on.log] == [e["loss"] for e in off.log]
    assert on.student_checksums == off.student_checksums


def _targets(method, pair, noise, **fields):
    run = run_for(method, SMOKE, **fields)
    cfg = sampler_config(
        run, pair["tokenizer"], pair["max_new"], keep_teacher_logits=method in ("skd", "adaswitch")
    )
    return build_targets(
        method, run, pair["student"], pair["teacher"], pair["kd"][:8], noise, cfg, None
    )


def test_adaswitch_with_infinite_k_gives_the_on_policy_targets(pair):
    noise = step_noise(0, 1, 8, pair["max_new"])
    ada = _targets("adaswitch", pair, noise, adaswitch_k=math.inf)
    on = _targets("on_policy", pair, noise)
    assert torch.equal(ada.sequences, on.sequences) and torch.equal(
        ada.response_mask, on.response_mask
    )
    assert not ada.stats["switched"].any()


def test_imitkd_at_beta_one_is_off_policy_and_at_beta_zero_on_policy(pair):
    """Through the loop: ImitKD's first step at beta_start = 1 (0) equals off-policy's
    (on-policy's)."""
    losses = {}
    for method, beta in (("imitkd", 1.0), ("off_policy", 1.0), ("imitkd", 0.0), ("on_policy", 1.0)):
        out = distill(
            run_for(method, SMOKE, imitkd_beta_start=beta),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=1,
        )
        losses[method, beta] = (
            out.log[0]["loss"],
            out.log[0]["response_tokens"],
            out.student_checksums,
        )
        if method == "imitkd":
            assert out.log[0]["ground_truth_share"] == beta
    assert losses["imitkd", 1.0] == losses["off_policy", 1.0]
    assert losses["imitkd", 0.0] == losses["on_policy", 1.0]
    assert losses["imitkd", 1.0] != losses["imitkd", 0.0]


@pytest.mark.parametrize("method", ["skd", "adaswitch"])
def test_loss_with_reused_teacher_logits_equals_a_separate_teacher_pass(pair, method):
    noise = step_noise(0, 3, 8, pair["max_new"])
    t = _targets(method, pair, noise, adaswitch_k=1.1, adaswitch_window=2)
    assert t.teacher_logits is not None
    vocab = len(pair["tokenizer"])
    with torch.no_grad():
        scored = response_logits(pair["teacher"], t, vocab)
    mask = t.response_mask.bool()
    torch.testing.assert_close(t.teacher_logits[mask], scored[mask], atol=1e-4, rtol=1e-4)
    student_logits = response_logits(pair["student"], t, vocab)
    run = run_for(method, SMOKE)
    reused, separate = (
        target_loss(method, run, student_logits, t.teacher_logits, t),
        target_loss(method, run, student_logits, scored, t),
    )
    assert reused.item() == pytest.approx(separate.item(), rel=1e-5)
    if method == "adaswitch":
        assert t.stats["switched"].any()  # the test covers teacher-written suffixes


class RecordingSGD(torch.optim.SGD):
    """Keeps a copy of the gradient it was given at each step."""

    seen = []

    def __init__(self, groups, lr):
        super().__init__(groups, lr=lr)

    def step(self, closure=None):
        RecordingSGD.seen.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


@pytest.mark.parametrize(
    "method,reduction",
    [
        ("off_policy", "sequence"),
        ("on_policy", "sequence"),
        ("adaswitch", "token"),
        ("sft", "token"),
    ],
)
def test_accumulated_gradients_equal_one_batch_gradients(pair, monkeypatch, method, reduction):
    monkeypatch.setattr(torch.optim, "AdamW", RecordingSGD)
    grads = []
    for accum in (1, 2, 4):
        RecordingSGD.seen = []
        profile = get_profile("smoke", kd_batch_size=8, grad_accum_steps=accum, max_grad_norm=1e9)
        distill(
            run_for(method, profile, loss_reduction=reduction, adaswitch_k=1.1, adaswitch_window=2),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=1,
        )
        grads.append(RecordingSGD.seen[0])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("method", ["on_policy", "adaswitch", "imitkd"])
def test_length_groups_give_the_one_batch_gradient(pair, monkeypatch, method):
    """Scoring and updating rows grouped by length, each group trimmed of its shared padding, is a
    way of computing the same step: gradients equal up to rounding, with accumulation too."""
    monkeypatch.setattr(torch.optim, "AdamW", RecordingSGD)
    grads = {}
    for groups, accum in ((1, 1), (2, 1), (3, 1), (2, 2)):
        RecordingSGD.seen = []
        profile = get_profile(
            "smoke",
            kd_batch_size=8,
            grad_accum_steps=accum,
            length_groups=groups,
            max_grad_norm=1e9,
        )
        distill(
            run_for(method, profile, adaswitch_k=1.1, adaswitch_window=2, imitkd_beta_start=0.5),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=1,
        )
        grads[groups, accum] = RecordingSGD.seen[0]
    for key, other in grads.items():
        for a, b in zip(grads[1, 1], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=f"groups, accum = {key}")


def test_a_length_group_scores_its_rows_as_the_whole_batch_does(pair):
    """`Targets.select` keeps rows without the padding they share: fewer columns, the same logits
    (student and teacher) at every response position, kept teacher logits sliced alike; the groups
    of `length_groups` are the batch's rows, shortest first."""
    from adaswitch_lib.decoding import length_groups

    t = _targets(
        "adaswitch", pair, step_noise(0, 5, 8, pair["max_new"]), adaswitch_k=1.1, adaswitch_window=2
    )
    vocab = len(pair["tokenizer"])
    lengths = t.attention_mask[:, : t.prompt_length].sum(-1) + t.response_mask.sum(-1)
    rows = torch.argsort(lengths)[:4]  # the shortest half: both ends have padding to cut
    part = t.select(rows)
    assert part.sequences.shape[1] < t.sequences.shape[1] and part.prompt_length <= t.prompt_length
    torch.testing.assert_close(
        part.response_mask, t.response_mask[rows, : part.response_mask.shape[1]]
    )
    # no response token lost
    assert int(part.response_mask.sum()) == int(t.response_mask[rows].sum())
    with torch.no_grad():
        for model in (pair["student"], pair["teacher"]):
            mask = part.response_mask.bool()
            whole = response_logits(model, t, vocab)[rows, : mask.shape[1]]
            torch.testing.assert_close(
                response_logits(model, part, vocab)[mask], whole[mask], atol=1e-4, rtol=1e-4
            )
    torch.testing.assert_close(
        part.teacher_logits, t.teacher_logits[rows, : part.response_mask.shape[1]]
    )
    groups = length_groups(t, 2)
    assert [len(g.sequences) for g in groups] == [4, 4]
    first, second = (
        g.attention_mask[:, : g.prompt_length].sum(-1) + g.response_mask.sum(-1) for g in groups
    )
    assert int(first.max()) <= int(second.min())
    assert sorted((first.tolist() + second.tolist())) == sorted(lengths.tolist())
    assert length_groups(t, 1) == [t]


def test_same_seed_and_config_give_identical_results(cache, tmp_path):
    profile = get_profile("smoke", kd_steps=3)
    first = run_module.run_distillation(
        run_for("adaswitch", profile, tmp_path / "a"), cache_root=cache
    )
    second = run_module.run_distillation(
        run_for("adaswitch", profile, tmp_path / "b"), cache_root=cache
    )
    assert first["metrics"] == second["metrics"] and first["evaluations"] == second["evaluations"]
    assert first["student_checksums"] == second["student_checksums"]
    other = run_module.run_distillation(
        run_for("adaswitch", profile, tmp_path / "c", seed=1), cache_root=cache
    )
    assert other["student_checksums"] != first["student_checksums"]


def test_a_non_finite_loss_stops_the_run_in_one_line_and_writes_no_record(
    cache, tmp_path, monkeypatch
):
    real = distill_module.target_loss
    monkeypatch.setattr(distill_module, "target_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    run = run_for("on_policy", get_profile("smoke", kd_steps=3), tmp_path)
    with pytest.raises(
        KitError, match=r"^step 1: the on_policy loss is nan \(not finite\)"
    ) as error:
        run_module.run_distillation(run, cache_root=cache)
    assert "\n" not in str(error.value)
    assert not results.run_folder(run).exists() and not list(
        results.run_folder(run).parent.glob(".*")
    )


def test_finished_runs_are_skipped_killed_runs_redone_corrupt_records_reported(
    cache, tmp_path, monkeypatch, capsys
):
    run = run_for("off_policy", get_profile("smoke", kd_steps=2), tmp_path)
    folder = results.run_folder(run)
    real_scores = run_module.final_scores

    def killed(*args, **kwargs):  # the run dies after training, while evaluating
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "final_scores", killed)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_distillation(run, cache_root=cache)
    assert not folder.exists() and not list(folder.parent.glob(".*"))  # no record, no half folder
    monkeypatch.setattr(run_module, "final_scores", real_scores)
    record = run_module.run_distillation(run, cache_root=cache)  # redone
    monkeypatch.setattr(
        run_module, "distill", lambda *a, **k: pytest.fail("a finished run was run again")
    )
    assert run_module.run_distillation(run, cache_root=cache) == record
    assert "is finished; skipped" in capsys.readouterr().out
    # cut off mid-write by some other tool
    (folder / "record.json").write_text('{"run_id": "tiny-qwen')
    monkeypatch.setattr(run_module, "distill", distill)
    again = run_module.run_distillation(run, cache_root=cache)
    lines = [line for line in capsys.readouterr().out.splitlines() if "corrupt" in line]
    assert len(lines) == 1 and str(folder) in lines[0] and "redoing the run" in lines[0]
    assert again["metrics"] == record["metrics"]
    frame = results.load_records("smoke", str(tmp_path))
    assert (
        list(frame["method"]) == ["off_policy"]
        and frame["metrics.synth_gsm_score"].iloc[0] == record["metrics"]["synth_gsm_score"]
    )


def test_teacher_and_student_rows_use_the_same_evaluation(cache, tmp_path):
    rows = run_module.record_pair_baselines(
        SMOKE, "tiny-qwen", "synth_gsm", str(tmp_path), cache_root=cache
    )
    assert [r["kind"] for r in rows] == ["teacher", "student"]
    metrics = json.loads(
        (
            prepare_pair(SMOKE, "tiny-qwen", "synth_gsm", cache_root=cache) / "metrics.json"
        ).read_text()
    )
    assert rows[0]["metrics"]["synth_gsm_score"] == metrics["teacher_score"]
    assert rows[1]["metrics"]["synth_gsm_score"] == metrics["student_score"]
    assert "synth_gsm_plus_score" in rows[0]["metrics"]
    frame = results.load_records("smoke", str(tmp_path))
    assert sorted(frame["kind"]) == ["student", "teacher"]


def test_runs_from_another_preparation_of_the_pair_are_refused(cache, tmp_path):
    """Every record names the prepared weights it came from; a run whose pair was prepared again
    with other weights (another host's rounding) is refused beside the first preparation's runs,
    in one line, and writes nothing."""
    import shutil

    from adaswitch_lib.prepare import _weights_digest, weights_digest

    folder = prepare_pair(SMOKE, "tiny-qwen", "synth_gsm", cache_root=cache)
    digest = json.loads((folder / "metrics.json").read_text())["weights_digest"]
    assert digest == _weights_digest(folder) == weights_digest(folder) and len(digest) == 16
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / "metrics.json").write_text("{}")  # a folder from before the digest: from its files
    assert weights_digest(other) == digest
    student = load_prepared(other, student_dtype="float32")[1]
    with torch.no_grad():
        student.lm_head.weight[0, 0] += 1.0
    student.save_pretrained(other / "student")
    assert weights_digest(other) != digest

    baselines = run_module.record_pair_baselines(
        SMOKE, "tiny-qwen", "synth_gsm", str(tmp_path), cache_root=cache
    )
    assert {r["weights_digest"] for r in baselines} == {digest}
    runs = tmp_path / "smoke" / "runs"
    teacher_record = runs / baselines[0]["run_id"] / "record.json"
    teacher_record.write_text(json.dumps(dict(baselines[0], weights_digest="0123456789abcdef")))
    run = run_for("off_policy", get_profile("smoke", kd_steps=2), tmp_path)
    with pytest.raises(KitError, match=r"holds tiny-qwen synth_gsm runs made from other prepared"):
        run_module.run_distillation(run, cache_root=cache)
    assert not results.run_folder(run).exists()
    teacher_record.write_text(json.dumps(baselines[0]))  # the same weights again: it runs
    assert run_module.run_distillation(run, cache_root=cache)["weights_digest"] == digest


def test_ground_truth_targets_layout():
    t = ground_truth_targets([([5, 6, 7], [8, 2]), ([9], [10, 11, 12, 2])], pad_token_id=0)
    assert t.sequences.tolist() == [[5, 6, 7, 8, 2, 0, 0], [0, 0, 9, 10, 11, 12, 2]]
    assert t.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert t.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]]


def test_mixed_precision_choice_falls_back_to_fp16_without_bf16():
    assert mixed_precision("auto", cuda=False) == "no"
    assert mixed_precision("auto", cuda=True, bf16_supported=True) == "bf16"
    assert mixed_precision("auto", cuda=True, bf16_supported=False) == "fp16"  # a T4
    assert mixed_precision("no", cuda=True) == "no"


def test_two_processes_end_with_identical_weights_equal_to_one_process(cache, tmp_path):
    """DDP on CPU (gloo) through `accelerate launch`; every draw is seeded by (seed, step, row), so
    two processes sharing each step's batch train the same student as one process alone."""
    import os
    import shutil
    import subprocess
    import sys

    # the prepared smoke pair, found by its key
    shutil.copytree(cache, tmp_path / ".cache" / "models")
    args = [
        "distill",
        "--profile",
        "smoke",
        "--set",
        "kd_steps=3",
        "--method",
        "adaswitch",
        "--K",
        "1.1",
        "--L",
        "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "-m",
            "adaswitch_lib",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [record_file] = (tmp_path / "results" / "smoke" / "runs").glob("*/record.json")
    two = json.loads(record_file.read_text())
    assert two["processes"] == 2 and len(two["student_checksums"]) == 2
    assert two["student_checksums"][0] == two["student_checksums"][1]
    one = run_module.run_distillation(
        run_for(
            "adaswitch",
            get_profile("smoke", kd_steps=3),
            tmp_path / "single",
            adaswitch_k=1.1,
            adaswitch_window=2,
        ),
        cache_root=cache,
    )
    assert two["run_id"] == one["run_id"]
    assert two["student_checksums"][0] == pytest.approx(one["student_checksums"][0], rel=1e-6)
    assert two["metrics"]["final_loss"] == pytest.approx(one["metrics"]["final_loss"], rel=1e-5)


def test_weights_dtype_falls_back_to_fp32_on_a_gpu_without_bf16():
    """Colab's T4 has no bf16: the frozen teacher loads in fp32 there (checked by faking the
    capability; no GPU needed), bf16 on GPUs that have it, fp32 on CPU."""
    from adaswitch_lib.models import device_and_dtype

    assert device_and_dtype("auto", "cpu")[1] == torch.float32
    assert device_and_dtype("auto", "cuda", bf16_supported=True)[1] == torch.bfloat16
    assert device_and_dtype("auto", "cuda", bf16_supported=False)[1] == torch.float32
    assert device_and_dtype("float16", "cuda", bf16_supported=False)[1] == torch.float16


def test_validation_divergence_scores_the_teacher_once_and_changes_nothing(pair, monkeypatch):
    from adaswitch_lib import evaluate as evaluate_module

    run, kd = run_for("adaswitch"), pair["kd"][:12]
    teacher, pad, vocab = pair["teacher"], pair["tokenizer"].pad_token_id, len(pair["tokenizer"])
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    try:
        plain = [
            evaluate_module.validation_divergence(run, pair["student"], teacher, kd, pad, vocab, 5)
            for _ in range(2)
        ]
        assert len(calls) == 6  # three batches, twice
        cache = {}
        cached = [
            evaluate_module.validation_divergence(
                run, pair["student"], teacher, kd, pad, vocab, 5, cache
            )
            for _ in range(2)
        ]
        assert len(calls) == 9 and len(cache) == 3  # scored once, reused the second time
        assert cached == plain  # the very same numbers
        # a different student still gets its own loss from the cached teacher
        student = fresh_student(pair)
        with torch.no_grad():
            next(student.parameters()).mul_(0.5)
        assert evaluate_module.validation_divergence(
            run, student, teacher, kd, pad, vocab, 5, cache
        ) == evaluate_module.validation_divergence(run, student, teacher, kd, pad, vocab, 5)
        # too big to keep: scored every time
        monkeypatch.setattr(evaluate_module, "TEACHER_CACHE_BYTES", 0)
        small = {}
        evaluate_module.validation_divergence(
            run, pair["student"], teacher, kd, pad, vocab, 5, small
        )
        assert small == {}
    finally:
        hook.remove()


TINY_CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_instruct_profiles_write_every_prompt_with_the_chat_template(tmp_path, monkeypatch):
    """An -Instruct profile builds every prompt (SFT, SeqKD, KD, validation, evaluation) with the
    tokenizer's chat template; a base profile never does."""
    from adaswitch_lib import data, models

    train_tokenizer = models.train_tokenizer

    def with_chat_template(*args, **kwargs):
        tokenizer = train_tokenizer(*args, **kwargs)
        tokenizer.chat_template = TINY_CHAT
        return tokenizer

    styles, format_prompt = [], data.format_prompt
    monkeypatch.setattr(models, "train_tokenizer", with_chat_template)
    monkeypatch.setattr(
        data,
        "format_prompt",
        lambda e, style="plain", tok=None: styles.append(style) or format_prompt(e, style, tok),
    )
    for instruct, expected in ((True, {"chat"}), (False, {"plain"})):
        styles.clear()
        profile = get_profile("smoke", instruct=instruct, kd_steps=2)
        record = run_module.run_distillation(
            run_for("seqkd", profile, tmp_path / str(instruct)), cache_root=tmp_path / "cache"
        )
        assert set(styles) == expected and record["metrics"]["synth_gsm_examples"] > 0
    outputs = (tmp_path / "True" / "smoke" / "runs").glob("*/outputs_synth_gsm.jsonl")
    first = json.loads(next(outputs).read_text().splitlines()[0])
    assert first["prompt"].startswith("<|user|>") and first["prompt"].endswith("<|assistant|>")


@pytest.mark.parametrize(
    "method,divergence",
    [("on_policy", "forward_kl"), ("adaswitch", "forward_kl"), ("skd", "jsd"), ("sft", None)],
)
def test_the_head_in_pieces_gives_the_one_pass_gradient(pair, monkeypatch, method, divergence):
    """At a Hub vocabulary the student's logits pass the budget and the update makes them a piece
    of positions at a time from the hidden states: the same step's gradient as the whole logits
    (forced here on the smoke pair by a budget of a few positions)."""
    from adaswitch_lib import losses

    monkeypatch.setattr(torch.optim, "AdamW", RecordingSGD)
    fields = dict(adaswitch_k=1.1, adaswitch_window=2)
    if divergence:
        fields["divergence"] = divergence
    pieces_made, real_head_loss = [], losses.head_loss
    monkeypatch.setattr(
        losses, "head_loss", lambda *a: pieces_made.append(a[-1]) or real_head_loss(*a)
    )
    grads = {}
    for budget in (distill_module.LOGITS_BUDGET_BYTES, 4 * 3 * pair["student"].config.vocab_size):
        monkeypatch.setattr(distill_module, "LOGITS_BUDGET_BYTES", budget)
        monkeypatch.setattr(losses, "LOGITS_BUDGET_BYTES", budget)
        RecordingSGD.seen = []
        profile = get_profile("smoke", kd_batch_size=8, grad_accum_steps=2, max_grad_norm=1e9)
        distill(
            run_for(method, profile, **fields),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=1,
        )
        grads[budget] = RecordingSGD.seen[0]
    whole, pieces = grads.values()
    assert pieces_made and set(pieces_made) == {1}  # only under the small budget, a position each
    assert any(bool(g.abs().sum() > 0) for g in pieces)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_8bit_adamw_keeps_8bit_moments_and_steps_as_adamw_does(pair):
    """kd_optimizer = adamw_8bit (the T4 route): bitsandbytes' moments of the large tensors are
    uint8, and five steps on the same gradients move the weights as fp32 AdamW does, to within a
    tenth of how far they moved."""
    pytest.importorskip("bitsandbytes")
    from adaswitch_lib.distill import make_optimizer

    students, optimizers = [], []
    for name in ("adamw", "adamw_8bit"):
        students.append(fresh_student(pair))
        optimizers.append(
            make_optimizer(students[-1], get_profile("smoke", kd_optimizer=name), 5)[0]
        )
    start = [p.detach().clone() for p in students[0].parameters()]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in start]
        for student, optimizer in zip(students, optimizers):
            for p, grad in zip(student.parameters(), grads):
                p.grad = grad.clone()
            optimizer.step()
    embedding = students[1].get_input_embeddings().weight
    assert embedding.numel() >= 4096
    assert optimizers[1].state[embedding]["state1"].dtype == torch.uint8
    for p32, p8, p0 in zip(students[0].parameters(), students[1].parameters(), start):
        moved = (p32 - p0).abs().max()
        assert moved > 0
        assert (p8 - p32).abs().max() < 0.1 * moved


def test_8bit_adamw_is_its_own_run_and_needs_bitsandbytes(cache, tmp_path, monkeypatch):
    """The route is a profile field: its runs get their own ids (the default's ids stay); without
    bitsandbytes a run stops in one line that says what to install."""
    import sys

    pytest.importorskip("bitsandbytes")
    from adaswitch_lib.config import plain, run_id

    profile = get_profile("smoke", kd_optimizer="adamw_8bit")
    assert run_id(run_for("on_policy", profile)) != run_id(run_for("on_policy"))
    assert "kd_optimizer" not in plain(run_for("on_policy"), result_only=True)["profile"]
    record = run_module.run_distillation(run_for("on_policy", profile, tmp_path), cache_root=cache)
    assert record["config"]["profile"]["kd_optimizer"] == "adamw_8bit"
    assert math.isfinite(record["metrics"]["final_loss"])
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(KitError, match=r"pip install 'bitsandbytes>=0.50'"):
        run_module.run_distillation(run_for("off_policy", profile, tmp_path), cache_root=cache)


@pytest.mark.slow
def test_the_step_benchmark_times_trl_gkd_beside_on_policy(pair):
    """benchmarks/bench_step.py --trl: TRL's GKDTrainer steps on the same prepared pair and prompts,
    in turns with the kit's on-policy step; both get a row with seconds per step and per
    generated token."""
    import subprocess
    import sys

    pytest.importorskip("trl")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"
    args = ["--prepared", str(pair["folder"]), "--trl", "--methods", "on_policy"]
    done = subprocess.run(
        [sys.executable, str(script), *args, "--steps", "2", "--repeats", "2", "--batch", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in done.stdout.splitlines()
        if line.startswith("| on_policy") or line.startswith("| trl_gkd")
    }
    assert set(rows) == {"on_policy", "trl_gkd"}
    for cells in rows.values():
        seconds, tokens, per_token = float(cells[3]), float(cells[8]), float(cells[9])
        assert seconds > 0 and 0 < tokens <= 64 and per_token > 0


def test_a_seed_gives_every_method_the_same_data_order_and_evaluation_set(pair, monkeypatch):
    """Seeds are paired across methods: a seed fixes the KD batches' order, whatever the method
    (so per-seed differences between methods are paired comparisons), and another seed changes
    it; the test subset scored during training and the final test set do not depend on either."""
    seen = {}

    class Recording(distill_module.EpochOrder):
        def next_batch(self, batch):
            rows = super().next_batch(batch)
            seen.setdefault(key, []).append(rows)
            return rows

    monkeypatch.setattr(distill_module, "EpochOrder", Recording)
    profile = get_profile("smoke", kd_steps=5)
    for key in (("sft", 0), ("adaswitch", 0), ("off_policy", 0), ("adaswitch", 1)):
        method, seed = key
        distill(
            run_for(method, profile, seed=seed),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=5,
        )
    assert seen["sft", 0] == seen["adaswitch", 0] == seen["off_policy", 0]
    assert seen["adaswitch", 1] != seen["adaswitch", 0] and len(seen["adaswitch", 1]) == 5
    # the evaluation sets come from the profile alone (run.py), whatever seeds it runs
    profiles = (get_profile("smoke"), get_profile("smoke", seeds=(0, 1, 2)))
    test = [load_profile_task(p, "synth_gsm", "test") for p in profiles]
    assert test[0] == test[1] and len(test[0]) > 0


@pytest.mark.parametrize("slow", ["exact", "speculative"])
def test_auto_continuation_takes_the_faster_and_is_that_run(pair, monkeypatch, slow):
    """teacher_continuation = "auto" times both continuations on the first step and keeps the
    faster (a fake clock makes the other one slower by 10 s a call) for the whole run, which then
    ends with exactly the weights of the run with that continuation fixed; the choice is in the
    result."""
    import types

    real, clock = distill_module.step_targets, [0.0]

    def timed(loop, *args):
        clock[0] += 10.0 if loop.cfg.teacher_continuation == slow else 1.0
        return real(loop, *args)

    monkeypatch.setattr(distill_module, "step_targets", timed)
    monkeypatch.setattr(
        distill_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0])
    )
    fast = "speculative" if slow == "exact" else "exact"
    out = {}
    for continuation in ("auto", fast):
        student = fresh_student(pair)
        run = run_for(
            "adaswitch", adaswitch_k=1.1, adaswitch_window=2, teacher_continuation=continuation
        )
        result = distill(
            run,
            pair["teacher"],
            student,
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=3,
        )
        out[continuation] = (result, [p.detach().clone() for p in student.parameters()])
    auto, fixed = out["auto"], out[fast]
    assert auto[0].continuation["chosen"] == fast and fixed[0].continuation is None
    assert (
        auto[0].continuation[f"{slow}_seconds"] == 10
        and auto[0].continuation[f"{fast}_seconds"] == 1
    )
    assert all(torch.equal(a, b) for a, b in zip(auto[1], fixed[1]))
    assert [e["loss"] for e in auto[0].log] == [e["loss"] for e in fixed[0].log]


def test_off_policy_scores_each_reference_response_once(pair, monkeypatch):
    """Off-policy's targets are fixed, so the teacher scores each KD example's reference response
    once: later epochs assemble their logits from the cache. The run matches one that rescores
    every step up to the rounding of another batch's padding; with no room in the cache it is
    that run."""
    calls = []
    real = distill_module.response_logits

    def counted(model, t, vocab):
        if model is pair["teacher"]:
            calls.append(t.sequences.shape[0])
        return real(model, t, vocab)

    monkeypatch.setattr(distill_module, "response_logits", counted)
    profile = get_profile("smoke", kd_batch_size=8, length_groups=2)
    steps = 2 * len(pair["kd"]) // 8  # two epochs
    losses = {}
    for budget in (distill_module.TEACHER_CACHE_BYTES, 0):
        monkeypatch.setattr(distill_module, "TEACHER_CACHE_BYTES", budget)
        calls.clear()
        result = distill(
            run_for("off_policy", profile),
            pair["teacher"],
            fresh_student(pair),
            pair["tokenizer"],
            pair["kd"],
            max_new_tokens=pair["max_new"],
            steps=steps,
        )
        losses[budget] = [e["loss"] for e in result.log]
        scored = sum(calls)
        assert scored == (len(pair["kd"]) if budget else 2 * len(pair["kd"])), budget
    cached, rescored = losses.values()
    assert cached[: steps // 2] == rescored[: steps // 2]  # the first epoch is the same work
    assert cached == pytest.approx(rescored, rel=1e-3)


def test_the_kd_schedule_warms_up_over_kd_warmup_ratio_alone():
    """KD's warm-up is its own field: the SFT's `warmup_ratio` does not move it."""

    def rates(**fields):
        student = torch.nn.Linear(4, 4)
        optimizer, schedule = distill_module.make_optimizer(
            student, get_profile("smoke", kd_lr=1.0, **fields), steps=10
        )
        out = []
        for _ in range(10):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return out

    # linear warm-up over the first 3 of 10 steps, then linear decay to 0 at step 10
    assert rates(kd_warmup_ratio=0.3) == pytest.approx(
        [0, 1 / 3, 2 / 3, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    )
    assert rates(kd_warmup_ratio=0.3, warmup_ratio=0.0) == rates(kd_warmup_ratio=0.3)
    assert rates()[:2] == pytest.approx([0.0, 1.0])  # the paper's 0.1: one step of 10
