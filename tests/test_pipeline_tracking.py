"""mlflow tracking as the pipeline uses it: parent and child runs, job tags, many writers on one sqlite file, and
what a reader of the UI sees: run names, resolved params, system tags, metric names, honest run states."""

import getpass
import math
import multiprocessing
import os
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from cht.dst import available_methods, get_method
from cht.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, PARENT_RUN_ENV, InterruptWatch, Tracker,
                          config_hash, default_tracking_uri, describe_run, evolution_metrics, flatten, job_run_name,
                          job_tags, main, relocate_artifacts, resolved_params, store_lock, training_run_name)

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


# --- what the UI shows ---------------------------------------------------------------------------------------


def test_run_names_put_method_and_seed_first() -> None:
    from cht.config import TrainConfig

    config = TrainConfig(method="cht", seed=2, dataset="fashion_mnist", model="mlp", dim=1, density=0.01)
    assert training_run_name(config) == "cht s2 · fashion_mnist mlp d1 1%"
    wildcards = {"dataset": "fashion_mnist", "model": "mlp", "dim": "2", "density": "0.001", "method": "set",
                 "seed": "0"}
    assert job_run_name("train", wildcards) == "set s0 · fashion_mnist mlp d2 0.1%"
    assert job_run_name("analyze_topology", wildcards) == "analyze_topology · set s0 · fashion_mnist mlp d2 0.1%"
    assert job_run_name("learning_figures", {"model": "mlp", "dim": "1", "density": "0.05"}) == (
        "learning_figures · mlp d1 5%")
    assert job_run_name("download_dataset", {"dataset": "emnist"}) == "download_dataset · emnist"
    assert job_run_name("aggregate", {}) == "aggregate"
    assert describe_run({"method": "set", "width": 3}) == "set · width=3"


@pytest.mark.parametrize("name", available_methods())
def test_resolved_params_hold_the_schedule_rules_and_device_each_method_uses(name) -> None:
    from cht.config import TrainConfig

    method = get_method(name)
    params = resolved_params(TrainConfig(method=name), method, torch.device("cpu"))
    flat = flatten(params)
    assert "None" not in {str(value) for value in flat.values()}, {k: v for k, v in flat.items() if v is None}
    assert params["device"] == "cpu" and params["method"] == name
    if method.evolves:
        schedule = method.schedule
        assert (params["zeta"], params["zeta_decay"], params["update_interval"], params["update_unit"],
                params["end_fraction"]) == (schedule.zeta, schedule.zeta_decay, schedule.interval, schedule.unit,
                                            schedule.end_fraction)
        assert params["rules"]["removal"] == repr(method.removal) != "none"
        assert params["rules"]["regrowth"] == repr(method.regrowth) != "none"
    else:
        assert not {"zeta", "zeta_decay", "update_interval", "update_unit", "end_fraction"} & set(params)
        assert params["rules"]["removal"] == params["rules"]["regrowth"] == "none"
    assert params["rules"]["topology_init"] == (method.topology_init if method.sparse else "dense")
    assert params["rules"]["early_stop"] == (repr(method.early_stop) if method.early_stop else "none")
    assert params["rules"]["initial_density"] == (method.initial_density(0.01) if method.sparse else 1.0)


def test_resolved_params_apply_the_configured_schedule_overrides() -> None:
    from cht.config import TrainConfig

    config = TrainConfig(method="rigl", zeta=0.5, update_interval=100, update_unit="step", max_train_samples=256)
    method = get_method("rigl").with_schedule(zeta=config.zeta, interval=config.update_interval,
                                              unit=config.update_unit)
    params = resolved_params(config, method, "cuda:0")
    assert (params["zeta"], params["update_interval"], params["update_unit"]) == (0.5, 100, "step")
    assert (params["zeta_decay"], params["end_fraction"]) == ("cosine", 0.75)  # RigL's own
    assert params["device"] == "cuda:0"
    assert params["max_train_samples"] == 256 and params["max_test_samples"] == "all"


def test_runs_carry_mlflow_system_tags_and_experiments_the_model_training_kind(tmp_path) -> None:
    results = tmp_path / "results"
    client = client_for(results)
    with store_lock(default_tracking_uri(results)):
        untagged = client.create_experiment("made-elsewhere")
    tracker = Tracker("made-elsewhere", run_name="r", results_dir=results, source="cht train")
    with tracker.run():
        pass
    tags = client.get_run(tracker.run_id).data.tags
    assert re.fullmatch(r"[0-9a-f]{40}", tags["mlflow.source.git.commit"])
    assert tags["cht.git_commit"].startswith(tags["mlflow.source.git.commit"])
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"]) == ("cht train", "LOCAL")
    assert tags["mlflow.user"] == getpass.getuser()
    assert client.get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    with Tracker("new-one", results_dir=results).run():
        pass
    assert client.get_experiment_by_name("new-one").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_params_beyond_one_call_limit_are_logged_in_chunks(tmp_path) -> None:
    results = tmp_path / "results"
    params = {f"group{group}": {f"key{key}": group * 100 + key for key in range(60)} for group in range(4)}
    tracker = Tracker("many-params", results_dir=results, tags={f"extra.{index}": str(index) for index in range(150)})
    with tracker.run():
        tracker.log_params(params)
    run = client_for(results).get_run(tracker.run_id)
    assert len(run.data.params) == 240 and run.data.params["group3.key59"] == "359"
    assert run.data.tags["extra.149"] == "149"


def test_missing_metrics_are_left_out_rather_than_logged_as_nan(tmp_path) -> None:
    results = tmp_path / "results"
    tracker = Tracker("absent", results_dir=results)
    with tracker.run():
        tracker.log_metrics({"final_test_accuracy": 0.8, "final_anp": None, "aae": math.nan, "x": math.inf}, step=2)
    assert client_for(results).get_run(tracker.run_id).data.metrics == {"final_test_accuracy": 0.8}


def test_evolution_metrics_say_they_are_per_update_and_group_layers() -> None:
    record = {"epoch": 3, "step": 960, "progress": 0.3, "zeta": 0.3, "anp": 0.9, "active_per_layer": [784, 700, 10],
              "seconds": {"removal": 0.1, "regrowth": 0.2},
              "layers": [{"removed": 5, "regrown": 5}, {"removed": 1, "regrown": 2}], "frozen": False}
    assert evolution_metrics(record) == {
        "evolution/anp": 0.9, "evolution/zeta": 0.3, "evolution/epoch": 3,
        "evolution/seconds_removal": 0.1, "evolution/seconds_regrowth": 0.2,
        "evolution_layer0/removed": 5, "evolution_layer0/regrown": 5, "evolution_layer0/active_out": 700,
        "evolution_layer1/removed": 1, "evolution_layer1/regrown": 2, "evolution_layer1/active_out": 10}


def test_artifacts_survive_moving_the_results_folder(tmp_path) -> None:
    old = tmp_path / "old" / "results"
    tracker = Tracker("moving", results_dir=old)
    with tracker.run():
        (tmp_path / "note.txt").write_text("kept")
        tracker.log_artifact(tmp_path / "note.txt")
    new = tmp_path / "elsewhere" / "results"
    new.parent.mkdir()
    old.rename(new)
    assert main([str(new)]) == 0
    client = client_for(new)
    run = client.get_run(tracker.run_id)
    assert run.info.artifact_uri.startswith((new / "mlartifacts").resolve().as_uri())
    downloaded = client.download_artifacts(tracker.run_id, "note.txt", str(tmp_path))
    assert Path(downloaded).read_text() == "kept"
    assert client.get_experiment_by_name("moving").artifact_location == (new / "mlartifacts").resolve().as_uri()
    with Tracker("moving", results_dir=new).run():  # the next run also finds the store in its new place
        pass
    assert relocate_artifacts(new) == 0


def test_a_resumed_run_moves_under_the_current_pipeline_run(tmp_path) -> None:
    results = tmp_path / "results"
    first = Tracker("resume", results_dir=results, parent_run_id="old-pipeline")
    first.start()
    first.end("KILLED")
    again = Tracker("resume", results_dir=results, parent_run_id="new-pipeline")
    again.resume_run_id = first.run_id
    with again.run():
        pass
    tags = client_for(results).get_run(first.run_id).data.tags
    assert tags["mlflow.parentRunId"] == "new-pipeline" and tags["cht.previous_parent_run_id"] == "old-pipeline"
    assert client_for(results).get_run(first.run_id).info.status == "FINISHED"


def test_ctrl_c_ends_a_run_killed_and_a_crash_failed(tmp_path) -> None:
    results = tmp_path / "results"
    interrupted, crashed = Tracker("stops", results_dir=results), Tracker("stops", results_dir=results)
    with pytest.raises(KeyboardInterrupt), interrupted.run():
        raise KeyboardInterrupt
    with pytest.raises(ValueError), crashed.run():
        raise ValueError("bad")
    client = client_for(results)
    assert client.get_run(interrupted.run_id).info.status == "KILLED"
    assert client.get_run(crashed.run_id).info.status == "FAILED"


def test_interrupt_watch_remembers_the_signal_and_hands_it_on() -> None:
    previous = signal.getsignal(signal.SIGINT)
    try:
        watch = InterruptWatch([signal.SIGINT])
        assert not watch.interrupted
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert watch.interrupted and watch.received == signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, previous)


def hold_a_run(results: str, ready: str) -> None:
    """A process that opens a run and then hangs until killed."""
    tracker = Tracker("dead", run_name="hard-killed", results_dir=Path(results))
    tracker.start()
    Path(ready).write_text(tracker.run_id)
    time.sleep(600)


def test_runs_of_hard_killed_processes_are_closed_when_the_next_run_starts(tmp_path) -> None:
    results = tmp_path / "results"
    ready = tmp_path / "ready"
    process = multiprocessing.get_context("spawn").Process(target=hold_a_run, args=(str(results), str(ready)))
    process.start()
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed_run = ready.read_text()
    alive = Tracker("dead", run_name="alive", results_dir=results)
    alive.start()  # this process still runs: its run must stay open whatever happens to the other
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    client = client_for(results)
    assert client.get_run(killed_run).info.status == "RUNNING"  # nobody has looked yet

    with Tracker("dead", run_name="next", results_dir=results).run():
        pass
    assert client.get_run(killed_run).info.status == "KILLED"
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    alive.end()


def test_a_failed_jobs_log_holds_its_traceback(tmp_path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
    previous = signal.getsignal(signal.SIGTERM)
    from jobs import logged

    log = tmp_path / "job.log"
    try:
        with pytest.raises(ZeroDivisionError), logged(SimpleNamespace(log=[str(log)])):
            print("working")
            1 / 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = log.read_text()
    assert "working" in text and "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
