"""Experiment tracking with mlflow.

Every training run is an mlflow run holding its resolved config (params), per-epoch metrics, final
masks and metrics JSON (artifacts), and what is needed to reproduce it (tags: git commit, dataset
checksum, package versions, device). The default store is an embedded sqlite file under the results
folder; ``MLFLOW_TRACKING_URI`` switches to a server, which must answer or the run stops at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_RESULTS_DIR = Path("results")
PARENT_RUN_ENV = "CHT_MLFLOW_PARENT_RUN_ID"
PACKAGES = ("torch", "torchvision", "numpy", "mlflow", "scipy", "networkx", "snakemake")
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

    Set ``resume_run_id`` before :meth:`run` to continue a run (training resumed from a checkpoint).
    A run becomes the child of ``parent_run_id``, or of the run named by ``CHT_MLFLOW_PARENT_RUN_ID``.
    :meth:`start` and :meth:`end` open and close the run where a ``with`` block does not fit (a
    pipeline's run spans its start and end hooks).
    """

    def __init__(self, experiment: str, run_name: str | None = None, enabled: bool = True,
                 results_dir: Path = DEFAULT_RESULTS_DIR, parent_run_id: str | None = None,
                 tags: Mapping[str, str] | None = None) -> None:
        self.enabled = enabled
        self.experiment = experiment
        self.run_name = run_name
        self.results_dir = Path(results_dir)
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_RUN_ENV)
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self.resume_run_id: str | None = None
        self._client: Any = None

    @contextmanager
    def run(self) -> Iterator[Tracker]:
        """Open the run for the duration of the block; a failure marks it FAILED."""
        self.start()
        try:
            yield self
        except BaseException:
            self.end("FAILED")
            raise
        self.end("FINISHED")

    def start(self) -> None:
        """Create (or resume) the run."""
        if not self.enabled:
            return
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(self.results_dir)
        check_reachable(uri)
        if uri.startswith("sqlite:"):
            self.results_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # A client of its own, not mlflow.set_tracking_uri: that would also export MLFLOW_TRACKING_URI to
        # every subprocess started later (e.g. the jobs of a pipeline run with another results folder).
        with store_lock(uri):
            self._client = client = MlflowClient(uri)
            experiment_id = retry_locked(lambda: self._experiment_id(client, uri))
        if self.resume_run_id:
            retry_locked(lambda: client.update_run(self.resume_run_id, status="RUNNING"))
            self.run_id = self.resume_run_id
            return
        tags = {"cht.git_commit": git_commit(), **self.tags}
        tags.update({f"cht.version.{k}": v for k, v in package_versions().items()})
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = retry_locked(lambda: client.create_run(experiment_id, run_name=self.run_name, tags=tags))
        self.run_id = run.info.run_id

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if not self.enabled or self.run_id is None:
            return
        retry_locked(lambda: self._client.set_terminated(self.run_id, status=status))

    def _experiment_id(self, client: Any, uri: str) -> str:
        existing = client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        location = None
        if uri.startswith("sqlite:"):
            location = (self.results_dir / "mlartifacts").resolve().as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:
            # A parallel job created it between our lookup and our create.
            existing = client.get_experiment_by_name(self.experiment)
            if existing is None:
                raise
            return existing.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        retry_locked(lambda: self._client.log_batch(self.run_id, params=batch))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        retry_locked(lambda: self._client.log_batch(self.run_id, tags=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        retry_locked(lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_dict(self, values: Mapping[str, Any], artifact_file: str) -> None:
        """Store ``values`` as a JSON or YAML artifact (format from the file name)."""
        if not self.enabled:
            return
        retry_locked(lambda: self._client.log_dict(self.run_id, dict(values), artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        retry_locked(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))
