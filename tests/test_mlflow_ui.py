"""The mlflow UI, driven in headless Chromium, shows a tiny pipeline run as a researcher needs it: the
experiment opens on its runs, the pipeline run expands to children with readable names, and a training
run shows its resolved params, its test-accuracy chart and its artifacts.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and ``selenium``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cht.dst import get_method
from cht.tracking import default_tracking_uri
from mlflow_server import create_store, mlflow_server, wait_until_healthy
from test_pipeline import needs_fashion_mnist, snakemake, write_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EXPERIMENT = "cht-ui-test"
TRAIN_NAME = "set s0 · fashion_mnist mlp d1 1%"
TARGET = "results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/set/seed0/metrics.json"
SPA_TIMEOUT = 45  # the single-page app needs ~10 s to render its first table on a busy 2-core machine

pytestmark = [
    pytest.mark.slow,
    needs_fashion_mnist,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="Chromium is not installed: apt-get install chromium chromium-driver (.ci/run does)"),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e .[test]")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def store_and_server(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A results folder written by a tiny pipeline run (the dataset job and one SET training run), served.

    The store is created first so that the server starts while the pipeline runs.
    """
    workdir = tmp_path_factory.mktemp("ui")
    results = workdir / "results"
    create_store(results)
    train = yaml.safe_load((Path(__file__).parents[1] / "config" / "test.yaml").read_text())["train"]
    config = write_config(workdir / "ui.yaml", methods=["set"], experiment=EXPERIMENT, train={**train, "epochs": 3})
    with mlflow_server(results) as (url, _):
        result = snakemake(workdir, "--configfile", str(config), "--cores", "2", TARGET)
        assert result.returncode == 0, result.stderr[-3000:]
        wait_until_healthy(url, results / "server.log")
        yield results, url


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--renderer-process-limit=1", f"--user-data-dir={profile}",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(browser, text: str, timeout: float = SPA_TIMEOUT, screenshot: Path | None = None) -> None:
    """Wait until ``text`` is shown on the page; on time-out, fail with what the page shows instead."""
    try:
        WebDriverWait(browser, timeout).until(lambda driver: text in driver.find_element(By.TAG_NAME, "body").text)
    except TimeoutException:
        if screenshot:
            browser.save_screenshot(str(screenshot))
        shown = browser.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the UI did not show {text!r} within {timeout} s at {browser.current_url}; it shows:\n"
                    f"{shown[:3000]}")


def close_assistant(browser) -> None:
    """The assistant pop-up covers part of the page on first visits."""
    for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()


def test_ui_shows_readable_runs_params_accuracy_chart_and_artifacts(store_and_server, browser, tmp_path) -> None:
    store, server = store_and_server
    client = MlflowClient(default_tracking_uri(store))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (pipeline,) = [run for run in runs if run.data.tags.get("cht.pipeline") == "true"]
    (training,) = [run for run in runs if run.data.tags.get("snakemake.rule") == "train"]
    base = f"{server}/#/experiments/{experiment.experiment_id}"

    # The experiment opens on its runs table (the model-training view), not on the GenAI overview.
    browser.get(f"{base}?workflowType=machine_learning")
    wait_for_text(browser, pipeline.info.run_name, screenshot=tmp_path / "experiment.png")
    assert "/runs" in browser.current_url and "genai" not in browser.current_url
    close_assistant(browser)
    table = browser.find_element(By.TAG_NAME, "body").text
    assert TRAIN_NAME not in table  # children are collapsed under their pipeline run
    browser.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
    wait_for_text(browser, TRAIN_NAME, screenshot=tmp_path / "expanded.png")
    wait_for_text(browser, "download_dataset · fashion_mnist")
    assert "Snakefile rule train" in browser.find_element(By.TAG_NAME, "body").text  # the Source column

    # The training run: resolved params (the method's schedule and rules, the real device), who ran it.
    browser.get(f"{base}/runs/{training.info.run_id}")
    wait_for_text(browser, "Parameters", screenshot=tmp_path / "run.png")
    close_assistant(browser)
    page = browser.find_element(By.TAG_NAME, "body").text
    for name, value in (("zeta", "0.3"), ("update_unit", "epoch"), ("device", "cpu"),
                        ("rules.removal", repr(get_method("set").removal)), ("rules.regrowth", "RandomRegrowth()")):
        assert f"\n{name}\n{value}\n" in page, (name, value)
    assert "None" not in page.split("Parameters", 1)[1].split("About this run", 1)[0]
    assert f"Parent run\n{pipeline.info.run_name}" in page and "Created by\n" in page

    # Its per-epoch test accuracy is a chart of its own, drawn on the epoch axis (steps 1..3).
    browser.get(f"{base}/runs/{training.info.run_id}/model-metrics")
    wait_for_text(browser, f"{TRAIN_NAME} (epoch/test_accuracy)", screenshot=tmp_path / "metrics.png")
    history = client.get_metric_history(training.info.run_id, "epoch/test_accuracy")
    assert [metric.step for metric in history] == [1, 2, 3]
    charts = browser.find_elements(By.XPATH, "//*[text()='test_accuracy']/ancestor::*[.//*[name()='svg']][1]")
    assert charts and charts[0].find_elements(By.CSS_SELECTOR, "svg path"), "no chart drawn for test_accuracy"

    # Its artifacts can be listed and read.
    browser.get(f"{base}/runs/{training.info.run_id}/artifacts")
    wait_for_text(browser, "metrics.json", screenshot=tmp_path / "artifacts.png")
    assert "masks.pt" in browser.find_element(By.TAG_NAME, "body").text
    browser.find_element(By.XPATH, "//*[text()='metrics.json']").click()
    wait_for_text(browser, '"final_test_accuracy"', screenshot=tmp_path / "artifact.png")
