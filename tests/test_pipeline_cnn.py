"""The pipeline on the CNN configs: the dry runs list their whole grids, and a CPU-sized CNN run goes end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_pipeline import ROOT, job_counts, needs_fashion_mnist, snakemake, snakemake_command

from cht.dst import available_methods, get_method

CNN_CONFIGS = ("paper_cnn", "tiny_imagenet", "imagenet", "cnn_quick")


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("cnn_dry")
    processes = {}
    for name in CNN_CONFIGS:
        log = (folder / f"{name}.log").open("w")
        command = snakemake_command(folder / name, "-n", "--configfile", str(ROOT / "config" / f"{name}.yaml"))
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), folder / f"{name}.log")
    return {name: subprocess.CompletedProcess(process.args, process.wait(timeout=600), log.read_text(), "")
            for name, (process, log) in processes.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", CNN_CONFIGS)
def test_dry_run_lists_the_whole_cnn_grid(dry_runs, name) -> None:
    result = dry_runs[name]
    assert result.returncode == 0, result.stdout[-3000:]
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    methods = config.get("methods", available_methods())
    settings = len(config["datasets"]) * len(config["models"]) * len(config["dims"]) * len(config["densities"])
    counts = job_counts(result.stdout)
    assert counts["train"] == settings * len(methods) * len(config["seeds"])
    assert counts["degree_figures"] == settings and counts["download_dataset"] == len(config["datasets"])


def test_paper_cnn_grid_is_the_released_setting() -> None:
    config = yaml.safe_load((ROOT / "config" / "paper_cnn.yaml").read_text())
    assert config["datasets"] == ["cifar10", "cifar100"]
    assert "fc" in config["methods"] and set(config["methods"]) <= set(available_methods())
    assert sorted(config["models"]) == ["googlenet", "resnet152", "resnet50", "vgg16"]
    train = config["train"]
    assert (train["lr"], train["epochs"], train["lr_final_factor"], train["update_interval"]) == (0.1, 200, 0.001, 1)
    assert get_method("cht").early_stop is not None


@pytest.mark.slow
@needs_fashion_mnist
def test_cpu_cnn_config_runs_end_to_end(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "cnn_quick.yaml").read_text())
    config["train"].update(max_train_samples=128, max_test_samples=128)  # the shipped run, smaller
    config_path = tmp_path / "cnn.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--configfile", str(config_path), "--cores", "2", timeout=1200)
    assert result.returncode == 0, result.stderr[-5000:]

    results = tmp_path / config["results_dir"]
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert sorted(runs["method"]) == sorted(config["methods"]) and set(runs["model"]) == {"vgg16"}
    setting = "fashion_mnist/vgg16-dim1/density0.01/uniform"
    for method in config["methods"]:
        metrics = json.loads((results / "runs" / setting / method / "seed0" / "metrics.json").read_text())
        assert metrics["model"] == "vgg16" and len(metrics["test_accuracy"]) == config["train"]["epochs"]
        assert len(metrics["links_per_layer"]) == 3 and len(metrics["evolution"]) == 1
        assert (results / "runs" / setting / method / "seed0" / "topology.json").exists()
    panel = results / "figures" / setting
    assert (panel / "anp_over_steps.png").exists() and (panel / "degree_distribution_cht.png").exists()
    assert (results / "figures" / "vgg16-dim1" / "density0.01" / "uniform" / "learning_curves.png").exists()
