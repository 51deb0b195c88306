"""The two ways in stay in step: pyproject's dependencies, environment.yml, run_all.sh and CI."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_kit_with_both_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"] and "python=3.11" in env["dependencies"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    assert "-e .[notebooks,dev]" in pip


def test_pyproject_packages_only_the_library_and_never_pins_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["adaswitch_lib*"]
    torch_req = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_req
    assert {"notebooks", "dev"} <= set(project["project"]["optional-dependencies"])


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_all.sh --test" in readme and "./run_all.sh --test" in ci


def test_run_all_help_and_bad_option():
    help_text = subprocess.run(
        ["bash", ROOT / "run_all.sh", "--help"], capture_output=True, text=True
    )
    assert help_text.returncode == 0 and "--profile NAME" in help_text.stdout
    bad = subprocess.run(["bash", ROOT / "run_all.sh", "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and re.search(r"unknown option '--fast'.*--help", bad.stderr)


def test_readme_stays_a_front_door_and_its_figures_match_the_kit():
    """The README is short, and the few numbers it states outside the generated block are the
    kit's own: the torch pin run_all.sh bootstraps, the cpu budget the gallery checks, cpu-full's
    seeds (measurements live in docs/)."""
    import inspect

    from adaswitch_lib.config import get_profile
    from adaswitch_lib.gallery import budget_line

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    torch_pin = re.search(r"torch==[\d.]+", (ROOT / "run_all.sh").read_text()).group(0)
    assert f"`{torch_pin}`" in readme
    target = inspect.signature(budget_line).parameters["target_min"].default
    assert f"{target:.0f} min target from scratch on 2 cores" in readme
    seeds = len(get_profile("cpu-full").seeds)
    assert f"every figure grid in full, {seeds} seeds" in readme


def test_transformers_range_is_the_tested_one():
    """4.46 does not run the kit (no set_attn_implementation); 5.40 drops what 5.x deprecates."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    req = next(d for d in project["project"]["dependencies"] if d.startswith("transformers"))
    assert req == "transformers>=4.57,<5.40"


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    modules = sorted(p.name for p in (ROOT / "adaswitch_lib").glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if f"\n  {m} " not in readme]
    assert not missing, f"README's layout does not list {missing}"
