"""The command line and the module layout."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from adaswitch_lib.__main__ import build_parser, main

PACKAGE = Path(__file__).resolve().parents[1] / "adaswitch_lib"


def test_help_lists_every_option_with_its_default_and_valid_values():
    text = build_parser()._subparsers._group_actions[0].choices["distill"].format_help()
    for option in (
        "--pair",
        "--task",
        "--method",
        "--divergence",
        "--K",
        "--L",
        "--seed",
        "--skd-rule",
        "--imitkd-beta-start",
        "--loss-reduction",
        "--results-dir",
        "--set",
    ):
        assert option in text, option
    flat = " ".join(text.split())  # argparse wraps long help lines
    assert (
        "--adaswitch-k ADASWITCH_K, --K ADASWITCH_K switch when d_i > K * mean" in flat
        and "(default: 3.0)" in flat
    )
    assert "one of: sft, seqkd, off_policy, on_policy, imitkd, skd, adaswitch" in flat
    assert "one of: forward_kl, reverse_kl, jsd, tvd, skew_kl, skew_reverse_kl" in flat


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["distill", "--profile", "smoke", "--method", "magic"],
            "unknown method 'magic'; valid names: sft, seqkd",
        ),
        (
            ["distill", "--profile", "smoke", "--K", "-1"],
            "adaswitch_k (K) = -1.0 is outside the allowed range (0, inf)",
        ),
        (
            ["distill", "--profile", "nope"],
            "unknown profile 'nope'; valid names: smoke, cpu, cpu-claims, cpu-full, colab, paper",
        ),
        (
            ["distill", "--profile", "smoke", "--set", "kd_stepz=3"],
            "--set 'kd_stepz=3': use FIELD=VALUE with a profile field",
        ),
        (
            ["distill", "--profile", "smoke", "--set", "kd_steps=many"],
            "--set 'kd_steps=many': kd_steps takes a value of type int",
        ),
    ],
)
def test_bad_names_and_values_give_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_config_prints_a_readable_table():
    out = subprocess.run(
        [sys.executable, "-m", "adaswitch_lib.config"], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) < 200
    assert any(line.startswith("synth.max_operand") for line in lines)
    assert any(line.startswith("teacher_shape") and "4x256" in line for line in lines)


ORDER = [
    "errors",
    "stats",
    "atomic",
    "notebook",
    "losses",
    "methods",
    "config",
    "kernels",
    "metrics",
    "synth",
    "data",
    "models",
    "memory",
    "plan",
    "runtime",
    "decoding",
    "rules",
    "reference",
    "sampler",
    "targets",
    "distill",
    "evaluate",
    "prepare",
    "results",
    "run",
    "walkthrough",
    "report",
    "figures",
    "regime",
    "claims",
    "gallery",
    "pipeline",
    "__main__",
]


def test_imports_point_one_way():
    """losses -> config -> data -> models -> sampler -> distill -> evaluate -> results -> run ->
    pipeline: a module imports only modules before it (at the top or inside a function)."""
    assert sorted(ORDER) == sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    for name in ORDER:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            targets = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("adaswitch_lib")
            ):
                targets = (
                    [node.module.split(".")[1]]
                    if "." in node.module
                    else [a.name for a in node.names]
                )
            for target in targets:
                assert ORDER.index(target) < ORDER.index(name), f"{name} imports {target}"


def test_code_passes_ruff():
    """The style gate in the test command: ruff format and lint, complexity limit included."""
    root = PACKAGE.parent
    for args in (["format", "--check", "."], ["check", "."]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=root, capture_output=True, text=True
        )
        assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout}{done.stderr}"
