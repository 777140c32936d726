"""SIGTERM (a scheduler's time limit or preemption) stops a training at the next step boundary with a
checkpoint of the part of the epoch done; the next start resumes there and ends as if never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from mlflow.tracking import MlflowClient

import cht.train
from cht.processes import RETRY_EXIT_STATUS, StopSignal, TrainingStopped
from cht.tracking import PARENT_RUN_ENV, Tracker, default_tracking_uri
from cht.train import train
from test_train import comparable, quick_config, same_final_weights

STEPS_PER_EPOCH = 19  # 600 samples in batches of 32


def sigterm_after_call(monkeypatch, owner: object, name: str, call: int) -> None:
    """Deliver SIGTERM to this process right after the ``call``-th call (1-based) of ``owner.name``."""
    real, calls = getattr(owner, name), []

    def call_then_signal(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGTERM)
        return result

    monkeypatch.setattr(owner, name, call_then_signal)


def sigterm_after_step(monkeypatch, step: int) -> None:
    """Deliver SIGTERM to this process right after optimiser step ``step`` (1-based, over the whole run)."""
    sigterm_after_call(monkeypatch, cht.train, "after_optimizer_step", step)


@pytest.mark.slow
@pytest.mark.parametrize("changes", [dict(update_interval=1),  # topology updates after epochs
                                     dict(update_unit="step", update_interval=7)],  # and within them
                         ids=["epoch-updates", "step-updates"])
def test_sigterm_mid_epoch_resumes_to_the_uninterrupted_result(fashion_root, tmp_path, monkeypatch,
                                                               changes) -> None:
    config = quick_config(fashion_root, **changes)
    uninterrupted = train(config, tmp_path / "full")
    handler_before = signal.getsignal(signal.SIGTERM)

    stop_step = STEPS_PER_EPOCH + 6  # the 6th step of epoch 2
    with monkeypatch.context() as patch:
        sigterm_after_step(patch, stop_step)
        with pytest.raises(TrainingStopped, match=f"SIGTERM after step 6 of {STEPS_PER_EPOCH} in epoch 2"):
            train(config, tmp_path / "stopped")
    assert signal.getsignal(signal.SIGTERM) is handler_before
    saved = torch.load(tmp_path / "stopped/checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 0 and saved["partial_epoch"]["batches"] == 6
    assert len(saved["runs"][0]["history"]["test_accuracy"]) == 1
    assert not (tmp_path / "stopped/metrics.json").exists()

    resumed = train(config, tmp_path / "stopped")
    assert comparable(resumed) == comparable(uninterrupted)
    assert same_final_weights(tmp_path / "full", tmp_path / "stopped")


@pytest.mark.slow
def test_the_stopped_attempt_is_killed_and_visible_in_the_one_finished_run(fashion_root, tmp_path,
                                                                            monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    config = quick_config(fashion_root, tracking=True, experiment="preempted")
    results = tmp_path / "results"
    client = MlflowClient(default_tracking_uri(results))
    with monkeypatch.context() as patch:
        sigterm_after_step(patch, 30)
        with pytest.raises(TrainingStopped):
            train(config, tmp_path / "run", Tracker(config.experiment, results_dir=results))
    (killed,) = client.search_runs([client.get_experiment_by_name("preempted").experiment_id])
    assert killed.info.status == "KILLED"
    assert "SIGTERM after step 11 of 19 in epoch 2" in killed.data.tags["cht.stopped"]

    train(config, tmp_path / "run", Tracker(config.experiment, results_dir=results))
    (run,) = client.search_runs([client.get_experiment_by_name("preempted").experiment_id])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "run/stopped")] == [(30, 1.0)]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch/test_accuracy")) == [1, 2, 3]


def test_a_stop_during_the_last_step_of_an_epoch_checkpoints_the_whole_epoch(fashion_root, tmp_path,
                                                                              monkeypatch) -> None:
    config = quick_config(fashion_root, update_interval=1)
    with monkeypatch.context() as patch:
        sigterm_after_step(patch, STEPS_PER_EPOCH)
        with pytest.raises(TrainingStopped, match="after step 0 of 19 in epoch 2"):
            train(config, tmp_path / "stopped")
    saved = torch.load(tmp_path / "stopped/checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 0 and saved["partial_epoch"] is None
    assert len(saved["runs"][0]["history"]["evolution"]) == 1  # the update after epoch 1 ran before stopping


def test_stop_signal_restores_the_handler_before_and_is_inert_outside_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.received
        signal.raise_signal(signal.SIGTERM)
        assert stop.received
    assert signal.getsignal(signal.SIGTERM) is before

    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("stop", StopSignal().__enter__()))
    worker.start()
    worker.join()
    assert not outcome["stop"].received and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_the_cli_stopped_by_sigterm_exits_retryable_with_one_line_and_resumes(fashion_root, tmp_path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cht", "train", "--method", "set", "--epochs", "4", "--max-train-samples",
               "3000", "--device", "cpu", "--data-root", str(fashion_root), "--out", str(out), "--no-tracking",
               "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == RETRY_EXIT_STATUS, stderr
    assert stderr.count("\n") == 1 and "stopped by SIGTERM after step" in stderr and "Traceback" not in stderr
    assert not (out / "metrics.json").exists()

    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert len(json.loads((out / "metrics.json").read_text())["test_accuracy"]) == 4
