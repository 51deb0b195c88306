import json
from pathlib import Path

import pytest

from adaswitch_lib.errors import KitError
from adaswitch_lib.gallery import (
    BEGIN,
    END,
    SUMMARY_BEGIN,
    SUMMARY_END,
    gallery_markdown,
    page_block,
    pages,
    splice,
    summary_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


def _results(tmp_path: Path) -> Path:
    root = tmp_path / "results" / "cpu"
    (root / "tables").mkdir(parents=True)
    (root / "figures").mkdir()
    manifest = dict(
        profile="cpu",
        started="2026-01-01T10:00:00+00:00",
        finished="2026-01-01T10:45:30+00:00",
        jobs=2,
        threads_per_job=1,
        phase_seconds={"prepare": 600.0, "distill": 2070.0, "report": 60.0},
        job_seconds={"prepare-a": 300.0, "run-b": 100.0, "04_table1": 7.0},
        skipped=[],
        provenance=dict(
            device="cpu: Test CPU",
            cpu_count=2,
            git=dict(commit="abcdef123456", dirty=False),
            packages=dict(torch="2.13.0+cpu", transformers="5.23.0"),
        ),
    )
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "tables" / "table1.md").write_text(
        "| method | Qwen GSM |\n|---|---|\n| AdaSwitch | 51.00 |\n"
    )
    (root / "tables" / "table2.md").write_text("| method | GSM Qwen |\n|---|---|\n| SKD | 1.20 |\n")
    (root / "tables" / "table2.csv").write_text(
        "method,GSM Llama,GSM Qwen\nSKD,1.1149,1.2011\nAdaSwitch,1.3,1.3\n"
    )
    (root / "claims.md").write_text(
        "# claims\n\nintro\n\n| claim | verdict |\n|---|---|\n| a | holds |\n"
    )
    (root / "figures" / "fig6_k_and_l.png").write_bytes(b"png")
    return tmp_path / "results"


def test_gallery_is_built_from_the_results(tmp_path, monkeypatch):
    block = gallery_markdown("cpu", _results(tmp_path))
    assert block.startswith(BEGIN.format(profile="cpu")) and block.endswith(END)
    assert (
        "**45.5 min** (from scratch; prepare 10.0 min, distill 34.5 min, report 1.0 min), 2 jobs "
        "run" in block
    )
    assert "on cpu: Test CPU with 2 cores" in block and "commit abcdef1," in block
    assert (
        "| AdaSwitch | 51.00 |" in block and "| SKD | 1.20 |" in block and "| a | holds |" in block
    )
    # the budget: 60 min target, 90 min ceiling
    assert "this run: 45.5 min, within the target." in block
    assert (
        "SKD on GSM 1.11–1.20× (paper 1.53–1.61×); AdaSwitch on GSM 1.30× (paper 1.38–1.41×)."
        in block
    )
    # only figures that exist
    assert "fig6_k_and_l.png)" in block and "fig3_divergences" not in block
    readme = f"# Title\n\nbefore\n\n{BEGIN.format(profile='cpu')}\nSTALE-BLOCK\n{END}\n\nafter\n"
    new = splice(readme, block, "cpu")
    assert (
        new.startswith("# Title\n\nbefore\n\n")
        and new.endswith("\n\nafter\n")
        and "STALE-BLOCK" not in new
    )
    assert page_block(new, "cpu") == block
    _results(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")  # a page in docs/ links back to the kit's folder
    assert "](../results/cpu/figures/fig6_k_and_l.png)" in gallery_markdown("cpu", "results", "../")


def test_summary_is_the_run_line_and_table1_with_a_link(tmp_path):
    block = summary_markdown("cpu", _results(tmp_path))
    assert block.startswith(SUMMARY_BEGIN.format(profile="cpu")) and block.endswith(SUMMARY_END)
    assert "**45.5 min**" in block and "this run: 45.5 min, within the target." in block
    assert "| AdaSwitch | 51.00 |" in block and "| SKD | 1.20 |" not in block  # Table 1 only
    assert "[docs/results.md](docs/results.md)" in block


def test_missing_results_and_markers_are_clear_errors(tmp_path):
    with pytest.raises(
        KitError,
        match=r"no finished results for profile 'cpu'.*run `./run_all.sh --profile cpu` first",
    ):
        gallery_markdown("cpu", tmp_path)
    with pytest.raises(KitError, match="the page has no gallery markers"):
        splice("# no markers\n", "block", "cpu")


def _extract_committed_cpu_results(tmp_path: Path) -> None:
    """results/cpu as committed (not as a local run_all may have rewritten it) under tmp_path."""
    import subprocess
    import tarfile

    try:
        archive = subprocess.run(
            ["git", "archive", "HEAD", "results/cpu"], cwd=ROOT, capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout with committed cpu results")
    (tmp_path / "r.tar").write_bytes(archive.stdout)
    with tarfile.open(tmp_path / "r.tar") as tar:
        tar.extractall(tmp_path, filter="data")


def test_results_pages_equal_the_committed_results(tmp_path):
    """docs/results.md and the README's summary are generated from the committed cpu results, not
    typed (compared with the files as committed, so a local run_all that rewrote results/cpu does
    not fail this)."""
    import os

    _extract_committed_cpu_results(tmp_path)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # the links are relative to the repository root
        expected = pages("cpu", "results")
    finally:
        os.chdir(cwd)
    assert len(expected) == 2
    for path, (block, begin, end) in expected.items():
        text = (ROOT / path).read_text()
        assert page_block(text, "cpu", begin, end) is not None, f"{path} has no cpu results block"
        assert page_block(text, "cpu", begin, end) == block, (
            f"{path} is stale: run `python -m adaswitch_lib.gallery --profile cpu --write`"
        )


def test_a_tie_for_best_names_every_method_in_name_order():
    """Claim (a) compares AdaSwitch with the best other method; two at the same score are both
    named, in the same order whichever order the records were read in (a set's order is not)."""
    from adaswitch_lib.claims import best_methods

    assert best_methods(
        {"SeqKD": (56.0, 0.1), "SFT": (56.0, 0.2), "On-policy KD": (50.0, 0.0)}
    ) == ("SFT, SeqKD", "SFT")
    assert best_methods({"SFT": (56.0,), "SeqKD": (56.0,)}) == ("SFT, SeqKD", "SFT")
    assert best_methods({"ImitKD": (41.0,), "SKD": (44.5,)}) == ("SKD", "SKD")


def test_a_committed_figure_rebuilds_byte_for_byte(tmp_path):
    """`./run_all.sh` on a fresh clone re-executes the reports and must leave the committed
    figures as they are: Figure 9 rebuilt from the committed cpu records equals its committed PNG
    and PDF to the byte (fonttools 4.69 wrote other PDF bytes; pyproject keeps it below)."""
    from adaswitch_lib.config import get_profile
    from adaswitch_lib.figures import write_figure

    _extract_committed_cpu_results(tmp_path)
    figures = tmp_path / "results" / "cpu" / "figures"
    committed = {
        kind: (figures / f"fig9_switch_position.{kind}").read_bytes() for kind in ("png", "pdf")
    }
    for kind in committed:
        (figures / f"fig9_switch_position.{kind}").unlink()
    write_figure(get_profile("cpu"), "fig9", str(tmp_path / "results"))
    for kind, data in committed.items():
        assert (figures / f"fig9_switch_position.{kind}").read_bytes() == data, kind
