"""The memory estimator: published parameter counts, the activation term, and the per-GPU verdicts
it gives the Hub profiles (docs/gpu.md prints the table)."""

import pytest

from adaswitch_lib.config import get_profile
from adaswitch_lib.errors import ConfigError
from adaswitch_lib.memory import (
    GIB,
    GPUS,
    activation_bytes,
    advice,
    memory_table,
    training_states,
)
from adaswitch_lib.models import PUBLISHED, pair_shapes, shape_of
from adaswitch_lib.plan import main as plan_main


@pytest.mark.parametrize(
    "name, billions",
    [
        ("Qwen/Qwen2.5-0.5B", 0.494),  # the model cards' counts
        ("Qwen/Qwen2.5-1.5B", 1.54),
        ("Qwen/Qwen2.5-3B", 3.09),
        ("meta-llama/Llama-3.2-1B", 1.24),
        ("meta-llama/Llama-3.2-3B", 3.21),
    ],
)
def test_published_shapes_give_the_published_parameter_counts(name, billions):
    assert PUBLISHED[name].parameters / 1e9 == pytest.approx(billions, abs=0.006)
    assert shape_of(name + "-Instruct") == PUBLISHED[name]


def test_activation_term_matches_the_bytes_a_layer_saves_for_backward():
    """Per token and layer, as benchmarks/bench_memory.py measured them at Qwen2.5-0.5B's shape:
    107,584 B in fp32, 66,368 B under bf16 autocast, 3,584 B (the fp32 layer input) checkpointed."""
    shape = PUBLISHED["Qwen/Qwen2.5-0.5B"]
    per_layer = {
        (False, False): 107584,
        (True, False): 66368,
    }
    for (half, checkpointing), measured in per_layer.items():
        estimate = activation_bytes(shape, 1, half, checkpointing) / shape.layers
        assert estimate == pytest.approx(measured, rel=0.03)
    # checkpointed: every layer's input, plus one layer recomputed at a time
    kept = activation_bytes(shape, 1000, True, True)
    assert kept == 1000 * (3584 * shape.layers + activation_bytes(shape, 1, True, False) / 24)


def _fits(table, phase: str) -> dict:
    rows = table[table["phase"] == phase]
    return {gpu: set(group["fits"]) == {"yes"} for gpu, group in rows.groupby("gpu")}


def test_the_estimator_says_where_each_hub_profile_fits():
    paper = memory_table(get_profile("paper"), ["h100"])
    assert (paper["fits"] == "yes").all(), paper  # the paper's setting fits one 80 GB card
    gpus = ["t4", "l4", "a100-40"]
    colab = memory_table(get_profile("colab"), gpus)
    # colab's LoRA teacher SFT fits every GPU named; its KD step fits the L4, not the T4 (the
    # student's fp32 AdamW states beside an fp32 teacher: the T4 has no bf16) ...
    assert _fits(colab, "teacher SFT") == {"T4 16 GB": True, "L4 24 GB": True, "A100 40 GB": True}
    assert _fits(colab, "KD student update") == {
        "T4 16 GB": False,
        "L4 24 GB": True,
        "A100 40 GB": True,
    }
    # ... but every phase fits the T4 with 8-bit AdamW states, and the estimator says so
    t4 = memory_table(get_profile("colab", kd_optimizer="adamw_8bit"), ["t4"])
    assert (t4["fits"] == "yes").all(), t4
    [line] = advice(get_profile("colab"), gpus)
    assert line.startswith("T4 16 GB: with --set kd_optimizer=adamw_8bit") and line.endswith(" fit")
    student = pair_shapes(get_profile("colab"), "qwen-small")[1]
    assert training_states(student, "adamw_8bit") == 10 * 494_005_120  # 4 + 4 + 2
    # full fine-tuning of the 1.5B teacher: 16 bytes a parameter (~23 GiB) before any activation
    full = memory_table(get_profile("colab", teacher_sft="full"), gpus)
    assert _fits(full, "teacher SFT") == {"T4 16 GB": False, "L4 24 GB": False, "A100 40 GB": True}
    # without gradient checkpointing every training phase needs more
    plain = memory_table(get_profile("colab", gradient_checkpointing=False), gpus)
    for phase in ("teacher SFT", "KD student update"):
        assert (
            plain[plain["phase"] == phase]["gib"].values
            > colab[colab["phase"] == phase]["gib"].values
        ).all()
    assert GPUS["t4"].gib * GIB < 16e9


def test_plan_memory_prints_the_table_and_refuses_tiny_profiles(capsys):
    assert plan_main(["--memory", "--profile", "colab", "--gpu", "l4"]) == 0
    out = capsys.readouterr().out
    assert "teacher SFT" in out and "L4 24 GB" in out
    assert plan_main(["--memory", "--profile", "cpu"]) == 2
    assert "only tiny pairs" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown GPU"):
        memory_table(get_profile("colab"), ["v100"])


def test_the_phase_benchmark_runs_every_phase_on_cpu():
    """benchmarks/bench_phases.py (what gpu_checks.sh runs at colab shapes) at small shapes: every
    phase runs and gets a row beside the estimator's figure."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_phases.py"
    done = subprocess.run(
        [sys.executable, str(script), "--tiny", "--steps", "1", "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[:2] == ["teacher SFT (1 steps)", "pair evaluation (greedy)"]
    assert names[-1] == "KD validation" and len(names) == 2 + 7 + 1


def test_a_hub_run_on_a_small_gpu_is_warned_with_its_route():
    """At the start of a Hub pair's run on a GPU, each phase the estimator says will not fit gets
    one line, with the route that fits it: colab's KD update on a T4, nothing on an L4, nothing
    once the route is taken, nothing for tiny pairs or without a GPU."""
    from adaswitch_lib.memory import fit_warnings

    colab = get_profile("colab")
    [line] = fit_warnings(colab, "qwen-small", "gsm8k", GPUS["t4"])
    assert line.startswith("KD student update needs ~16.8 GiB") and "T4 16 GB has 14.7" in line
    assert line.endswith("with --set kd_optimizer=adamw_8bit: ~14.1 GiB")
    assert fit_warnings(colab, "qwen-small", "gsm8k", GPUS["l4"]) == []
    routed = get_profile("colab", kd_optimizer="adamw_8bit")
    assert fit_warnings(routed, "qwen-small", "gsm8k", GPUS["t4"]) == []
    assert fit_warnings(get_profile("cpu"), "tiny-qwen", "synth_gsm", GPUS["t4"]) == []
    assert fit_warnings(colab, "qwen-small", "gsm8k", None) == []
