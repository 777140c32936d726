"""What a run could not send to its mlflow store, kept on disk until the store answers again.

A tracking server that goes away (restarted, overloaded, a network cut) must not end a training. While it
is away, every call a :class:`~cht.tracking.Tracker` makes becomes one JSON line of a spool file: next to
the run (``<run>/mlflow.spool.jsonl``) for training, under ``<results>/mlflow-spool/`` for other jobs. The
tracker replays the spool once the server answers; what is left when the process ends is replayed by the
next pipeline invocation or by ``python -m cht.tracking sync RESULTS``.

Every entry is idempotent, so replaying one that did reach the store before a timeout does no harm:
metrics keep their original timestamp (mlflow's SQL store keys a metric by name, timestamp, step and
value), params are re-logged with the same value, tags and artifacts overwrite, and the run is the one
created at the start, never a new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SPOOL_SUFFIX = ".spool.jsonl"
RUN_SPOOL = f"mlflow{SPOOL_SUFFIX}"
JOB_SPOOL_DIR = "mlflow-spool"


class Spool:
    """An append-only file of tracking calls, each line ``{"uri", "run_id", "op", ...}``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, entry: Mapping[str, Any]) -> None:
        """Add one call, flushed to disk before returning (a kill right after must not lose it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """The calls waiting, oldest first; a last line cut off by a kill is dropped (it was never complete)."""
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def __len__(self) -> int:
        return len(self.entries())

    def replay(self, client: Any | None = None) -> int:
        """Send every waiting call in order and remove the file; returns how many were sent.

        On the first failure the calls not yet sent are written back (atomically) and the error is
        raised, so a later replay starts where this one stopped. ``client`` defaults to one per store
        named in the entries.
        """
        entries = self.entries()
        clients: dict[str, Any] = {}
        for index, entry in enumerate(entries):
            try:
                if client is None and entry["uri"] not in clients:
                    clients[entry["uri"]] = _client(entry["uri"])
                send(client or clients[entry["uri"]], entry)
            except BaseException:
                self._rewrite(entries[index:])
                raise
        self.path.unlink(missing_ok=True)
        return len(entries)

    def _rewrite(self, entries: list[dict[str, Any]]) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text("".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries), encoding="utf-8")
        os.replace(partial, self.path)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def send(client: Any, entry: Mapping[str, Any]) -> None:
    """Make the mlflow call one spool entry stands for."""
    from mlflow.entities import Metric, Param, RunTag

    run_id, op = entry["run_id"], entry["op"]
    if op == "batch":
        client.log_batch(run_id, metrics=[Metric(*metric) for metric in entry.get("metrics", [])],
                         params=[Param(*param) for param in entry.get("params", [])],
                         tags=[RunTag(*tag) for tag in entry.get("tags", [])])
    elif op == "artifact":
        client.log_artifact(run_id, entry["path"], entry.get("artifact_path"))
    elif op == "dict":
        client.log_dict(run_id, entry["values"], entry["artifact_file"])
    elif op == "terminate":
        client.set_terminated(run_id, status=entry["status"], end_time=entry["end_time"])
    else:
        raise ValueError(f"unknown spool entry {op!r} for run {run_id}")


def find_spools(root: Path) -> list[Path]:
    """Every spool file under ``root`` (a results folder), in a stable order."""
    return sorted(Path(root).rglob(f"*{SPOOL_SUFFIX}"))


def sync(root: Path, say: Any = print) -> tuple[int, int]:
    """Replay every spool under ``root``; returns (spools emptied, spools still waiting).

    Prints one line per spool: what was sent, or why it could not be.
    """
    done = waiting = 0
    for path in find_spools(root):
        spool = Spool(path)
        try:
            count = spool.replay()
        except Exception as error:  # the store is still away, or refuses an entry: keep the file
            waiting += 1
            say(f"mlflow: {path} still waits ({len(spool)} entries): {first_line(error)}")
            continue
        done += 1
        say(f"mlflow: sent {count} waiting entries from {path}")
    return done, waiting


def first_line(error: BaseException) -> str:
    """An error as one short line: mlflow's connection errors run to hundreds of lines."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"
