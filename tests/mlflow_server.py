"""A real ``mlflow server`` process on a results folder's store, for the tests that need one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from cht.tracking import default_tracking_uri, store_lock


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def create_store(results: Path) -> None:
    """Create (migrate) the embedded store first, under its lock, so that the server does not race a job."""
    results.mkdir(parents=True, exist_ok=True)
    uri = default_tracking_uri(results)
    with store_lock(uri):
        MlflowClient(uri).search_experiments()


@contextmanager
def mlflow_server(results: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` on the store under ``results`` (one worker, no job runner: ~0.5 GB), stopped after.

    Yields its address and its process (a test may kill it: stopping a dead server is a no-op).
    """
    port = port or free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow) if mlflow.exists() else shutil.which("mlflow"), "server", "--backend-store-uri",
               default_tracking_uri(results), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (results / "server.log").open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            kill_server(process, signal_number=15)


def kill_server(process: subprocess.Popen, signal_number: int = 9) -> None:
    """Stop the server and its workers (its whole process group), waiting until they are gone."""
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def wait_until_healthy(url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"mlflow server did not answer:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
