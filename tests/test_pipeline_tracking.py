"""mlflow tracking as the pipeline uses it: parent and child runs, job tags, many writers on one sqlite file, and
what a reader of the UI sees: run names, resolved params, system tags, metric names, honest run states."""

import getpass
import logging
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient

from cht.config import describe_run, job_run_name, training_run_name
from cht.dst import available_methods, get_method
from cht.processes import InterruptWatch
from cht.run.record import evolution_metrics, resolved_params
from cht.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, PARENT_RUN_ENV, Tracker, config_hash, default_tracking_uri, flatten, job_tags, main, relocate_artifacts, store_lock)
from cht.tracking_spool import RUN_SPOOL, Spool
from test_pipeline import needs_fashion_mnist, snakemake, snakemake_command, write_config

WRITERS = 8
STEPS = 10


@pytest.fixture(autouse=True)
def embedded_store(monkeypatch) -> None:
    """Every test uses the embedded store under its own results folder, with no inherited parent."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)


def client_for(results: Path) -> MlflowClient:
    """A client of the results' store, opened as the pipeline opens it: under its lock, so that a store a
    running job is still creating is not migrated twice at once."""
    uri = default_tracking_uri(results)
    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates or migrates the store while the lock is held
    return client


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
        # Gradual magnitude pruning evolves by its density schedule alone, without either rule.
        for rule in ("removal", "regrowth"):
            assert params["rules"][rule] == (repr(getattr(method, rule)) if getattr(method, rule) else "none")
        assert params["early_stop"] == (method.early_stop is not None)
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
    """The watch records the signal and then does what the handler it replaced does: Python's default
    raises KeyboardInterrupt, a custom handler is called. (Each case installs its previous handler itself:
    libraries used by earlier tests may have replaced this process's.)"""
    previous = signal.getsignal(signal.SIGINT)
    handled = []
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        watch = InterruptWatch([signal.SIGINT])
        assert not watch.interrupted
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # to this thread: os.kill may land on another one of the process
        assert watch.interrupted and watch.received == signal.SIGINT
        signal.signal(signal.SIGINT, lambda number, frame: handled.append(number))
        watch = InterruptWatch([signal.SIGINT])
        signal.raise_signal(signal.SIGINT)
        assert watch.received == signal.SIGINT and handled == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def hold_a_run(results: str, ready: str) -> None:
    """A process that opens a run and then hangs until killed."""
    tracker = Tracker("dead", run_name="hard-killed", results_dir=Path(results))
    tracker.start()
    partial = Path(f"{ready}.partial")
    partial.write_text(tracker.run_id)
    partial.rename(ready)  # whole or absent for the reader
    time.sleep(600)


def test_runs_of_hard_killed_processes_are_closed_when_the_next_run_starts(tmp_path) -> None:
    results = tmp_path / "results"
    ready = tmp_path / "ready"
    process = multiprocessing.get_context("spawn").Process(target=hold_a_run, args=(str(results), str(ready)))
    process.start()
    try:
        def run_opened() -> bool:
            assert process.is_alive(), f"the run-holding process ended with exit code {process.exitcode}"
            return ready.exists()

        wait_for(run_opened, "the other process to open its run", timeout=120)
        killed_run = ready.read_text()
        alive = Tracker("dead", run_name="alive", results_dir=results)
        alive.start()  # this process still runs: its run must stay open whatever happens to the other
    finally:
        process.kill()  # SIGKILL: the hard kill under test, and no process left behind if the wait failed
        process.join()
    client = client_for(results)
    assert client.get_run(killed_run).info.status == "RUNNING"  # nobody has looked yet

    with Tracker("dead", run_name="next", results_dir=results).run():
        pass
    assert client.get_run(killed_run).info.status == "KILLED"
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    alive.end()


@pytest.fixture
def logged(monkeypatch):
    """The pipeline scripts' ``logged``; importing their helper module sets NUMBA_NUM_THREADS, undone after."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", "1"))
    from jobs import logged

    return logged


def test_a_failed_jobs_log_holds_its_traceback(tmp_path, logged) -> None:
    previous, root = signal.getsignal(signal.SIGTERM), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    log = tmp_path / "job.log"
    with pytest.raises(ZeroDivisionError), logged(SimpleNamespace(log=[str(log)])):
        print("working")
        1 / 0
    text = log.read_text()
    assert "working" in text and "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    # The caller's signal handler and logging are back.
    assert signal.getsignal(signal.SIGTERM) is previous and root.handlers == handlers and root.level == level


def test_a_job_reading_a_damaged_result_ends_with_one_line_naming_it(tmp_path, logged) -> None:
    from cht.io import load_tensors
    from cht.results import read_json

    broken_metrics, broken_masks = tmp_path / "metrics.json", tmp_path / "masks.pt"
    broken_metrics.write_text('{"method": "se')
    broken_masks.write_bytes(b"PK\x03\x04 cut short")
    for path, read in [(broken_metrics, read_json), (broken_masks, load_tensors)]:
        log = tmp_path / f"{path.stem}.log"
        with pytest.raises(SystemExit) as stopped, logged(SimpleNamespace(log=[str(log)], rule="aggregate")):
            read(path)
        message = str(stopped.value.code)
        assert message.startswith("rule aggregate: ") and str(path) in message and "delete it" in message
        assert "\n" not in message
        text = log.read_text()
        assert message in text and "Traceback" not in text


# --- hard kills, end to end -------------------------------------------------------------------------------------


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


PAUSE_HOOK = Path(__file__).resolve().parent / "pause_hook"


def pausing_environment(environment: dict[str, str], point: str, folder: Path) -> dict[str, str]:
    """``environment`` for processes whose training stops at ``point`` and sleeps there until killed (see
    tests/pause_hook/sitecustomize.py): a kill then lands at a known place, however long an epoch lasts."""
    folder.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(PAUSE_HOOK), environment.get("PYTHONPATH")]))
    return {**environment, "PYTHONPATH": python_path, "CHT_TEST_PAUSE": point, "CHT_TEST_PAUSE_DIR": str(folder)}


def wait_until_paused(process: subprocess.Popen, folder: Path, point: str, what: str) -> None:
    """Wait until ``process`` (or one of its children) pauses at ``point`` (a paused process writes a file
    ``<point>-<pid>`` into ``folder``); fail at once if it ends first."""
    def paused_yet() -> bool:
        assert process.poll() is None, f"{what} ended (exit code {process.returncode}) before the kill"
        return any(folder.glob(f"{point}-*"))

    wait_for(paused_yet, f"{what} to pause at {point}")


@pytest.mark.slow
@needs_fashion_mnist
def test_rerun_after_a_hard_kill_closes_the_dead_runs_and_moves_the_resumed_one(tmp_path) -> None:
    experiment = "cht-hard-kill-test"
    config = write_config(tmp_path / "kill.yaml", methods=["static", "set"], experiment=experiment,
                          train={"epochs": 3, "batch_size": 32, "max_train_samples": 2000, "max_test_samples": 200,
                                 "device": "cpu"})
    targets = [f"results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/{method}/seed0/metrics.json"
               for method in ("static", "set")]
    # Every training job sleeps once its first epoch's checkpoint is saved: none can finish before the kill.
    pauses = tmp_path / "pauses"
    process = subprocess.Popen(snakemake_command(tmp_path, "--configfile", str(config), "--cores", "2", *targets),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env=pausing_environment(dict(os.environ), "first_checkpoint", pauses))
    try:
        wait_until_paused(process, pauses, "first_checkpoint", "the pipeline")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the pipeline and its jobs, as a node failure would
        process.wait()
    assert any((tmp_path / "results" / "runs").rglob("checkpoint.pt"))
    assert not any((tmp_path / "results" / "runs").rglob("metrics.json")), "training ended before the kill"
    (dead_pipeline,) = [run for run in runs_of(tmp_path / "results", experiment)
                        if run.data.tags.get("cht.pipeline") == "true"]
    assert dead_pipeline.info.status == "RUNNING"  # nothing could close it

    # What a job could not send while a tracking server was away waits in a spool: the next invocation sends it.
    spool = Spool(tmp_path / "results" / "runs" / "away" / RUN_SPOOL)
    spool.append({"uri": default_tracking_uri(tmp_path / "results"), "run_id": dead_pipeline.info.run_id,
                  "op": "batch", "metrics": [["waited", 1.0, 1000, 0]]})

    assert snakemake(tmp_path, "--configfile", str(config), "--unlock").returncode == 0
    rerun = snakemake(tmp_path, "--configfile", str(config), "--cores", "2", *targets)
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    assert not spool.path.exists()
    assert f"sent 1 waiting entries from results/runs/away/{RUN_SPOOL}" in rerun.stdout + rerun.stderr
    assert [m.value for m in client_for(tmp_path / "results").get_metric_history(dead_pipeline.info.run_id,
                                                                                 "waited")] == [1.0]

    runs = runs_of(tmp_path / "results", experiment)
    by_id = {run.info.run_id: run for run in runs}
    assert not [run.info.run_name for run in runs if run.info.status == "RUNNING"]
    pipelines = [run for run in runs if run.data.tags.get("cht.pipeline") == "true"]
    assert len(pipelines) == 2
    old = by_id[dead_pipeline.info.run_id]
    (new,) = [run for run in pipelines if run.info.run_id != old.info.run_id]
    assert old.info.status == "KILLED" and new.info.status == "FINISHED"
    children_of_new = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == new.info.run_id]
    jobs = [(run.data.tags["snakemake.rule"], run.data.tags["snakemake.wildcards"]) for run in children_of_new]
    assert len(jobs) == len(set(jobs)) and all(run.info.status == "FINISHED" for run in children_of_new)
    trained = [run for run in runs if run.data.tags.get("snakemake.rule") == "train" and run.info.status == "FINISHED"]
    assert sorted(run.info.run_name for run in trained) == ["set s0 · fashion_mnist mlp d1 1%",
                                                            "static s0 · fashion_mnist mlp d1 1%"]
    assert all(run.data.tags["mlflow.parentRunId"] == new.info.run_id for run in trained)
    resumed = [run for run in trained if run.data.tags.get("cht.previous_parent_run_id") == old.info.run_id]
    assert resumed, "no training run continued from its checkpoint"
    for run in runs:  # what the dead pipeline left running is closed, not left RUNNING or duplicated as live
        if run.data.tags.get("mlflow.parentRunId") == old.info.run_id:
            assert run.info.status in ("FINISHED", "KILLED")


@pytest.mark.slow
@needs_fashion_mnist
def test_ctrl_c_ends_the_pipeline_and_its_training_run_killed_with_the_traceback_logged(tmp_path) -> None:
    config = write_config(tmp_path / "interrupt.yaml", methods=["set"], experiment="cht-interrupt-test",
                          train={"epochs": 50, "batch_size": 32, "max_train_samples": 2000, "max_test_samples": 200,
                                 "device": "cpu"})
    target = "results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/set/seed0/metrics.json"
    environment = {k: v for k, v in os.environ.items() if k not in (PARENT_RUN_ENV, "MLFLOW_TRACKING_URI")}
    process = subprocess.Popen(snakemake_command(tmp_path, "--configfile", str(config), "--cores", "1", target),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                               env=environment)
    wait_for(lambda: any((tmp_path / "results" / "runs").rglob("checkpoint.pt")) or process.poll() is not None,
             "a first epoch checkpoint")
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the whole foreground group
    assert process.wait(timeout=300) != 0
    states = {run.data.tags.get("snakemake.rule", "pipeline"): run.info.status
              for run in runs_of(tmp_path / "results", "cht-interrupt-test")}
    assert states == {"pipeline": "KILLED", "download_dataset": "FINISHED", "train": "KILLED"}
    run_dir = Path(target.removeprefix("results/runs/")).parent
    log = (tmp_path / "results" / "logs" / "train" / run_dir).with_suffix(".log")
    assert "Traceback (most recent call last)" in log.read_text() and "KeyboardInterrupt" in log.read_text()


@pytest.mark.slow
@needs_fashion_mnist
def test_a_cli_run_killed_in_its_first_epoch_is_closed_by_the_next_run(tmp_path, fashion_root) -> None:
    results = tmp_path / "results"
    command = [sys.executable, "-m", "cht", "train", "--method", "set", "--epochs", "1", "--device", "cpu",
               "--data-root", str(fashion_root), "--results-dir", str(results), "--out", str(tmp_path / "run"),
               "--experiment", "cli-kill", "--no-progress"]
    environment = {k: v for k, v in os.environ.items() if k not in (PARENT_RUN_ENV, "MLFLOW_TRACKING_URI")}
    # The run sleeps after its first optimiser step, its mlflow run open: the kill lands inside the first epoch.
    pauses = tmp_path / "pauses"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=pausing_environment(environment, "first_step", pauses))
    try:
        wait_until_paused(process, pauses, "first_step", "the CLI run")
    finally:
        process.kill()
        process.wait()
    assert not (tmp_path / "run" / "checkpoint.pt").exists(), "the first epoch ended before the kill"
    (killed,) = runs_of(results, "cli-kill")
    assert killed.info.status == "RUNNING" and killed.info.run_name == "set s0 · fashion_mnist mlp d1 1%"

    finished = subprocess.run([*command, "--max-train-samples", "256", "--max-test-samples", "128"],
                              capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    states = {run.info.run_id: run.info.status for run in runs_of(results, "cli-kill")}
    assert states.pop(killed.info.run_id) == "KILLED" and list(states.values()) == ["FINISHED"]


@pytest.mark.slow
def test_training_logs_what_it_resolved_and_metrics_on_their_own_axes(tmp_path, fashion_root) -> None:
    from cht.config import TrainConfig
    from cht.train import train

    results = tmp_path / "results"
    config = TrainConfig(method="set", epochs=3, max_train_samples=256, max_test_samples=128, device="auto",
                         data_root=str(fashion_root), progress=False, experiment="resolved")
    metrics = train(config, tmp_path / "run", Tracker("resolved", results_dir=results))
    (run,) = runs_of(results, "resolved")
    assert run.info.run_name == "set s0 · fashion_mnist mlp d1 1%"
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert run.data.params["device"].startswith(expected_device) and run.data.params["zeta"] == "0.3"
    assert run.data.params["rules.removal"] == repr(get_method("set").removal)
    assert metrics["config"]["zeta"] == 0.3 and metrics["config"]["device"].startswith(expected_device)
    assert metrics["config"]["rules"]["regrowth"] == "RandomRegrowth()"
    client = client_for(results)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/test_accuracy")] == [1, 2, 3]
    updates = client.get_metric_history(run.info.run_id, "evolution/anp")
    assert [m.step for m in updates] == [8, 16]  # optimiser steps: 256 / 32 per epoch, after epochs 1 and 2
    assert "evolution_layer0/regrown" in run.data.metrics and "anp" not in run.data.metrics

    dense = TrainConfig(method="fc", epochs=1, max_train_samples=256, max_test_samples=128, device="cpu",
                        data_root=str(fashion_root), progress=False, experiment="resolved")
    train(dense, tmp_path / "dense", Tracker("resolved", results_dir=results))
    (fc,) = [run for run in runs_of(results, "resolved") if run.data.params["method"] == "fc"]
    assert "final_anp" not in fc.data.metrics and "final_test_accuracy" in fc.data.metrics
    assert "zeta" not in fc.data.params and fc.data.params["rules.topology_init"] == "dense"


def test_viewing_hint_opens_the_experiment_on_its_runs_in_the_model_training_view(tmp_path, monkeypatch) -> None:
    tracker = Tracker("hint", results_dir=tmp_path / "results")
    with tracker.run():
        pass
    hint = tracker.viewing_hint()
    assert default_tracking_uri(tmp_path / "results") in hint
    assert f"#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning" in hint
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://cluster:5000/")
    assert tracker.viewing_hint().startswith(f"mlflow: http://cluster:5000/#/experiments/{tracker.experiment_id}/")


def test_resuming_a_run_the_store_does_not_hold_starts_a_new_one(tmp_path) -> None:
    results = tmp_path / "results"
    tracker = Tracker("lost", results_dir=results)
    tracker.resume_run_id = "0" * 32  # e.g. a checkpoint kept while the store was deleted
    with tracker.run():
        pass
    assert tracker.run_id != "0" * 32 and client_for(results).get_run(tracker.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(("argv", "expected"), [(["/venv/bin/cht", "train", "--method", "set"], "cht train"),
                                                (["/repo/cht/__main__.py", "train"], "cht train"),
                                                (["bench/method_comparison.py"], "method_comparison.py")])
def test_the_source_column_names_the_command(monkeypatch, argv, expected) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    assert Tracker("x").source == expected
