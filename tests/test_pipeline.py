"""The Snakemake pipeline: configuration checks, the DAG of both shipped configs, lint, a tiny run end to
end (outputs, mlflow parent and child runs, report) and a run killed mid-training that resumes."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cht.analysis.reproduction import published_counterparts, published_results
from cht.dst import available_methods, get_method

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MLP_CONFIGS = ["config", "paper", "protocol_ablation", "neurips2025_mlp", "neurips2025_cifar10_mlp"]
TEST_CONFIG = ROOT / "config" / "test.yaml"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion_mnist = pytest.mark.skipif(not FASHION_MNIST.exists(),
                                         reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            *args]


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the pipeline in ``workdir``, tracking to its embedded store whatever this process has set."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CHT_MLFLOW_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")}
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout,
                          env=environment)


def write_config(path: Path, **changes) -> Path:
    """The tiny test config with some top-level keys replaced."""
    config = {**yaml.safe_load(TEST_CONFIG.read_text()), **changes}
    path.write_text(yaml.safe_dump(config))
    return path


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a dry run."""
    table = output[output.index("Job stats:"):]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)}


# --- checks that need no training: started together, they share the interpreter start-up cost ---------------
# (still some twenty Snakemake processes, so `slow`: leave them out with -m "not slow")

BAD_CONFIGS = {
    "unknown method": ({"methods": ["set", "sett"]}, ["methods", "'sett' is not one of"]),
    "negative density": ({"densities": [-0.01]}, ["densities", "-0.01"]),
    "typo in a key": ({"sedes": [0]}, ["'sedes' was unexpected"]),
    "typo in a training key": ({"train": {"epoch": 1}}, ["'epoch' was unexpected"]),
    "unknown dataset": ({"datasets": ["fashion-mnist"]}, ["datasets", "'fashion-mnist' is not one of"]),
    "bad training value": ({"train": {"density_distribution": "gaussian"}}, ["density_distribution", "gaussian"]),
    "zero density": ({"densities": [0]}, ["densities", "minimum of 0"]),
    "training value out of range": ({"train": {"momentum": 2}}, ["momentum", "maximum of 1"]),
    "seed beyond numpy's range": ({"seeds": [2**32]}, ["seeds", "4294967296"]),
    "unknown protocol": ({"protocols": ["faithful"]}, ["protocols", "'faithful' is not one of"]),
    "bad grouping": ({"group_runs": "sometimes"}, ["group_runs", "'sometimes' is not one of"]),
}


@pytest.fixture(scope="module")
def quick_checks(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Dry runs of the shipped configs and of every bad config, plus lint, run in parallel."""
    folder = tmp_path_factory.mktemp("checks")
    default = str(ROOT / "config" / "config.yaml")
    commands = {"lint": snakemake_command(folder / "lint", "--lint", "--configfile", default)}
    for name in SHIPPED_MLP_CONFIGS:
        commands[name] = snakemake_command(folder / name, "-n", "--configfile", str(ROOT / "config" / f"{name}.yaml"))
    single_epoch = write_config(folder / "single_epoch.yaml", train={"epochs": 1, "max_train_samples": 256})
    commands["single epoch"] = snakemake_command(folder / "single_epoch", "-n", "--configfile", str(single_epoch))
    grouped = write_config(folder / "grouped.yaml", group_runs=True, group_size=3, seeds=[0, 1],
                           methods=["static", "set", "cht"])
    commands["grouped"] = snakemake_command(folder / "grouped", "-n", "--configfile", str(grouped))
    for name, (changes, _) in BAD_CONFIGS.items():
        workdir = folder / name.replace(" ", "_")
        workdir.mkdir()
        config = write_config(workdir / "bad.yaml", **changes)
        commands[name] = snakemake_command(workdir, "-n", "--configfile", str(config))
    logs = {name: folder / f"{name}.log" for name in commands}
    processes = {name: subprocess.Popen(command, stdout=logs[name].open("w"), stderr=subprocess.STDOUT)
                 for name, command in commands.items()}
    return {name: subprocess.CompletedProcess(process.args, process.wait(timeout=600), logs[name].read_text(), "")
            for name, process in processes.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_stops_the_run_naming_the_field(quick_checks, case) -> None:
    result = quick_checks[case]
    assert result.returncode != 0, result.stdout
    for text in BAD_CONFIGS[case][1]:
        assert text in result.stdout, result.stdout[-3000:]
    assert "Job stats" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_MLP_CONFIGS)
def test_dry_run_shows_the_full_grid(quick_checks, name) -> None:
    result = quick_checks[name]
    assert result.returncode == 0, result.stdout[-3000:]
    config = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    methods = config.get("methods", available_methods())
    settings = len(config["datasets"]) * len(config.get("models", ["mlp"])) * len(config.get("dims", [1])) * len(
        config["densities"]) * len(config.get("protocols", ["uniform"]))
    runs = settings * len(methods) * len(config["seeds"])
    counts = job_counts(result.stdout)
    assert counts["train"] == runs and counts["analyze_topology"] == settings  # one analysis job per setting
    assert counts["download_dataset"] == len(config["datasets"]) and counts["aggregate"] == 1
    assert counts["claims"] == 1
    for rule in ("degree_figures", "degree_initial_final_figures", "network_figures", "anp_figure",
                 "anp_epochs_figure"):
        assert counts[rule] == settings, rule
    assert counts["learning_figures"] == settings // len(config["datasets"])
    # The comparison with the published tables runs where the grid has a published counterpart.
    grid = pd.DataFrame([{"dataset": dataset, "model": model, "dim": dim, "density": density, "method": method}
                         for dataset in config["datasets"] for model in config.get("models", ["mlp"])
                         for dim in config.get("dims", [1]) for density in config["densities"] for method in methods])
    assert counts.get("reproduction", 0) == int(not published_counterparts(grid).empty)
    if name.startswith("neurips2025"):
        assert counts["reproduction"] == 1


@pytest.mark.slow
def test_no_anp_figure_when_no_run_updates_its_topology(quick_checks) -> None:
    """Topology updates follow finished epochs but the last: a single epoch has none to plot."""
    result = quick_checks["single epoch"]
    assert result.returncode == 0, result.stdout[-3000:]
    counts = job_counts(result.stdout)
    assert "anp_figure" not in counts and "anp_epochs_figure" not in counts and counts["degree_figures"] == 1


@pytest.mark.slow
def test_grouped_runs_train_in_one_job_per_part_of_a_setting(quick_checks) -> None:
    """3 methods × 2 seeds in parts of at most 3: two group jobs, and every run analysed as before."""
    result = quick_checks["grouped"]
    assert result.returncode == 0, result.stdout[-3000:]
    counts = job_counts(result.stdout)
    assert "train" not in counts and counts["train_group"] == 1 and counts["train_group_2"] == 1
    assert counts["analyze_topology"] == 1 and counts["aggregate"] == 1  # one analysis job per setting


def test_default_config_lists_registered_methods_and_the_table_config_every_table_row() -> None:
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["methods"]
    assert set(default) <= set(available_methods()) and {"fc", "set", "rigl", "cht"} <= set(default)
    table = yaml.safe_load((ROOT / "config" / "neurips2025_mlp.yaml").read_text())
    published = published_results()
    assert table["methods"] == list(published.loc[published["table"] == 7, "method"].drop_duplicates())
    assert sorted(table["datasets"]) == sorted(published.loc[published["table"] == 7, "dataset"].unique())


def test_paper_config_overrides_every_key_of_the_default_config() -> None:
    """Snakemake merges --configfile over config/config.yaml key by key: nothing may leak through."""
    def keys(mapping: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in mapping.items():
            found.add(prefix + key)
            if isinstance(value, dict):
                found |= keys(value, f"{prefix}{key}.")
        return found

    default = keys(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    for name in ("paper", "test", "protocol_ablation", "paper_cnn", "tiny_imagenet", "imagenet", "cnn_quick",
                 "neurips2025_mlp", "neurips2025_cifar10_mlp"):
        assert default <= keys(yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())), name


@pytest.mark.slow
def test_lint_passes(quick_checks) -> None:
    result = quick_checks["lint"]
    assert result.returncode == 0 and "Congratulations" in result.stdout, result.stdout[-3000:]


# --- a tiny real run -------------------------------------------------------------------------------------------


def mlflow_runs(results: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], max_results=1000)


def check_tiny_pipeline_outputs(workdir: Path, config: dict, train_rule: str = "train") -> None:
    """Tables, figures, logs, benchmarks and one mlflow child run per job (per run for a grouped training
    job) under one parent run."""
    results = workdir / "results"
    runs = pd.read_csv(results / "tables" / "runs.csv")
    assert sorted(runs["method"]) == sorted(config["methods"])
    assert (runs["epochs"] == config["train"]["epochs"]).all()
    summary = pd.read_csv(results / "tables" / "summary.csv")
    assert summary["method"].tolist() == config["methods"]
    assert (results / "tables" / "summary.md").read_text().count("\n") == 2 + len(config["methods"])
    assert set(runs["protocol"]) == set(config["protocols"])
    panel = results / "figures" / "fashion_mnist" / "mlp-dim1" / "density0.01" / "uniform"
    sparse = [m for m in config["methods"] if get_method(m).sparse]
    for name in ["anp_over_steps", "anp_over_epochs", "hyperbolic_embedding", "layered_communities_cht",
                 "layered_communities_set", *(f"degree_distribution_{m}" for m in sparse),
                 *(f"degree_initial_final_{m}" for m in sparse)]:
        assert (panel / f"{name}.png").stat().st_size > 0 and (panel / f"{name}.pdf").exists()
    assert (results / "figures" / "mlp-dim1" / "density0.01" / "uniform" / "learning_curves.png").exists()
    claims = pd.read_csv(results / "tables" / "claims.csv")
    assert set(claims["comparison"].dropna()) == {m for m in config["methods"] if m != "cht"}
    assert set(claims["verdict"]) == {"inconclusive"}  # one seed
    assert (results / "tables" / "claims.md").read_text().startswith(f"Claims tested: {len(claims)} (")
    logs = results / "logs"
    assert list((logs / train_rule).rglob("*.log")) and list((results / "benchmarks").rglob("*.tsv"))

    tracked = mlflow_runs(results, config["experiment"])
    parents = [run for run in tracked if run.data.tags.get("cht.pipeline") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "snakemake" in parents[0].data.tags["snakemake.command"]
    children = [run for run in tracked if run not in parents]
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    rules = sorted(run.data.tags["snakemake.rule"] for run in children)
    n_runs = len(config["methods"])
    assert rules == sorted(["download_dataset", "aggregate", "claims", "learning_figures", "anp_figure",
                            "anp_epochs_figure", "degree_figures", "degree_initial_final_figures", "network_figures"]
                           + ["train"] * n_runs + ["analyze_topology"])  # one analysis job per setting
    assert all(run.info.status == "FINISHED" for run in children)
    hashes = {run.data.tags["cht.config_hash"] for run in tracked}
    assert len(hashes) == 1


@pytest.mark.slow
@needs_fashion_mnist
def test_tiny_pipeline_end_to_end_with_tracking_and_report(tmp_path) -> None:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    result = snakemake(tmp_path, "--configfile", str(TEST_CONFIG), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    check_tiny_pipeline_outputs(tmp_path, config)

    metrics = json.loads(next((tmp_path / "results" / "runs").rglob("uniform/set/seed0/metrics.json")).read_text())
    assert len(metrics["test_accuracy"]) == config["train"]["epochs"] and not math.isnan(metrics["aae"])
    again = snakemake(tmp_path, "--configfile", str(TEST_CONFIG), "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stderr + again.stdout

    report = snakemake(tmp_path, "--configfile", str(TEST_CONFIG), "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "Active-neuron proportion" in html and "Performance per setting" in html
    assert "claims tested on this grid" in html and "Coalescent hyperbolic embedding" in html


@pytest.mark.slow
@needs_fashion_mnist
def test_tiny_pipeline_with_grouped_runs_gives_every_run_its_outputs(tmp_path) -> None:
    """One train_group job trains both runs; each gets its files, its mlflow child run and its table row."""
    config_path = write_config(tmp_path / "grouped.yaml", group_runs=True)
    config = yaml.safe_load(config_path.read_text())
    result = snakemake(tmp_path, "--configfile", str(config_path), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "train_group" in result.stderr and "rule train:" not in result.stderr
    check_tiny_pipeline_outputs(tmp_path, config, train_rule="train_group")
    for method in config["methods"]:
        run = next((tmp_path / "results" / "runs").rglob(f"{method}/seed0"))
        assert {"initial_masks.pt", "masks.pt", "metrics.json"} <= {path.name for path in run.iterdir()}


@pytest.mark.slow
@needs_fashion_mnist
def test_killed_pipeline_reruns_only_the_unfinished_job_and_resumes_training(tmp_path) -> None:
    epochs = 4
    config_path = write_config(tmp_path / "resume.yaml", methods=["set"], experiment="cht-resume-test",
                               train={"epochs": epochs, "batch_size": 32, "max_train_samples": 4000,
                                      "max_test_samples": 200, "device": "cpu"})
    target = "results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/set/seed0/metrics.json"
    run_dir = (tmp_path / target).parent
    process = subprocess.Popen(snakemake_command(tmp_path, "--configfile", str(config_path), "--cores", "1", target),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job tree, as a node failure would
    process.wait()
    assert checkpoint.exists() and not (run_dir / "metrics.json").exists(), "training ended before the kill"

    assert snakemake(tmp_path, "--configfile", str(config_path), "--unlock").returncode == 0
    resumed = snakemake(tmp_path, "--configfile", str(config_path), "--cores", "1", target)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    stats = job_counts(resumed.stderr + resumed.stdout)
    assert stats == {"train": 1, "total": 1}  # the dataset job had finished: it is not redone
    log = tmp_path / "results" / "logs" / "train" / target.removeprefix("results/runs/").replace(
        "/metrics.json", ".log")
    assert re.search(r"resuming from .*checkpoint.pt after epoch \d", log.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["test_accuracy"]) == epochs

    train_runs = [run for run in mlflow_runs(tmp_path / "results", "cht-resume-test")
                  if run.data.tags.get("snakemake.rule") == "train"]
    assert len(train_runs) == 1 and train_runs[0].info.status == "FINISHED"  # the same run, continued


# --- environments ------------------------------------------------------------------------------------------


def constraint_pins() -> dict[str, str]:
    """``{name: version}`` of constraints.txt (names normalised as pip does)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def conda_pins(path: Path) -> dict[str, str]:
    """``{pip name: version}`` of a conda environment file whose packages are pinned ``name==version``."""
    from packaging.utils import canonicalize_name

    pins = {}
    for spec in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(spec, str) and spec not in ("pip",) and not spec.startswith("python="):
            name, version = spec.split("==")
            pins[canonicalize_name({"pytorch": "torch"}.get(name, name))] = version
    return pins


def test_pins_satisfy_the_package_requirements_and_conda_files_use_them() -> None:
    """constraints.txt pins every requirement of pyproject.toml within its range; envs/cht.yaml (per-rule: the
    library and mlflow) and environment.yml (everything) carry the same versions."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = constraint_pins()
    groups = {"library": project["dependencies"], **extras}
    names = {}
    for group, requirements in groups.items():
        names[group] = set()
        for text in requirements:
            requirement = Requirement(text)
            name = canonicalize_name(requirement.name)
            names[group].add(name)
            assert name in pins, f"{name} ({group}) has no pin in constraints.txt"
            assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"
    assert set(pins) == set().union(*names.values())
    conda_only_with_cuda = {"triton"}
    per_rule = names["library"] - conda_only_with_cuda | {"mlflow"}
    assert conda_pins(ROOT / "envs" / "cht.yaml") == {name: pins[name] for name in per_rule}
    everything = set(pins) - conda_only_with_cuda
    assert conda_pins(ROOT / "environment.yml") == {name: pins[name] for name in everything}


@pytest.mark.slow
@needs_fashion_mnist
def test_protocol_ablation_runs_end_to_end_with_reduced_epochs(tmp_path) -> None:
    """config/protocol_ablation.yaml as shipped (its methods and both protocols), with a CPU-sized budget:
    every run trains under each protocol, and the claims table compares CHT's margin across protocols."""
    config = yaml.safe_load((ROOT / "config" / "protocol_ablation.yaml").read_text())
    config["seeds"], config["results_dir"] = [0, 1], "results"
    config["train"] = {**config["train"], "epochs": 2, "max_train_samples": 300, "max_test_samples": 300}
    config["analysis"] = {**config.get("analysis", {}), "embedding": False}
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--configfile", str(path), "--cores", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    runs = pd.read_csv(tmp_path / "results" / "tables" / "runs.csv")
    assert len(runs) == len(config["methods"]) * len(config["protocols"]) * len(config["seeds"])
    assert set(runs["protocol"]) == {"uniform", "released"}
    claims = pd.read_csv(tmp_path / "results" / "tables" / "claims.csv")
    assert set(claims["protocol"].dropna()) >= {"uniform", "released"}


@pytest.mark.slow
@needs_fashion_mnist
def test_a_grid_with_a_published_counterpart_compares_it_in_tables_figure_and_report(tmp_path) -> None:
    """Fashion-MNIST at dim 2 and 1% is a column of the NeurIPS 2025 Table 7: the reproduction rule runs."""
    config_path = write_config(tmp_path / "table7.yaml", dims=[2], methods=["set"], protocols=["neurips2025"],
                               train={**yaml.safe_load(TEST_CONFIG.read_text())["train"], "epochs": 1})
    result = snakemake(tmp_path, "--configfile", str(config_path), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    tables = tmp_path / "results" / "tables"
    table = pd.read_csv(tables / "reproduction.csv")
    runs = pd.read_csv(tables / "runs.csv")
    assert list(table["method"]) == ["set"] and list(table["protocol"]) == ["neurips2025"]
    assert table.loc[0, "published_mean"] == 89.00 and table.loc[0, "reproduced_n"] == 1
    assert table.loc[0, "reproduced_mean"] == pytest.approx(100 * runs.loc[0, "final_test_accuracy"])
    assert table.loc[0, "verdict"] == "below"  # one epoch on 256 images
    assert (tmp_path / "results" / "figures" / "reproduction.png").stat().st_size > 10_000
    report = snakemake(tmp_path, "--configfile", str(config_path), "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert "published numbers they reproduce" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
@needs_fashion_mnist
def test_a_second_pipeline_on_the_same_results_is_refused_and_leaves_the_store_alone(tmp_path) -> None:
    config_path = write_config(tmp_path / "busy.yaml", methods=["fc"], experiment="cht-lock-test",
                               train={"epochs": 50, "batch_size": 32, "max_train_samples": 20000,
                                      "max_test_samples": 200, "device": "cpu"})
    target = "results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/fc/seed0/metrics.json"
    first = subprocess.Popen(snakemake_command(tmp_path, "--configfile", str(config_path), "--cores", "1", target),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        checkpoint = (tmp_path / target).parent / "checkpoint.pt"
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:  # training: the first holds its lock
            assert first.poll() is None, "the first pipeline ended before the second could start"
            time.sleep(0.1)
        second = snakemake(tmp_path, "--configfile", str(config_path), "--cores", "1")
        assert first.poll() is None, "the first pipeline ended before the second was refused"
        output = second.stdout + second.stderr
        assert second.returncode != 0 and "cannot be locked" in output and "--unlock" in output, output[-3000:]
    finally:
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: the first pipeline stops and records it
        first.wait(timeout=120)
    parents = [run for run in mlflow_runs(tmp_path / "results", "cht-lock-test")
               if run.data.tags.get("cht.pipeline") == "true"]
    assert len(parents) == 1  # the refused pipeline created no parent run
