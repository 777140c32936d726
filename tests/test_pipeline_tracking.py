"""mlflow tracking as the pipeline uses it: parent and child runs, job tags, many writers on one sqlite file."""

import multiprocessing
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cht.tracking import PARENT_RUN_ENV, Tracker, config_hash, default_tracking_uri, job_tags

WRITERS = 8
STEPS = 10


@pytest.fixture(autouse=True)
def embedded_store(monkeypatch) -> None:
    """Every test uses the embedded store under its own results folder, with no inherited parent."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)


def client_for(results: Path) -> MlflowClient:
    return MlflowClient(default_tracking_uri(results))


def runs_of(results: Path, experiment: str) -> list:
    client = client_for(results)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], max_results=1000)


def write_run(results: str, index: int, parent: str | None) -> None:
    """One job: a child run with params, metrics at several steps and an artifact."""
    if parent:
        os.environ[PARENT_RUN_ENV] = parent
    tracker = Tracker("concurrency", run_name=f"job{index}", results_dir=Path(results),
                      tags=job_tags("train", {"seed": index}, "hash"))
    with tracker.run():
        tracker.log_params({"index": index, "nested": {"value": index}})
        for step in range(STEPS):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "index": index}, step=step)
        artifact = Path(results) / f"out{index}.txt"
        artifact.write_text(str(index))
        tracker.log_artifact(artifact)


def run_writers(results: Path, parent: str | None) -> list[int]:
    """Start every writer at once in its own process; return their exit codes."""
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=write_run, args=(str(results), index, parent)) for index in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    return [process.exitcode for process in processes]


def check_runs(results: Path, parent: str | None) -> None:
    runs = {run.info.run_name: run for run in runs_of(results, "concurrency") if run.info.run_name != "pipeline"}
    assert sorted(runs) == sorted(f"job{index}" for index in range(WRITERS))
    client = client_for(results)
    for index in range(WRITERS):
        run = runs[f"job{index}"]
        assert run.info.status == "FINISHED"
        assert run.data.params == {"index": str(index), "nested.value": str(index)}
        assert run.data.tags.get("mlflow.parentRunId") == parent
        assert run.data.tags["snakemake.wildcard.seed"] == str(index)
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(metric.step for metric in history) == list(range(STEPS))
        assert [artifact.path for artifact in client.list_artifacts(run.info.run_id)] == [f"out{index}.txt"]


@pytest.mark.slow
def test_parallel_writers_initialise_a_fresh_sqlite_store_without_losing_runs(tmp_path) -> None:
    results = tmp_path / "results"
    assert run_writers(results, parent=None) == [0] * WRITERS
    check_runs(results, parent=None)


@pytest.mark.slow
def test_parallel_child_runs_land_under_the_pipeline_run(tmp_path) -> None:
    results = tmp_path / "results"
    pipeline = Tracker("concurrency", run_name="pipeline", results_dir=results)
    pipeline.start()
    assert run_writers(results, parent=pipeline.run_id) == [0] * WRITERS
    pipeline.end("FINISHED")
    check_runs(results, parent=pipeline.run_id)
    assert client_for(results).get_run(pipeline.run_id).info.status == "FINISHED"


def test_parent_run_comes_from_the_environment_and_explicit_ids_win(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(PARENT_RUN_ENV, "from-env")
    assert Tracker("x", results_dir=tmp_path).parent_run_id == "from-env"
    assert Tracker("x", results_dir=tmp_path, parent_run_id="explicit").parent_run_id == "explicit"


def test_start_end_and_dict_artifacts(tmp_path) -> None:
    results = tmp_path / "results"
    tracker = Tracker("lifecycle", run_name="pipeline", results_dir=results, tags={"cht.pipeline": "true"})
    tracker.start()
    tracker.log_dict({"datasets": ["fashion_mnist"], "train": {"epochs": 2}}, "config.yaml")
    tracker.end("FAILED")
    run = client_for(results).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["cht.pipeline"] == "true"
    assert run.data.tags["cht.git_commit"]
    assert [a.path for a in client_for(results).list_artifacts(tracker.run_id)] == ["config.yaml"]


def test_tracking_leaves_the_environment_of_later_subprocesses_alone(tmp_path) -> None:
    with Tracker("env", results_dir=tmp_path / "results").run():
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_disabled_tracker_touches_no_store(tmp_path) -> None:
    tracker = Tracker("off", enabled=False, results_dir=tmp_path / "results")
    with tracker.run():
        tracker.log_metrics({"a": 1.0}, step=0)
        tracker.log_dict({"a": 1}, "a.json")
    assert tracker.run_id is None and not (tmp_path / "results").exists()


def test_job_tags_name_rule_wildcards_config_and_scheduler_job(monkeypatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    tags = job_tags("train", {"method": "set", "seed": 0}, "abc")
    assert tags == {"snakemake.rule": "train", "snakemake.wildcards": '{"method": "set", "seed": 0}',
                    "cht.config_hash": "abc", "snakemake.wildcard.method": "set", "snakemake.wildcard.seed": "0"}
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert job_tags("aggregate", {}, "abc")["slurm.job_id"] == "42"


def test_config_hash_ignores_key_order_and_sees_every_value() -> None:
    config = {"train": {"epochs": 2, "lr": 0.01}, "seeds": [0, 1]}
    assert config_hash(config) == config_hash({"seeds": [0, 1], "train": {"lr": 0.01, "epochs": 2}})
    assert config_hash(config) != config_hash({**config, "seeds": [1, 0]})
    assert config_hash(config) != config_hash({**config, "train": {"epochs": 3, "lr": 0.01}})
