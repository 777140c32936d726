"""Checksums, the verification record kept beside prepared data, and the lock that serialises preparation.

The record (``<root>/.cht/<name>.json``) lets a later call trust files cheaply: a file whose size and
modification time match what was recorded right after it verified is not hashed again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from cht.data.specs import DatasetError, RawFile
from cht.io import write_text_atomic

CHUNK_BYTES = 1 << 20
RECORD_FORMAT = 1


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str
    md5: str


def copy_with_digest(source: BinaryIO, destination: BinaryIO | None = None) -> Digest:
    """Hash ``source`` in one pass (sha256 and md5), copying it to ``destination`` when one is given."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    while chunk := source.read(CHUNK_BYTES):
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
        if destination is not None:
            destination.write(chunk)
    return Digest(size, sha256.hexdigest(), md5.hexdigest())


def file_digest(path: Path) -> Digest:
    with open(path, "rb") as handle:
        return copy_with_digest(handle)


def mismatch(expected: RawFile, actual: Digest) -> str | None:
    """Why ``actual`` is not ``expected`` (None when every known property matches)."""
    if expected.size is not None and actual.size != expected.size:
        return f"size {actual.size} bytes, expected {expected.size}"
    if expected.sha256 is not None and actual.sha256 != expected.sha256:
        return f"sha256 {actual.sha256}, expected {expected.sha256}"
    if expected.md5 is not None and actual.md5 != expected.md5:
        return f"md5 {actual.md5}, expected {expected.md5}"
    return None


def combined_digest(entries: Iterable[tuple[str, int, str]]) -> str:
    """One sha256 over (relative path, size, sha256) of every file, in path order: the dataset's identity."""
    digest = hashlib.sha256()
    for path, size, sha256 in sorted(entries):
        digest.update(f"{path}\t{size}\t{sha256}\n".encode())
    return digest.hexdigest()


def unique_path(directory: Path, suffix: str = "") -> Path:
    """A fresh name in ``directory``; files and folders created there get the usual umask permissions."""
    return directory / f"{uuid.uuid4().hex}{suffix}"


def record_path(root: Path, name: str) -> Path:
    return root / ".cht" / f"{name}.json"


def read_record(root: Path, name: str) -> dict[str, Any] | None:
    """The verification record of ``name`` under ``root``; None when absent, unreadable or of another format."""
    try:
        record = json.loads(record_path(root, name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or record.get("dataset") != name:
        return None
    return record


def write_record(root: Path, name: str, record: dict[str, Any]) -> None:
    """Atomically replace the record, so a reader never sees half of one."""
    path = record_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"format": RECORD_FORMAT, "dataset": name, **record}, indent=1,
                                       sort_keys=True))


@contextmanager
def preparation_lock(root: Path, name: str) -> Iterator[None]:
    """Exclusive lock per (root, dataset), so parallel jobs never fetch or unpack the same files twice."""
    lock_dir = root / ".cht"
    lock = FileLock(lock_dir / f"{name}.lock")
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as error:
        raise DatasetError(f"{name}: cannot write under the data root {root} ({error}); choose a writable root "
                           f"or prepare the dataset there once with write access") from error
    try:
        yield
    finally:
        lock.release()
