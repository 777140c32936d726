"""A tracking server that goes away never fails a training: what it could not take waits in a spool file and
reaches the store later, complete, in the same run.

The end-to-end tests use a real ``mlflow server`` process that they kill (SIGKILL) and restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cht.tracking import HTTP_LIMITS, PARENT_RUN_ENV, Tracker, default_tracking_uri, http_limits, main
from cht.tracking_spool import RUN_SPOOL, Spool, find_spools, send, sync
from mlflow_server import create_store, free_port, kill_server, mlflow_server, wait_until_healthy
from test_pipeline import needs_fashion_mnist

EXPERIMENT = "outage"


@pytest.fixture(autouse=True)
def no_inherited_store(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    # A dead server answers "connection refused" at once; no test waits on mlflow's back-off.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def test_the_http_limits_do_not_leak_into_the_process_environment(tmp_path, monkeypatch) -> None:
    for name in HTTP_LIMITS:
        monkeypatch.delenv(name, raising=False)
    tracker = Tracker(EXPERIMENT, results_dir=tmp_path / "results")
    with tracker.run():
        tracker.log_metrics({"x": 1.0}, step=0)
        with http_limits():
            assert all(os.environ[name] == value for name, value in HTTP_LIMITS.items())
    assert not any(name in os.environ for name in HTTP_LIMITS)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own setting wins and stays
    with http_limits():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


def embedded_run(results: Path) -> tuple[MlflowClient, str]:
    create_store(results)
    client = MlflowClient(default_tracking_uri(results))
    experiment = client.create_experiment("spool")
    return client, client.create_run(experiment).info.run_id


def test_spool_replays_every_call_kind_in_order_and_is_removed(tmp_path) -> None:
    client, run_id = embedded_run(tmp_path / "results")
    artifact = tmp_path / "metrics.json"
    artifact.write_text("{}")
    spool = Spool(tmp_path / "run" / RUN_SPOOL)
    uri = default_tracking_uri(tmp_path / "results")
    calls = [{"op": "batch", "params": [["lr", "0.1"]], "tags": [["cht.method", "set"]]},
             *({"op": "batch", "metrics": [["epoch/test_accuracy", 0.5 + epoch / 10, 1000 + epoch, epoch]]}
               for epoch in range(3)),
             {"op": "dict", "values": {"a": 1}, "artifact_file": "config.yaml"},
             {"op": "artifact", "path": str(artifact), "artifact_path": None},
             {"op": "terminate", "status": "FINISHED", "end_time": 5000}]
    for call in calls:
        spool.append({"uri": uri, "run_id": run_id, **call})
    assert len(spool) == len(calls)

    assert spool.replay() == len(calls)
    assert not spool.path.exists()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == 5000
    assert run.data.params == {"lr": "0.1"} and run.data.tags["cht.method"] == "set"
    history = client.get_metric_history(run_id, "epoch/test_accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "metrics.json"}


def test_replaying_twice_adds_nothing(tmp_path) -> None:
    """An entry that reached the store before a time-out may be sent again: the record must not change."""
    client, run_id = embedded_run(tmp_path / "results")
    entry = {"uri": default_tracking_uri(tmp_path / "results"), "run_id": run_id, "op": "batch",
             "metrics": [["loss", 1.5, 1234, 3]], "params": [["lr", "0.1"]]}
    for _ in range(2):
        send(client, entry)
    assert len(client.get_metric_history(run_id, "loss")) == 1
    assert client.get_run(run_id).data.params == {"lr": "0.1"}


def test_a_failed_replay_keeps_the_entries_not_sent(tmp_path) -> None:
    client, run_id = embedded_run(tmp_path / "results")
    uri = default_tracking_uri(tmp_path / "results")
    spool = Spool(tmp_path / RUN_SPOOL)
    good = {"uri": uri, "run_id": run_id, "op": "batch", "metrics": [["loss", 1.0, 1, 0]]}
    refused = {"uri": uri, "run_id": "0" * 32, "op": "batch", "metrics": [["loss", 2.0, 2, 1]]}
    later = {"uri": uri, "run_id": run_id, "op": "batch", "metrics": [["loss", 3.0, 3, 2]]}
    for entry in (good, refused, later):
        spool.append(entry)
    with pytest.raises(Exception):
        spool.replay()
    assert spool.entries() == [refused, later]
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0]


def test_a_line_cut_off_by_a_kill_is_dropped(tmp_path) -> None:
    spool = Spool(tmp_path / RUN_SPOOL)
    spool.append({"uri": "u", "run_id": "r", "op": "terminate", "status": "FINISHED", "end_time": 1})
    with spool.path.open("a") as handle:
        handle.write('{"uri": "u", "run_id": "r", "op": "ba')
    assert [entry["op"] for entry in spool.entries()] == ["terminate"]


def test_sync_reports_each_spool_and_exits_1_while_one_waits(tmp_path, capsys, refusing_url) -> None:
    results = tmp_path / "results"
    client, run_id = embedded_run(results)
    Spool(results / "runs" / "a" / RUN_SPOOL).append(
        {"uri": default_tracking_uri(results), "run_id": run_id, "op": "batch", "metrics": [["x", 1.0, 1, 0]]})
    Spool(results / "mlflow-spool" / f"b{RUN_SPOOL}").append(
        {"uri": refusing_url, "run_id": run_id, "op": "batch", "metrics": [["y", 1.0, 1, 0]]})
    assert len(find_spools(results)) == 2

    assert main(["sync", str(results)]) == 1
    out = capsys.readouterr().out
    assert "sent 1 waiting entries" in out and "still waits (1 entries)" in out
    assert "1 spool file(s) sent, 1 still waiting" in out
    assert [m.value for m in client.get_metric_history(run_id, "x")] == [1.0]
    assert find_spools(results) == [results / "mlflow-spool" / f"b{RUN_SPOOL}"]
    assert sync(tmp_path / "empty") == (0, 0)


@pytest.mark.slow
def test_tracker_spools_while_the_server_is_away_and_catches_up_when_it_returns(tmp_path, monkeypatch,
                                                                                 capsys) -> None:
    """Killed after epoch 1 and restarted before epoch 4: one warning line, one catch-up line, and a
    complete record in one FINISHED run."""
    results = tmp_path / "results"
    create_store(results)
    port = free_port()
    with mlflow_server(results, port) as (url, server):
        wait_until_healthy(url, results / "server.log")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        tracker = Tracker(EXPERIMENT, run_name="away", results_dir=results, spool=tmp_path / "run" / RUN_SPOOL)
        tracker.start()
        tracker.log_params({"lr": 0.1})
        tracker.log_metrics({"epoch/test_accuracy": 0.1}, step=1)
        kill_server(server)
        for epoch in (2, 3):
            tracker.log_metrics({"epoch/test_accuracy": epoch / 10}, step=epoch)
        assert len(tracker.spool) == 2
    with mlflow_server(results, port) as (url, _):
        wait_until_healthy(url, results / "server.log")
        tracker.retry_seconds = 0.0
        tracker.log_metrics({"epoch/test_accuracy": 0.4}, step=4)
        tracker.end("FINISHED")
        err = capsys.readouterr().err
        assert err.count("warning: mlflow") == 1 and "did not take a call" in err
        assert err.count("answers again; 2 waiting entries") == 1
        assert not tracker.spool.path.exists()
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
        assert [run.info.status for run in runs] == ["FINISHED"]
        history = client.get_metric_history(runs[0].info.run_id, "epoch/test_accuracy")
        assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]


@pytest.mark.slow
@needs_fashion_mnist
def test_training_outlives_its_server_and_sync_completes_the_record(fashion_root, tmp_path) -> None:
    """``cht train`` against a server killed mid-run: exit 0, every result written, and after a restart
    ``python -m cht.tracking sync`` leaves one FINISHED run with every epoch metric and its artifacts."""
    results, out, epochs = tmp_path / "results", tmp_path / "results" / "run", 12
    create_store(results)
    port = free_port()
    environment = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cht", "train", "--method", "set", "--epochs", str(epochs),
               "--max-train-samples", "3000", "--device", "cpu", "--data-root", str(fashion_root),
               "--experiment", EXPERIMENT, "--results-dir", str(results), "--out", str(out), "--no-progress"]
    with mlflow_server(results, port) as (url, server):
        wait_until_healthy(url, results / "server.log")
        client = MlflowClient(url)
        training = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        deadline = time.monotonic() + 300
        while not epoch_logged(client):
            assert training.poll() is None, training.communicate()
            assert time.monotonic() < deadline, "training logged no epoch within 300 s"
            time.sleep(0.2)
        kill_server(server)
        stdout, stderr = training.communicate(timeout=600)
    assert training.returncode == 0, stderr[-3000:]
    assert stderr.count("did not take a call") == 1, stderr
    assert "python -m cht.tracking sync" in stderr
    assert len(json.loads((out / "metrics.json").read_text())["test_accuracy"]) == epochs
    assert (out / RUN_SPOOL).exists()

    with mlflow_server(results, port) as (url, _):
        wait_until_healthy(url, results / "server.log")
        synced = subprocess.run([sys.executable, "-m", "cht.tracking", "sync", str(results)], env=environment,
                                capture_output=True, text=True)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert not (out / RUN_SPOOL).exists()
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
        assert [run.info.status for run in runs] == ["FINISHED"]
        history = client.get_metric_history(runs[0].info.run_id, "epoch/test_accuracy")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        assert {"metrics.json", "masks.pt"} <= {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def epoch_logged(client: MlflowClient) -> bool:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return False
    runs = client.search_runs([experiment.experiment_id])
    return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "epoch/test_accuracy"))
