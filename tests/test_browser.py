"""The walkthrough in a real browser: JupyterLab on localhost, headless Chromium (Debian's
`chromium` + `chromium-driver`, driven by Selenium), every cell run, plots and widgets rendered,
no error output; a screenshot goes to results/browser/walkthrough.png. Skips when Chromium,
its driver or Selenium is absent (`.ci/run` installs them)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a copy of the walkthrough set to the smoke profile (its pair is prepared
    in seconds in the copy's own folder)."""
    nb = json.loads((ROOT / "notebooks" / "00_walkthrough.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = "".join(cell["source"]).replace('profile = "cpu"', 'profile = "smoke"')
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_walkthrough.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), "adaswitch-test"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--LabApp.expose_app_in_browser=True",
            "--allow-root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 60 s")
    yield f"{url}/lab/tree/notebooks/00_walkthrough.ipynb?token={token}"
    proc.terminate()
    proc.wait(timeout=30)


def test_walkthrough_runs_in_jupyterlab_with_plots_and_widgets(lab):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,3000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(lab)
        deadline = time.time() + 90
        while time.time() < deadline and not driver.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"
        ):
            time.sleep(0.5)
        while time.time() < deadline and "idle" not in (
            driver.execute_script(
                "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                "return w && w.sessionContext && w.sessionContext.session && "
                "w.sessionContext.session.kernel"
                " ? w.sessionContext.session.kernel.status : ''"
            )
            or ""
        ):
            time.sleep(0.5)
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        n_code = len(driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"))
        deadline = time.time() + 300
        while time.time() < deadline:
            prompts = [
                e.text
                for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")
            ]
            if len(prompts) == n_code and all(
                p.strip().startswith("[") and p.strip()[1:-2].isdigit() for p in prompts
            ):
                break
            time.sleep(1)
        else:
            pytest.fail(f"cells did not finish within 300 s: prompts {prompts}")
        time.sleep(2)  # let the last outputs and widget views render
        errors = driver.find_elements(
            By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
        )
        stderr = [
            e.text
            for e in driver.find_elements(
                By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.stderr"]'
            )
        ]
        images = driver.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
        sliders = driver.find_elements(
            By.CSS_SELECTOR, ".widget-slider, .jupyter-widget-slider, .widget-hslider"
        )
        coloured = driver.find_elements(
            By.CSS_SELECTOR, ".jp-RenderedHTMLCommon span[style*='background']"
        )
        out = ROOT / "results" / "browser"
        out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out / "walkthrough.png"))
        assert not errors, [e.text[:300] for e in errors]
        assert not [s for s in stderr if "Traceback" in s or "Error" in s], stderr
        assert len(images) >= 2, "the d_i plot (static and under the sliders) did not render"
        assert len(sliders) >= 3, "the K, L and prompt sliders did not render"
        assert coloured, "the response coloured by who wrote each token did not render"
    finally:
        driver.quit()
