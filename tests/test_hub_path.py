"""The paper's Hub path end to end, offline: the real tokenizers around random 2-layer models of
the real vocabulary sizes (tests/hub_checkpoints.py), the real GSM8K / GSM-Plus files, through the
entry points a user calls: the command line for qwen base and llama base, `./run_all.sh` for the
colab profile's qwen -Instruct pair, and a Hub id read from an offline cache.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_checkpoints import TINY_BUDGET, hub_cache, local_data_dir, make_checkpoint

from adaswitch_lib import config
from adaswitch_lib.__main__ import main as cli

ROOT = Path(__file__).resolve().parents[1]
SETS = [arg for item in TINY_BUDGET for arg in ("--set", item)]


@pytest.fixture
def data_dir(shared_data, tmp_path):
    return local_data_dir(shared_data, tmp_path / "data")


def _pair(shared_data, tmp_path, family: str, variant: str):
    teacher = make_checkpoint(shared_data, tmp_path / "teacher", family, variant, 64, seed=1)
    student = make_checkpoint(shared_data, tmp_path / "student", family, variant, 32, seed=2)
    return teacher, student


def _records(results: Path, profile: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in (results / profile / "runs").glob("*/record.json")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, profile, pair", [("qwen", "paper", "qwen"), ("llama", "paper", "llama")]
)
def test_the_command_line_runs_every_method_on_local_base_checkpoints(
    shared_data, data_dir, tmp_path, monkeypatch, family, profile, pair
):
    teacher, student = _pair(shared_data, tmp_path, family, "base")
    monkeypatch.chdir(tmp_path)  # results/ and .cache/ land here
    common = [
        "--profile",
        profile,
        "--set",
        f"pairs={pair}",
        *SETS,
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--data-dir",
        str(data_dir),
        "--pair",
        pair,
        "--task",
        "gsm8k",
    ]
    assert cli(["prepare", *common]) == 0
    assert cli(["baselines", *common]) == 0
    for method in config.METHODS:
        assert cli(["distill", *common, "--method", method]) == 0, method
    records = _records(tmp_path / "results", profile)
    made = sorted(
        r["config"]["method"] if r["kind"] == "distillation" else r["kind"] for r in records
    )
    assert made == sorted([*config.METHODS, "teacher", "student"])
    for record in records:
        # every record was scored on GSM8K and GSM-Plus (3 examples each), from the local files
        scores = {k: v for k, v in record["metrics"].items() if k.endswith("_examples")}
        assert scores == {"gsm8k_examples": 3, "gsm_plus_examples": 3}, record["run_id"]
        used = record["config"].get("profile", record["config"])
        assert used["teacher_model"] == str(teacher) and used["data_dir"] == str(data_dir)
    # the prepared pair says what it was made from
    (metrics,) = (tmp_path / ".cache" / "models" / profile).glob("*/metrics.json")
    made_from = json.loads(metrics.read_text())
    assert made_from["teacher_checkpoint"] == {"name_or_path": str(teacher), "revision": None}


@pytest.mark.slow
def test_run_all_makes_table1_of_local_instruct_checkpoints(shared_data, data_dir, tmp_path):
    """The colab profile's -Instruct pair through ./run_all.sh: preparation, every method, Table 1,
    with the models and the data given as local folders."""
    teacher, student = _pair(shared_data, tmp_path, "qwen", "instruct")
    results = tmp_path / "results"
    env = dict(os.environ, VIRTUAL_ENV=str(Path(sys.executable).parents[1]))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    command = [
        str(ROOT / "run_all.sh"),
        "--profile",
        "colab",
        "--only",
        "table1",
        *SETS,
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--data-dir",
        str(data_dir),
        "--results-dir",
        str(results),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (results / "colab" / "tables" / "table1.csv").read_text()
    for method in ("SFT", "AdaSwitch", "GSM-Plus"):
        assert method in table, table
    manifest = json.loads((results / "colab" / "manifest.json").read_text())
    assert manifest["overrides"]["teacher_model"] == str(teacher)
    assert not manifest["failed"]


_OFFLINE_LOAD = """
from adaswitch_lib import models
from adaswitch_lib.config import get_profile
profile = get_profile("colab", teacher_revision="{commit}", student_revision="{commit}")
teacher, student = models.pair_checkpoints(profile, "qwen-small")
print(teacher.name_or_path, teacher.revision)
model = models.load_model(teacher.name_or_path, revision=teacher.revision)
tokenizer = models.load_tokenizer(student.name_or_path, student.revision)
print(model.config.vocab_size, tokenizer.eos_token, models.stop_token_ids(tokenizer, model))
"""


@pytest.mark.slow
def test_a_hub_id_loads_from_an_offline_cache(shared_data, tmp_path):
    """HF_HUB_OFFLINE=1 with a filled cache: the pair's own Hub ids, pinned to a revision, load
    without the network (and an unknown revision fails with one line)."""
    teacher, student = _pair(shared_data, tmp_path, "qwen", "instruct")
    cache = tmp_path / "hub"
    commit = "1234567890abcdef1234567890abcdef12345678"
    hub_cache(cache, "Qwen/Qwen2.5-1.5B-Instruct", teacher, commit)
    hub_cache(cache, "Qwen/Qwen2.5-0.5B-Instruct", student, commit)
    script = _OFFLINE_LOAD.format(commit=commit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [
        "Qwen/Qwen2.5-1.5B-Instruct",
        commit,
        "151936",
        "<|im_end|>",
        "(151643,",
        "151645)",
    ]
    missing = script.replace(commit, "f" * 40, 1)
    done = subprocess.run(
        [sys.executable, "-c", missing], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode != 0 and "DataUnavailableError: cannot load model" in done.stderr


def test_the_walkthrough_runs_on_off_the_shelf_hub_checkpoints(shared_data, data_dir, tmp_path):
    """AdaSwitch on an -Instruct Hub pair as published, with no preparation: the walkthrough's
    trace of one GSM8K test prompt, written in the chat template, under the real tokenizer."""
    from adaswitch_lib.config import get_profile
    from adaswitch_lib.walkthrough import load_pair, trace

    teacher, student = _pair(shared_data, tmp_path, "qwen", "instruct")
    profile = get_profile(
        "colab",
        teacher_model=str(teacher),
        student_model=str(student),
        data_dir=str(data_dir),
        max_new_tokens_gsm=24,
    )
    cache = tmp_path / "cache"
    pair = load_pair(profile, "qwen-small", "gsm8k", cache, off_the_shelf=True)
    assert not cache.exists()  # nothing prepared
    t = trace(profile, "qwen-small", "gsm8k", *pair[:3], pair[3][0], K=1.0, L=4)
    assert t["prompt"].startswith("system\nYou are Qwen") and "Janet" in t["prompt"]
    assert len(t["tokens"]) == len(t["d"]) == len(t["who"]) and len(t["tokens"]) > 4
    assert t["who"][0] == "student"
    with pytest.raises(config.ConfigError, match="takes a Hub pair"):
        load_pair(get_profile("smoke"), "tiny-qwen", "synth_gsm", cache, off_the_shelf=True)


@pytest.mark.slow
def test_the_command_line_runs_dialogsum_on_local_llama_checkpoints(
    shared_data, data_dir, tmp_path, monkeypatch, capsys
):
    """DialogSum through the Hub path: dialogues longer than the prompt limit cut in the middle
    (the log says how many), ROUGE-L on the real references, AdaSwitch and SFT."""
    teacher, student = _pair(shared_data, tmp_path, "llama", "base")
    monkeypatch.chdir(tmp_path)
    common = [
        "--profile",
        "paper",
        "--set",
        "pairs=llama",
        *SETS,
        "--set",
        "train_tasks=dialogsum",
        "--set",
        "eval_tasks=dialogsum",
        "--set",
        "max_prompt_tokens_summ=96",
        "--set",
        "max_new_tokens_summ=12",
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--data-dir",
        str(data_dir),
        "--pair",
        "llama",
        "--task",
        "dialogsum",
    ]
    assert cli(["prepare", *common]) == 0
    assert "prompts over 96 tokens" in capsys.readouterr().out
    for method in ("sft", "adaswitch"):
        assert cli(["distill", *common, "--method", method]) == 0, method
    records = _records(tmp_path / "results", "paper")
    assert len(records) == 2
    for record in records:
        assert record["metrics"]["dialogsum_examples"] == 3
        assert 0.0 <= record["metrics"]["dialogsum_score"] <= 100.0
