"""The dry run's GPU time for Hub profiles: a roofline from shapes and tokens (runtime.py)."""

import math

import pytest

from adaswitch_lib import pipeline, runtime
from adaswitch_lib.config import RunConfig, get_profile
from adaswitch_lib.models import PUBLISHED


def test_an_on_policy_run_is_its_steps_times_the_roofline_of_one_step():
    colab = get_profile("colab")
    assert runtime.kd_steps(colab) == 250  # 1,000 KD examples, batch 4, one epoch
    teacher = PUBLISHED["Qwen/Qwen2.5-1.5B"].parameters
    student = PUBLISHED["Qwen/Qwen2.5-0.5B"].parameters
    speed = runtime.SPEEDS["a100-40"]
    tokens = 4 * (128 + 512)
    flops = 2 * teacher * tokens + 2 * (1 + 3) * student * tokens  # checkpointed backward
    step = flops / (312e12 * 0.4) + 512 * 4 * student / (1555e9 * 0.6)
    seconds = runtime.distill_seconds(colab, "qwen-small", "gsm8k", "on_policy", "a100-40")
    assert seconds == pytest.approx(250 * step)
    assert speed.tflops == 312


def test_the_roofline_orders_methods_and_gpus_as_expected():
    colab = get_profile("colab")

    def hours(method, gpu="l4"):
        return runtime.distill_seconds(colab, "qwen-small", "gsm8k", method, gpu) / 3600

    # no sampling < the student samples < the teacher decodes beside it
    assert hours("off_policy") < hours("on_policy") < hours("adaswitch") == hours("skd")
    assert hours("adaswitch", "h100") < hours("adaswitch", "a100-40") < hours("adaswitch", "t4")
    # LoRA's SFT skips the frozen weights' gradients
    full = get_profile("colab", teacher_sft="full")
    assert runtime.prepare_seconds(full, "qwen-small", "gsm8k", "l4") > runtime.prepare_seconds(
        colab, "qwen-small", "gsm8k", "l4"
    )


def test_the_dry_run_of_a_hub_profile_uses_the_roofline(capsys, monkeypatch):
    monkeypatch.setattr(runtime, "detected_gpu", lambda: "a100-80")  # whatever this machine has
    colab = get_profile("colab")
    run = RunConfig(colab, pair="qwen-small", task="gsm8k", method="adaswitch")
    estimate = pipeline._estimate(colab, run, None)
    roofline = runtime.distill_seconds(colab, "qwen-small", "gsm8k", "adaswitch", "a100-80")
    assert estimate == pytest.approx(roofline + pipeline.JOB_OVERHEAD)
    # the cpu constants would say 100 steps x 0.24 s
    assert not math.isclose(estimate, 100 * pipeline.SECONDS_PER_STEP["adaswitch"] + 8.0)
    assert pipeline.main(["--profile", "colab", "--only", "table1", "--dry-run"]) == 0
    assert "roofline on one a100-80" in capsys.readouterr().out


def test_runtime_prints_table1_hours_and_refuses_unknown_gpus(capsys):
    assert runtime.main(["--profile", "colab", "--gpu", "l4"]) == 0
    out = capsys.readouterr().out
    assert "adaswitch" in out and "Table 1 of colab on one l4: about" in out
    assert runtime.main(["--profile", "colab", "--gpu", "v100"]) == 2
    assert "unknown GPU" in capsys.readouterr().err
    # a tiny pair has no roofline: one line that says where its times are, not a traceback
    assert runtime.main(["--profile", "cpu-claims"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiny pairs (tiny-qwen, tiny-llama) train on this CPU" in err
