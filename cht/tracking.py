"""Experiment tracking with mlflow, laid out for a reader of the mlflow UI.

Every training run is an mlflow run named by what tells it apart (``cht s2 · fashion_mnist mlp d1 1%``),
holding the configuration it actually used (:func:`cht.run.record.resolved_params`: the method's effective schedule,
rules and initialisers, the real device), per-epoch metrics on the epoch axis, per-update metrics under
``evolution/`` (per layer under ``evolution_layer<i>/``) on the optimiser-step axis, its final masks and
metrics JSON (artifacts), and what is needed to reproduce it (tags: git commit, dataset checksum,
package versions). mlflow's own ``mlflow.source.*`` and ``mlflow.user`` tags fill the UI's Source and
"Created by" columns.

The default store is an embedded sqlite file under the results folder, its artifacts in
``<results>/mlartifacts``; moving the folder is fine: the next run (or ``python -m cht.tracking
<results>``) points the store at the new place. ``MLFLOW_TRACKING_URI`` switches to a server, which must
answer when a run starts or the run stops at once. A server that goes away later does not stop the run: its
calls wait in a spool file (:mod:`cht.tracking_spool`) and are sent when the server is back, or by
``python -m cht.tracking sync <results>``.

Runs record their host and process; a run still RUNNING whose process is gone (a hard kill, a node
failure) is marked KILLED the next time any run of its experiment starts on that host.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from cht.processes import process_alive, process_tags
from cht.tracking_spool import JOB_SPOOL_DIR, SPOOL_SUFFIX, Spool, first_line, send, sync

DEFAULT_RESULTS_DIR = Path("results")
ARTIFACTS_DIR = "mlartifacts"
PARENT_RUN_ENV = "CHT_MLFLOW_PARENT_RUN_ID"
PACKAGES = ("torch", "torchvision", "numpy", "mlflow", "scipy", "networkx", "snakemake")
# Without this experiment tag the mlflow 3 UI opens an experiment in its GenAI (traces) view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# mlflow's per-call limit on params and tags (mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH) and on
# the length of one param value (MAX_PARAM_VAL_LENGTH).
BATCH_LIMIT = 100
PARAM_VALUE_LIMIT = 6000
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says how to fix it."""


def default_tracking_uri(results_dir: Path = DEFAULT_RESULTS_DIR) -> str:
    """The embedded store: ``sqlite:///<results>/mlflow.db``."""
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def resolve_tracking_uri(results_dir: Path = DEFAULT_RESULTS_DIR) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded sqlite store under ``results_dir``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results_dir)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of an embedded sqlite store across processes.

    mlflow creates and migrates the sqlite schema on first use; two processes doing that at once
    corrupt each other's migration. Holding a file lock next to the database while opening it makes
    parallel pipeline jobs safe. Other stores need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock", timeout=600):
        yield


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of a (nested, JSON-serialisable) configuration, for tagging runs."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_tags(rule: str, wildcards: Mapping[str, Any], config_digest: str) -> dict[str, str]:
    """Tags naming the pipeline job behind a run: rule, wildcards, config hash, scheduler job id."""
    tags = {"snakemake.rule": rule, "snakemake.wildcards": json.dumps(dict(wildcards), sort_keys=True),
            "cht.config_hash": config_digest}
    tags.update({f"snakemake.wildcard.{key}": str(value) for key, value in wildcards.items()})
    if "SLURM_JOB_ID" in os.environ:
        tags["slurm.job_id"] = os.environ["SLURM_JOB_ID"]
    return tags


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when an http(s) tracking server does not answer its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = str(getattr(error, "reason", error))
    raise TrackingError(
        f"mlflow tracking server {uri} is unreachable ({problem}). Start it, correct MLFLOW_TRACKING_URI, "
        f"or unset MLFLOW_TRACKING_URI to use the embedded store under results/.")


def git_commit(path: Path | None = None) -> str:
    """Commit of the source tree (suffixed ``-dirty`` with uncommitted changes), or ``unknown``."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (mlflow params are flat)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def chunks(items: Sequence[T], size: int = BATCH_LIMIT) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def relocate_artifacts(results_dir: Path = DEFAULT_RESULTS_DIR) -> int:
    """Point an embedded store's artifact locations at ``<results>/mlartifacts`` after the folder moved.

    sqlite stores keep absolute artifact URIs; this rewrites those that end in ``/mlartifacts`` (the
    ones this module writes) and lie elsewhere. Returns how many experiments it moved.
    """
    database = Path(results_dir) / "mlflow.db"
    if not database.exists():
        return 0
    current = (Path(results_dir) / ARTIFACTS_DIR).resolve().as_uri()
    # closing() closes the connection; using the connection as a context manager commits the updates together.
    with store_lock(default_tracking_uri(Path(results_dir))), \
            closing(sqlite3.connect(database, timeout=60)) as connection, connection:
        old_roots = {location for (location,) in connection.execute("SELECT artifact_location FROM experiments")
                     if location and location.endswith(f"/{ARTIFACTS_DIR}") and location != current}
        for old in old_roots:
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?",
                               (current, old))
            connection.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                               "WHERE substr(artifact_uri, 1, ?) = ?", (current, len(old) + 1, len(old) + 1, f"{old}/"))
    return len(old_roots)


@contextmanager
def http_limits() -> Iterator[None]:
    """mlflow's HTTP retries and timeout for the calls in the block, where the user has not set them.

    mlflow's defaults (7 retries with exponential back-off, 120 s time-out) would hold a training for minutes
    per call while a server is away. The process environment is restored after the block, so nothing leaks
    into later code or subprocesses.
    """
    added = {name: value for name, value in HTTP_LIMITS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def retry_locked(call: Callable[[], T], attempts: int = 20, delay: float = 0.25) -> T:
    """Retry a store call that failed because a parallel job holds the sqlite lock."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # mlflow wraps sqlite errors in its own exception types
            if "locked" not in str(error).lower() or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + attempt))
    raise AssertionError("unreachable")


class Tracker:
    """One mlflow run; a no-op when ``enabled`` is false.

    Set ``resume_run_id`` before :meth:`run` to continue a run (training resumed from a checkpoint): it
    moves under the current parent run. A run becomes the child of ``parent_run_id``, or of the run
    named by ``CHT_MLFLOW_PARENT_RUN_ID``. :meth:`start` and :meth:`end` open and close the run where a
    ``with`` block does not fit (a pipeline's run spans its start and end hooks). ``source`` and
    ``source_type`` fill mlflow's Source column (default: the command that runs).

    Once the run is open, no tracking call raises: a call the store does not take (a server gone, a
    timeout) goes to the spool at ``spool`` (default ``<results>/mlflow-spool/<run id>.spool.jsonl``),
    with one warning line; at most every ``retry_seconds`` the tracker tries the store again and, when it
    answers, sends the spool and says so in one line.
    """

    retry_seconds = 30.0

    def __init__(self, experiment: str, run_name: str | None = None, enabled: bool = True,
                 results_dir: Path = DEFAULT_RESULTS_DIR, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, source: str | None = None,
                 source_type: str = "LOCAL", spool: Path | None = None) -> None:
        self.enabled = enabled
        self.experiment = experiment
        self.run_name = run_name
        self.results_dir = Path(results_dir)
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_RUN_ENV)
        self.tags = dict(tags or {})
        self.source = source or command_name()
        self.source_type = source_type
        self.run_id: str | None = None
        self.resume_run_id: str | None = None
        self.experiment_id: str | None = None
        self.spool_path = spool
        self._client: Any = None
        self._uri = ""
        self._away_since: float | None = None
        self._last_try = 0.0

    @contextmanager
    def run(self) -> Iterator[Tracker]:
        """Open the run for the duration of the block; an interrupt marks it KILLED, a failure FAILED."""
        self.start()
        try:
            yield self
        except KeyboardInterrupt:
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise
        self.end("FINISHED")

    def start(self) -> None:
        """Create (or resume) the run, first closing runs of this experiment left RUNNING by dead processes."""
        if not self.enabled:
            return
        with http_limits():
            self._start()

    def _start(self) -> None:
        from mlflow.tracking import MlflowClient

        self._uri = uri = resolve_tracking_uri(self.results_dir)
        check_reachable(uri)
        if uri.startswith("sqlite:"):
            self.results_dir.mkdir(parents=True, exist_ok=True)
        # A client of its own, not mlflow.set_tracking_uri: that would also export MLFLOW_TRACKING_URI to
        # every subprocess started later (e.g. the jobs of a pipeline run with another results folder).
        with store_lock(uri):
            self._client = client = MlflowClient(uri)
            self.experiment_id = experiment_id = retry_locked(lambda: self._experiment_id(client, uri))
        if uri.startswith("sqlite:"):
            relocate_artifacts(self.results_dir)
        close_dead_runs(client, experiment_id)
        here = process_tags()
        if self.resume_run_id and not run_exists(client, self.resume_run_id):
            print(f"mlflow run {self.resume_run_id} of the checkpoint is not in {uri}; starting a new run")
            self.resume_run_id = None
        if self.resume_run_id:
            run_id = self.resume_run_id
            previous = retry_locked(lambda: client.get_run(run_id)).data.tags.get("mlflow.parentRunId")
            moved = dict(here)
            if self.parent_run_id and previous != self.parent_run_id:
                moved["mlflow.parentRunId"] = self.parent_run_id
                if previous:
                    moved["cht.previous_parent_run_id"] = previous
            self.run_id = run_id
            self._send_earlier_attempt()
            self.set_tags(moved)
            retry_locked(lambda: client.update_run(run_id, status="RUNNING"))
            return
        commit = git_commit()
        tags = {"cht.git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("-dirty"),
                "mlflow.source.name": self.source, "mlflow.source.type": self.source_type,
                "mlflow.user": current_user(), **here, **self.tags}
        tags.update({f"cht.version.{k}": v for k, v in package_versions().items()})
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        first, rest = dict(list(tags.items())[:BATCH_LIMIT]), dict(list(tags.items())[BATCH_LIMIT:])
        run = retry_locked(lambda: client.create_run(experiment_id, run_name=self.run_name, tags=first))
        self.run_id = run.info.run_id
        self._send_earlier_attempt()
        self.set_tags(rest)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``).

        With the store still away, the closing call waits in the spool too, and one line says how to send it.
        """
        if not self.enabled or self.run_id is None:
            return
        if self._away_since is not None:
            self._last_try = -math.inf  # one last try before the process ends, whenever the one before was
            self._catch_up()
        self._send({"op": "terminate", "status": status, "end_time": int(time.time() * 1000)})
        if self._away_since is not None:
            print(f"warning: mlflow: {len(self.spool)} entries of run {self.run_id} wait in {self.spool.path}; "
                  f"`python -m cht.tracking sync {self.results_dir}` sends them (the next pipeline run does too)",
                  file=sys.stderr)

    @property
    def spool(self) -> Spool:
        """Where this run's calls wait while the store is away."""
        return Spool(self.spool_path or self.results_dir / JOB_SPOOL_DIR / f"{self.run_id}{SPOOL_SUFFIX}")

    def _send(self, call: dict[str, Any]) -> None:
        """Make one tracking call, or keep it in the spool while the store is away; never raises."""
        entry = {"uri": self._uri, "run_id": self.run_id, **call}
        if self._away_since is not None and not self._catch_up():
            self.spool.append(entry)
            return
        try:
            with http_limits():
                retry_locked(lambda: send(self._client, entry))
        except Exception as error:  # noqa: BLE001 (whatever the store says, the training goes on)
            self._away_since = self._last_try = time.monotonic()
            self.spool.append(entry)
            print(f"warning: mlflow: the store at {self._uri} did not take a call ({first_line(error)}); "
                  f"training goes on, its record waits in {self.spool.path}", file=sys.stderr)

    def _catch_up(self) -> bool:
        """Try the store again (at most every ``retry_seconds``) and send the spool; True when it is back."""
        if time.monotonic() - self._last_try < self.retry_seconds:
            return False
        self._last_try = time.monotonic()
        try:
            with http_limits():
                count = self.spool.replay(self._client)
        except Exception:  # noqa: BLE001 (still away)
            return False
        print(f"mlflow: the store at {self._uri} answers again; {count} waiting entries of run {self.run_id} "
              f"sent after {time.monotonic() - self._away_since:.0f} s", file=sys.stderr)
        self._away_since = None
        return True

    def _send_earlier_attempt(self) -> None:
        """A run resumed in a new process first sends what its earlier attempt left in the spool."""
        if self.spool.path.exists():
            self._away_since, self._last_try = time.monotonic(), -math.inf
            self._catch_up()

    def viewing_hint(self) -> str:
        """How to open this run's experiment in the mlflow UI, on its runs table.

        The mlflow 3.17 UI opens every experiment in its GenAI view unless the address asks for the
        model-training one (``workflowType=machine_learning``).
        """
        uri = resolve_tracking_uri(self.results_dir)
        page = f"#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
        if uri.startswith(("http://", "https://")):
            return f"mlflow: {uri.rstrip('/')}/{page}"
        return (f"mlflow: `mlflow server --backend-store-uri {uri} --workers 1`, then open "
                f"http://127.0.0.1:5000/{page}")

    def _experiment_id(self, client: Any, uri: str) -> str:
        existing = client.get_experiment_by_name(self.experiment)
        if existing is None:
            existing = self._create_experiment(client, uri)
        if existing.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return existing.experiment_id

    def _create_experiment(self, client: Any, uri: str) -> Any:
        location = None
        if uri.startswith("sqlite:"):
            location = (self.results_dir / ARTIFACTS_DIR).resolve().as_uri()
        try:
            client.create_experiment(self.experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:
            # A parallel job created it between our lookup and our create.
            if client.get_experiment_by_name(self.experiment) is None:
                raise
        return client.get_experiment_by_name(self.experiment)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params, flattened with dots, in batches within mlflow's per-call limit."""
        if not self.enabled:
            return
        batch = [[k, str(v)[:PARAM_VALUE_LIMIT]] for k, v in flatten(params).items()]
        for chunk in chunks(batch):
            self._send({"op": "batch", "params": list(chunk)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        batch = [[k, str(v)] for k, v in tags.items()]
        for chunk in chunks(batch):
            self._send({"op": "batch", "tags": list(chunk)})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Log metrics at ``step``; ``None`` and non-finite values are left out (absent, not NaN, in the UI)."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for chunk in chunks(batch, 1000):
            self._send({"op": "batch", "metrics": list(chunk)})

    def log_dict(self, values: Mapping[str, Any], artifact_file: str) -> None:
        """Store ``values`` as a JSON or YAML artifact (format from the file name)."""
        if not self.enabled:
            return
        self._send({"op": "dict", "values": dict(values), "artifact_file": artifact_file})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        self._send({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})


def run_exists(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        retry_locked(lambda: client.get_run(run_id))
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def command_name() -> str:
    """The running command as mlflow's Source column should show it: ``cht train``, not a script path."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:2]])


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the runs of the experiment left RUNNING by processes of this host that are gone.

    A hard kill (SIGKILL, a lost node, a closed terminal) gives a run no chance to close itself; without
    this it would stay RUNNING forever. Runs of other hosts are left alone: their process may still
    live. Returns the ids of the runs it closed.
    """
    host = socket.gethostname()
    running = retry_locked(lambda: client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`cht.host` = '{host}'",
        max_results=1000))
    closed = []
    for run in running:
        tags = run.data.tags
        if not tags.get("cht.pid", "").isdigit() or process_alive(int(tags["cht.pid"]), tags.get("cht.pid_started", "")):
            continue
        current = retry_locked(lambda: client.get_run(run.info.run_id))
        if current.info.status != "RUNNING" or current.data.tags.get("cht.pid") != tags["cht.pid"]:
            continue  # resumed by another process meanwhile
        retry_locked(lambda: client.set_tag(run.info.run_id, "cht.closed_by",
                                            "its process was gone when a later run started"))
        retry_locked(lambda: client.set_terminated(run.info.run_id, status="KILLED"))
        closed.append(run.info.run_id)
    return closed


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cht.tracking RESULTS_DIR``: point a moved embedded store at its new artifact folder.

    ``python -m cht.tracking sync RESULTS_DIR``: send what runs under the folder could not send while their
    tracking server was away (exit status 1 while some still wait).
    """
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sync"]:
        parser = argparse.ArgumentParser(prog="python -m cht.tracking sync", description=sync.__doc__)
        parser.add_argument("results_dir", type=Path, help="folder whose runs' spool files to send")
        args = parser.parse_args(argv[1:])
        if not args.results_dir.is_dir():
            parser.error(f"{args.results_dir} is not a folder; give the results folder of the runs")
        done, waiting = sync(args.results_dir)
        print(f"mlflow: {done} spool file(s) sent, {waiting} still waiting" if done or waiting
              else f"mlflow: nothing waits under {args.results_dir}")
        return 1 if waiting else 0
    parser = argparse.ArgumentParser(prog="python -m cht.tracking", description=main.__doc__)
    parser.add_argument("results_dir", type=Path, help="folder holding mlflow.db and mlartifacts/")
    args = parser.parse_args(argv)
    if not (args.results_dir / "mlflow.db").exists():
        parser.error(f"{args.results_dir / 'mlflow.db'} does not exist; give the folder that holds mlflow.db")
    print(f"moved {relocate_artifacts(args.results_dir)} experiment(s) to {args.results_dir / ARTIFACTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
