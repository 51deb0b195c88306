import dataclasses
import json
import math
import subprocess
import sys

import pytest

from adaswitch_lib.config import PROFILES, RunConfig, TinyShape, get_profile, run_id
from adaswitch_lib.errors import ConfigError


def test_profiles_carry_the_paper_hyperparameters():
    paper = get_profile("paper")
    assert (paper.kd_lr, paper.kd_warmup_ratio, paper.kd_epochs, paper.n_kd) == (
        1e-5,
        0.1,
        3.0,
        1000,
    )
    assert paper.warmup_ratio == 0.1  # the SFT's, as the paper's trainer
    assert (paper.max_prompt_tokens_summ, paper.max_new_tokens_summ) == (1024, 256)
    assert (paper.max_prompt_tokens_gsm, paper.max_new_tokens_gsm) == (128, 512)
    assert (paper.student_temperature, paper.student_top_p) == (0.5, 0.5)
    assert (paper.teacher_temperature, paper.teacher_top_p) == (0.2, 0.5)
    run = RunConfig(profile=paper, pair="qwen", task="gsm8k")
    assert (run.adaswitch_k, run.adaswitch_window, run.skd_top_k, run.divergence) == (
        3.0,
        10,
        25,
        "forward_kl",
    )


def test_named_profiles_and_tiny_sizes():
    assert set(PROFILES) == {"smoke", "cpu", "cpu-claims", "cpu-full", "colab", "paper"}
    smoke, cpu = get_profile("smoke"), get_profile("cpu")
    assert smoke.offline and cpu.offline and not get_profile("paper").offline
    assert smoke.teacher_shape != cpu.teacher_shape and smoke.kd_steps < cpu.kd_steps
    assert get_profile("colab").pairs == ("qwen-small",)


def test_run_id_is_stable_and_sensitive():
    base = RunConfig(profile=get_profile("smoke"))
    assert run_id(base) == run_id(RunConfig(profile=get_profile("smoke")))
    # same id in another process (no reliance on Python's salted hash())
    code = (
        "from adaswitch_lib.config import *; print(run_id(RunConfig(profile=get_profile('smoke'))))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == run_id(base)
    # every result-changing field, top-level or nested in the profile, changes the id
    changed = [
        dataclasses.replace(base, seed=1),
        dataclasses.replace(base, adaswitch_k=4.0),
        dataclasses.replace(base, method="skd"),
        dataclasses.replace(base, adaswitch_k=math.inf),
        dataclasses.replace(base, profile=get_profile("smoke", kd_lr=2e-3)),
        dataclasses.replace(
            base, profile=get_profile("smoke", student_shape=TinyShape(1, 32, 2, 1, 96))
        ),
    ]
    ids = {run_id(r) for r in changed}
    assert len(ids) == len(changed) and run_id(base) not in ids
    # fields that only affect logging or paths do not
    assert run_id(dataclasses.replace(base, results_dir="/elsewhere")) == run_id(base)
    assert run_id(dataclasses.replace(base, profile=get_profile("smoke", log_every=99))) == run_id(
        base
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: get_profile("laptop"),
            "unknown profile 'laptop'; valid names: smoke, cpu, cpu-claims, cpu-full, colab, paper",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), task="gsm9k"),
            "unknown task 'gsm9k'; valid names: gsm8k",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), pair="gpt"),
            "unknown pair 'gpt'; valid names: qwen",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), method="dpo"),
            "unknown method 'dpo'; valid names: sft",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), adaswitch_k=0),
            "adaswitch_k (K) = 0 is outside the allowed range (0, inf)",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), adaswitch_k=-1.0),
            "adaswitch_k (K) = -1.0",
        ),
        (
            lambda: RunConfig(profile=get_profile("smoke"), adaswitch_window=0),
            "adaswitch_window (L) = 0 is outside the allowed range [1, inf)",
        ),
        (
            lambda: get_profile("smoke", student_top_p=0.0),
            "student_top_p = 0.0 is outside the allowed range (0, 1]",
        ),
        (
            lambda: get_profile("smoke", teacher_top_p=1.5),
            "teacher_top_p = 1.5 is outside the allowed range (0, 1]",
        ),
        (
            lambda: get_profile("smoke", kd_steps=-3),
            "kd_steps = -3 is outside the allowed range [0, inf)",
        ),
        (lambda: get_profile("smoke", teacher_steps=-1), "teacher_steps = -1"),
        (lambda: get_profile("smoke", bogus=1), "unknown profile field 'bogus'"),
        (lambda: RunConfig(profile=get_profile("smoke"), skd_top_p=1.2), "skd_top_p = 1.2"),
        (
            lambda: TinyShape(layers=2, hidden=100, heads=3),
            "TinyShape: hidden (100) must divide by heads (3)",
        ),
    ],
)
def test_bad_input_gives_one_clear_error(make, message):
    with pytest.raises(ConfigError) as info:
        make()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_config_field_carries_its_help():
    """The help lives in each field's metadata (the command line and `python -m
    adaswitch_lib.config` read it from there), and `affects_result` there decides the run id."""
    import dataclasses

    from adaswitch_lib.config import (
        Profile,
        RunConfig,
        SynthConfig,
        TinyShape,
        field_help,
        flat_help,
    )

    for cls in (Profile, RunConfig, SynthConfig, TinyShape):
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name != "profile" and not f.metadata.get("help")
        ]
        assert not missing, f"{cls.__name__} fields without help: {missing}"
    assert field_help(RunConfig)["adaswitch_k"].startswith("switch when d_i > K")
    assert "synth.max_operand" in flat_help(Profile) and "teacher_shape" in flat_help(Profile)
    unaffecting = {
        f.name for f in dataclasses.fields(Profile) if f.metadata["affects_result"] is False
    }
    assert unaffecting == {
        "data_dir",
        "gradient_checkpointing",
        "log_every",
        "seeds",
        "unclaimed_seed_count",
        "figure_pairs",
        "figure_tasks",
        "fig3_methods",
        "fig3_divergences",
        "fig6_k",
        "fig6_window",
    }


def test_checkpoint_fields_stay_out_of_run_ids_until_set():
    """The Hub pairs' checkpoint overrides (and the later memory and SFT fields) joined the profile
    without changing any existing run id: unset, they are left out of the hash; set, they change
    it (gradient checkpointing, the same numbers, never does)."""
    from adaswitch_lib.config import RunConfig, get_profile, run_id

    def paper_id(**fields):
        profile = get_profile("paper", pairs=("qwen",), **fields)
        return run_id(RunConfig(profile, pair="qwen", task="gsm8k"))

    # the id this run had before the fields existed (commit db9a8ae)
    assert paper_id() == "qwen-gsm8k-adaswitch-s0-755fbe351a2b"
    for field in ("teacher_model", "student_model", "teacher_revision", "student_revision"):
        assert paper_id(**{field: "x"}) != paper_id(), field
    assert paper_id(teacher_sft="lora") != paper_id() != paper_id(sft_val_examples=8)
    # a local data copy is meant to hold the same data: no new id
    assert paper_id(data_dir="/data") == paper_id(gradient_checkpointing=False) == paper_id()


def test_checkpoint_overrides_need_one_hub_pair():
    from adaswitch_lib.config import get_profile

    with pytest.raises(ConfigError, match="choose one Hub pair"):
        get_profile("paper", teacher_model="/models/teacher")  # qwen and llama: whose teacher?
    with pytest.raises(ConfigError, match="choose one Hub pair"):
        get_profile("cpu", student_revision="main")  # tiny pairs are built here
    assert get_profile("paper", pairs=("qwen",), teacher_revision="v1").teacher_revision == "v1"


def test_set_parses_like_the_field_and_profiles_round_trip_through_json():
    from adaswitch_lib.config import get_profile, parse_overrides, profile_overrides

    parsed = parse_overrides(["pairs=qwen", "seeds=0,1,2", "kd_steps=50", "instruct=false"])
    assert parsed == dict(pairs=("qwen",), seeds=(0, 1, 2), kd_steps=50, instruct=False)
    with pytest.raises(ConfigError, match="kd_steps takes a value of type int"):
        parse_overrides(["kd_steps=many"])
    with pytest.raises(ConfigError, match="synth.FIELD=VALUE"):
        parse_overrides(["synth=1"])
    with pytest.raises(ConfigError, match="synth.summ_rejections takes a value of type int"):
        parse_overrides(["synth.summ_rejections=a few"])
    shape = parse_overrides(["student_shape=1,96,4,2,384"])["student_shape"]
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.intermediate) == (
        1,
        96,
        4,
        2,
        384,
    )
    with pytest.raises(ConfigError, match="student_shape takes a value of type TinyShape"):
        parse_overrides(["student_shape=1,96"])
    with pytest.raises(ConfigError, match="must divide"):
        parse_overrides(["student_shape=1,90,4,2,384"])
    # what the pipeline hands each notebook: JSON values that rebuild the same profile
    profile = get_profile("paper", pairs=("qwen",), teacher_model="/m", seeds=(0, 1))
    overrides = json.loads(json.dumps(profile_overrides(profile)))
    assert overrides == dict(pairs=["qwen"], teacher_model="/m", seeds=[0, 1])
    assert get_profile("paper", **overrides) == profile
    assert profile_overrides(get_profile("cpu")) == {}


def test_a_harder_summarisation_twin_renames_summarisation_runs_only():
    """`synth.summ_rejections` is read by synth_summ alone: set, it renames the synth_summ runs and
    prepared pairs and leaves every synth_gsm id as it was (no GSM run is redone); unset, no id
    changes at all (the ids are those of committed cpu-claims runs)."""
    from adaswitch_lib.config import get_profile, parse_overrides, profile_overrides
    from adaswitch_lib.prepare import pair_key

    harder = parse_overrides(["synth.summ_rejections=3", "kd_steps=9"])
    assert harder == dict(synth=dict(summ_rejections=3), kd_steps=9)
    smoke = get_profile("smoke", **harder)
    assert smoke.synth.summ_rejections == 3 and smoke.synth.n_train_gsm == 400  # smoke's own size
    assert get_profile("smoke", **json.loads(json.dumps(profile_overrides(smoke)))) == smoke

    def ids(profile):
        return {
            task: (
                run_id(RunConfig(profile, pair="tiny-qwen", task=task, method="adaswitch")),
                pair_key(profile, "tiny-qwen", task),
            )
            for task in ("synth_gsm", "synth_summ")
        }

    before = ids(get_profile("cpu-claims"))
    assert before["synth_gsm"][0] == "tiny-qwen-synth_gsm-adaswitch-s0-0f5226230285"
    assert before["synth_summ"][0] == "tiny-qwen-synth_summ-adaswitch-s0-35f14b06d87e"
    after = ids(get_profile("cpu-claims", synth=dict(summ_rejections=3)))
    assert after["synth_gsm"] == before["synth_gsm"]
    assert after["synth_summ"][0] != before["synth_summ"][0]
    assert after["synth_summ"][1] != before["synth_summ"][1]
