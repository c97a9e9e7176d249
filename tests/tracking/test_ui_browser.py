"""The MLflow UI as a person sees it: `vaebench ui` on the smoke study, its printed link
opened in a real Chromium driven by Playwright.

Needs Debian's chromium (`apt-get install chromium`; .ci/run installs it) and the playwright
package (the dev extra); Playwright's own browser download is never used. Without either,
the tests skip and say which is missing. On a failed assertion the page's screenshot is
saved under the test's tmp folder and its path printed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from conftest import CALL_REPORT
from helpers import REPO
from vaebench import stores
from vaebench.config import load_study

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(  # decided before any fixture runs the smoke study
    CHROMIUM is None, reason="no chromium executable on PATH (Debian: apt-get install chromium)")]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 2600, "height": 1200}  # wide enough that the grid renders every column
WAIT_MS = 60_000
SMOKE_BETAS = [str(b) for b in load_study("smoke")[0].search.space["model.beta"]]  # as MLflow shows params


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(smoke: Path) -> Iterator[str]:
    """`vaebench ui` on the smoke study's folder; yields the link it printed for the study."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vaebench", "ui", "--port", str(port)], cwd=smoke, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("smoke: http://127.0.0.1:"), first
        link = first.split(": ", 1)[1].strip()
        stores.wait_for_server(f"http://127.0.0.1:{port}", proc, timeout_s=120)
        yield link
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page in a fresh profile (no remembered UI mode); kept as a screenshot if the test fails."""
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    yield p
    report = request.node.stash.get(CALL_REPORT, None)
    if report is not None and report.failed:
        path = tmp_path / "screenshots" / f"{request.node.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failed page: {path}")
    context.close()


def trials(smoke: Path) -> list[Any]:
    client = MlflowClient(f"sqlite:///{smoke / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`vaebench.role` = 'trial'")
    assert len(runs) == 4
    return runs


def open_view(page: Any, link: str) -> None:
    page.goto(link)
    page.locator(".ag-row[row-id^='param.']").first.wait_for()  # a group row: the view has loaded


def cell(row: Any, column_id: str) -> str:
    return row.locator(f"[col-id='{column_id}']").inner_text().strip()


def test_link_opens_the_grouped_sorted_runs_table(page: Any, ui: str, smoke: Path) -> None:
    runs = trials(smoke)
    open_view(page, ui)

    # Model training, not the GenAI overview a fresh browser lands on.
    assert "workflowType=machine_learning" in page.url
    nav = page.locator("nav").first.inner_text()
    assert "Runs" in nav and "Overview" not in nav and "Training runs" not in nav
    assert page.get_by_text("Detect Issues").count() == 0

    # One group per β of the study file (the seeds are averaged within a group), in the view
    # as MLflow names its group rows: param.<name>.<value>.
    betas = SMOKE_BETAS
    rows = page.locator(".ag-center-cols-container .ag-row")
    order = [rows.nth(i).get_attribute("row-id") or "" for i in range(rows.count())]
    by_id = {r.info.run_id: r for r in runs}
    group_rows = [r for r in order if r.rsplit(".", 1)[-1] not in by_id]
    assert sorted(group_rows) == [f"param.model.beta.{b}" for b in sorted(betas)]
    for beta in betas:
        assert page.get_by_text(f"Group: {beta}", exact=True).count() == 1

    # Columns: swept params, the objective, the headline test metrics, the dataset.
    headers = page.locator(".ag-header-cell").all_inner_texts()
    for name in ("model.beta", "seed", "val_elbo", "test_elbo", "test_recon", "test_kl", "Dataset"):
        assert name in [h.strip() for h in headers], (name, headers)

    # Sorted by the objective, best first: the runs in table order, with the tracked values.
    assert page.get_by_test_id("sort-select-dropdown").inner_text().strip() == "Sort: val_elbo"
    run_rows = [(row_id, row_id.rsplit(".", 1)[-1]) for row_id in order if row_id.rsplit(".", 1)[-1] in by_id]
    assert len(run_rows) == 4
    for beta in betas:
        values = [by_id[run].data.metrics["val_elbo"] for row_id, run in run_rows if row_id.startswith(f"param.model.beta.{beta}.")]
        assert len(values) == 2 and values == sorted(values, reverse=True)
    best = max(runs, key=lambda r: r.data.metrics["val_elbo"])
    assert run_rows[0][1] == best.info.run_id

    # The dataset: its name and fingerprint on every run's row.
    for row_id, run in run_rows:
        row = page.locator(f".ag-center-cols-container .ag-row[row-id='{row_id}']")
        assert cell(row, "attributes.`Dataset`").startswith(f"digits ({by_id[run].data.tags['vaebench.dataset_fingerprint']})")


def test_charts_show_the_groups_mean_curves_and_test_metrics(page: Any, ui: str) -> None:
    open_view(page, ui)
    page.locator("label:has(input[name='runs-view-mode'][value='CHART'])").click()
    section = page.get_by_test_id("experiment-view-compare-runs-chart-area")
    section.get_by_text("smoke: comparison").wait_for()
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    cards.first.locator("svg").first.wait_for()
    titles = [t.split("\n", 1)[0].strip() for t in cards.all_inner_texts()]
    assert titles[:8] == ["val_elbo", "val_kl", "val_recon", "test_recon vs. test_kl", "Parallel Coordinates",
                          "test_elbo", "test_recon", "test_kl"], titles
    curve = cards.nth(0)
    for beta in SMOKE_BETAS:  # one mean curve per group, named by its β
        assert curve.get_by_text(f"{beta} (val_elbo)").count() == 1
    for i in range(8):
        assert cards.nth(i).locator("svg").count() > 0, titles[i]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_child_runs_image_is_rendered(page: Any, ui: str, smoke: Path, tmp_path: Path) -> None:
    run = trials(smoke)[0]
    client = MlflowClient(f"sqlite:///{smoke / 'mlflow.db'}")
    expected = png_size(Path(client.download_artifacts(run.info.run_id, "reconstructions.png", str(tmp_path))).read_bytes())
    base = ui.split("/#/", 1)[0]
    page.goto(f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts/reconstructions.png")
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert tuple(image.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == expected
