"""Notebooks: committed without outputs, with a tagged parameters cell, and runnable by
papermill."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    stored = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not stored, (
        f"{path.name}: code cells {stored} have stored outputs; clear them before committing"
    )
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert nb["metadata"]["kernelspec"]["name"] == "python3" and "language_info" in nb["metadata"]


# The report notebooks (04-11) read the records of many runs: test_pipeline executes them after a
# smoke pipeline. These four stand alone.
STANDALONE = [
    p for p in NOTEBOOKS if p.stem in ("00_walkthrough", "01_tasks", "02_prepare", "03_distill")
]


def test_report_notebooks_are_the_pipelines():
    from adaswitch_lib.pipeline import CLAIMS, REPORTS

    assert {p.name for p in NOTEBOOKS} == {p.name for p in STANDALONE} | set(REPORTS.values()) | {
        CLAIMS
    }


@pytest.mark.parametrize("path", STANDALONE, ids=lambda p: p.stem)
def test_notebook_runs_under_papermill(path, tmp_path):
    import papermill as pm

    out = tmp_path / path.name
    parameters = {"profile": "smoke"}
    if "results_dir" in pm.inspect_notebook(str(path)):
        parameters["results_dir"] = str(tmp_path / "results")
    pm.execute_notebook(
        str(path),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(path.parent),
        progress_bar=False,
        request_save_on_cell_execute=False,
        # a stalled kernel fails the test instead of holding CI to its limit
        execution_timeout=900,
    )
    executed = json.loads(out.read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    if path.stem == "03_distill":
        records = list((tmp_path / "results" / "smoke" / "runs").glob("*/record.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["kind"] == "distillation"
