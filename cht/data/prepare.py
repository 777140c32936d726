"""Make a dataset's raw files available under a data root, verified, from local sources, mirrors or official URLs.

Order of attempts for every file still missing: each of ``sources`` in turn, then the spec's default local
sources, then the official URLs (only with ``download=True``). A file is accepted when its own official
digest matches, or, where none is published, when it comes out of an official archive whose md5 matches.
Downloads land in a staging directory; every file is written beside its target under a temporary name,
flushed, and renamed into place only once verified (:func:`cht.io.write_atomic`), so an interrupted
download or unpacking never leaves a file that a later call would accept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from cht.data import fetch
from cht.data.acquire import Acquisition
from cht.data.folders import image_folder_checksum, image_folder_summary, prepare_image_folder
from cht.data.integrity import (Digest, combined_digest, copy_with_digest, file_digest, mismatch,
                                preparation_lock, read_record, write_record)
from cht.data.specs import Archive, DatasetError, DatasetSpec, RawFile, get_spec
from cht.io import make_folders, remove_empty_folders, write_atomic

PathLike = str | os.PathLike[str]


def prepare_dataset(name: str, root: PathLike, sources: Sequence[PathLike] = (), download: bool = True, *,
                    full_verify: bool = False) -> Path:
    """Make dataset ``name`` available and verified under ``root``; return the directory holding it.

    ``sources`` are local directories (holding the files unpacked, gzipped, or the official archives, either
    directly or in torchvision's layout below them) or mirror URL prefixes. Already prepared data is checked
    cheaply (sizes and modification times against the verification record); ``full_verify=True`` re-hashes
    everything. Raises :class:`DatasetError` saying what was tried and how to fix it.
    """
    spec = get_spec(name)
    root_path = Path(root).expanduser().absolute()
    user_sources = fetch.as_sources(sources, "source")
    if spec.layout == "image_folder":
        return prepare_image_folder(spec, root_path, user_sources, download, full_verify)
    return _prepare_files(spec, root_path, user_sources, download, full_verify)


def dataset_checksum(name: str, root: PathLike) -> str:
    """One sha256 identifying the verified files of ``name`` under ``root`` (for experiment tracking).

    It is the sha256 of the sorted lines ``path<TAB>size<TAB>sha256`` of every file, so it does not depend on
    where the data lives. For image-folder datasets it is computed on first request and then cached.
    """
    spec = get_spec(name)
    root_path = Path(root).expanduser().absolute()
    prepare_dataset(name, root_path, download=False)
    if spec.layout == "image_folder":
        return image_folder_checksum(spec, root_path)
    record = read_record(root_path, name)
    assert record is not None, "prepare_dataset writes the record before returning"
    return record["checksum"]


def describe(name: str, root: PathLike) -> dict[str, Any]:
    """A JSON-friendly summary of a prepared dataset: where it is, its size, checksum and how it was verified."""
    spec = get_spec(name)
    root_path = Path(root).expanduser().absolute()
    location = prepare_dataset(name, root_path, download=False)
    summary: dict[str, Any] = {
        "name": spec.name, "location": str(location), "num_classes": spec.num_classes,
        "input_shape": list(spec.input_shape), "checksum": dataset_checksum(name, root_path)}
    if spec.layout == "image_folder":
        return {**summary, **image_folder_summary(spec, root_path)}
    record = read_record(root_path, name) or {}
    files = record.get("files", {})
    return {**summary,
            "samples": dict(zip(("train", "test"), spec.split_sizes or ())),
            "files": {path: entry["size"] for path, entry in sorted(files.items())},
            "bytes": sum(entry["size"] for entry in files.values()),
            "verified_by": {path: entry["verified_by"] for path, entry in sorted(files.items())}}


# --- datasets made of a fixed set of files -------------------------------------------------------------------


def _prepare_files(spec: DatasetSpec, root: Path, sources: list[fetch.Source], download: bool,
                   full_verify: bool) -> Path:
    target = root / spec.directory
    _refuse_legacy_cache(spec, root)
    if not full_verify and _record_still_valid(spec, root, target):
        return target
    with preparation_lock(root, spec.name):
        recorded = (read_record(root, spec.name) or {}).get("files", {})
        run = _Acquisition(spec, target)
        for raw in spec.files:
            entry = run.check_existing(raw, recorded.get(raw.path), full_verify)
            if entry is None:
                run.wanted[raw.path] = raw
            else:
                run.verified[raw.path] = entry
        if run.wanted:
            with fetch.staging_area(root, spec.name) as staging:
                run.acquire(sources, download, staging)
        if run.wanted:
            raise DatasetError(run.failure_message(download))
        write_record(root, spec.name, {
            "directory": spec.directory, "files": run.verified,
            "checksum": combined_digest((path, e["size"], e["sha256"]) for path, e in run.verified.items())})
    return target


def _refuse_legacy_cache(spec: DatasetSpec, root: Path) -> None:
    """Old torchvision caches (``<Class>/processed/*.pt``) would be read instead of the verified raw files."""
    processed = (root / spec.directory).parent / "processed"
    if spec.directory.endswith("/raw") and processed.is_dir() and any(processed.glob("*.pt")):
        raise DatasetError(f"{spec.name}: {processed} holds an old torchvision cache that torchvision would load "
                           f"instead of the verified raw files; delete {processed}")


def _entry_matches(raw: RawFile, entry: dict[str, Any], stat: os.stat_result) -> bool:
    """The record still describes the file on disk, and agrees with every official digest of the spec."""
    return (stat.st_size == entry["size"] and stat.st_mtime_ns == entry["mtime_ns"]
            and raw.size in (None, entry["size"]) and raw.sha256 in (None, entry["sha256"])
            and raw.md5 in (None, entry["md5"]))


def _record_still_valid(spec: DatasetSpec, root: Path, target: Path) -> bool:
    files = (read_record(root, spec.name) or {}).get("files", {})
    try:
        return all(raw.path in files and _entry_matches(raw, files[raw.path], (target / raw.path).stat())
                   for raw in spec.files)
    except OSError:
        return False


def _entry(digest: Digest, path: Path, verified_by: str) -> dict[str, Any]:
    return {"size": digest.size, "sha256": digest.sha256, "md5": digest.md5,
            "mtime_ns": path.stat().st_mtime_ns, "verified_by": verified_by}


class _Acquisition(Acquisition):
    """One preparation of a set of files: those still wanted, those verified so far."""

    def __init__(self, spec: DatasetSpec, target: Path) -> None:
        super().__init__(spec)
        self.target = target
        self.wanted: dict[str, RawFile] = {}
        self.verified: dict[str, dict[str, Any]] = {}

    def check_existing(self, raw: RawFile, entry: dict[str, Any] | None,
                       full_verify: bool) -> dict[str, Any] | None:
        """The record entry of an already present, verified file; None when it must be fetched."""
        path = self.target / raw.path
        if not path.is_file():
            return None
        if raw.has_official_digest:
            expected = raw
        elif entry is not None:
            expected = RawFile(raw.path, entry["size"], entry["sha256"])
        else:
            self.attempts.append(f"existing {path}: has no official checksum and no verification record, so "
                                 f"only a copy from the official archive can replace it")
            return None
        if not full_verify and entry is not None and _entry_matches(raw, entry, path.stat()):
            return entry
        digest = file_digest(path)
        reason = mismatch(expected, digest)
        if reason is not None:
            raise DatasetError(f"{self.spec.name}: {path} is corrupt ({reason}). Delete it and call "
                               f"prepare_dataset again to fetch a verified copy.")
        return _entry(digest, path, entry["verified_by"] if entry else "official checksum")

    def failure_message(self, download: bool) -> str:
        spec = self.spec
        loose = [raw.path for raw in spec.files if raw.has_official_digest]
        forms = []
        if loose:
            forms.append(f"the files {', '.join(loose)} (plain or gzipped as .gz)")
        forms.append(f"the official archive(s) {', '.join(a.filename for a in spec.archives)}")
        fixes = [spec.install_hint] if spec.install_hint else []
        placement = f"put {' or '.join(forms)} in a directory and {fetch.SOURCE_HINT}"
        if len(loose) == len(spec.files):
            placement += f" (or place the unpacked files in {self.target})"
        fixes.append(placement)
        if not download:
            fixes.append(f"allow download=True to fetch them from {', '.join(spec.urls)}")
        return (f"{spec.name}: could not make {', '.join(sorted(self.wanted))} available under {self.target}.\n"
                f"Tried:\n{self.tried()}\nTo fix: " + "; or ".join(fixes))

    # -- where files come from

    def done(self) -> bool:
        return not self.wanted

    def _needs(self, archive: Archive) -> bool:
        return any(path in self.wanted for path in archive.members)

    def archives_needed(self) -> list[Archive]:
        return [archive for archive in self.spec.archives if self._needs(archive)]

    def from_directory(self, source: fetch.Source) -> None:
        directory = source.directory
        if not directory.is_dir():
            self.attempts.append(f"{source.label} {directory}: not a directory")
            return
        attempts_before = len(self.attempts)
        nested = directory / self.spec.directory
        for place in [directory, *([nested] if nested.is_dir() else [])]:
            for raw in list(self.wanted.values()):
                if (place / raw.path).is_file():
                    self._from_plain_file(raw, place / raw.path, source.label)
            for archive in self._local_archive_forms():
                if (place / archive.filename).is_file() and self._needs(archive):
                    self.from_archive(archive, place / archive.filename, f"{source.label} {place / archive.filename}")
        if len(self.attempts) == attempts_before and self.wanted:
            self.attempts.append(f"{source.label} {directory}: found none of {', '.join(sorted(self.wanted))}, "
                                 f"their .gz, or {', '.join(a.filename for a in self.archives_needed())}")

    def _local_archive_forms(self) -> list[Archive]:
        """Official archives, plus a bare ``<file>.gz`` for every wanted file that has no official .gz."""
        official = {archive.filename for archive in self.spec.archives}
        adhoc = [Archive(f"{path}.gz", None, (), {path: ""}) for path in self.wanted if f"{path}.gz" not in official]
        return [*self.archives_needed(), *adhoc]

    def _from_plain_file(self, raw: RawFile, path: Path, label: str) -> None:
        if not raw.has_official_digest:
            archives = ", ".join(a.filename for a in self.spec.archives_providing(raw.path))
            self.attempts.append(f"{label} {path}: no official checksum exists for this unpacked file; "
                                 f"supply the official archive ({archives}) instead")
            return
        with open(path, "rb") as stream:
            self._install(raw, stream, f"{label} {path}", "official checksum")

    def from_archive(self, archive: Archive, path: Path, origin: str) -> None:
        provided = [self.wanted[member] for member in archive.members if member in self.wanted]
        verified_by = "official checksum"
        if not all(raw.has_official_digest for raw in provided):
            if archive.md5 is None:
                official = ", ".join(a.filename for a in self.spec.archives_providing(provided[0].path))
                self.attempts.append(f"{origin}: no official checksum exists for "
                                     f"{', '.join(raw.path for raw in provided)} outside the official archive "
                                     f"({official}); supply that instead")
                return
            actual = file_digest(path).md5
            if actual != archive.md5:
                self.attempts.append(f"{origin}: archive md5 {actual}, expected {archive.md5}")
                return
            verified_by = f"official md5 of {archive.filename}"
        try:
            with fetch.open_archive(path, archive) as open_member:
                for raw in provided:
                    with open_member(archive.members[raw.path]) as stream:
                        self._install(raw, stream, origin,
                                      "official checksum" if raw.has_official_digest else verified_by)
        except fetch.ARCHIVE_ERRORS as error:
            self.attempts.append(f"{origin}: unreadable ({error!r})")

    def _install(self, raw: RawFile, stream: BinaryIO, origin: str, verified_by: str) -> None:
        """Copy ``stream`` into place while hashing; it replaces the target only if it verifies."""
        destination = self.target / raw.path
        created = make_folders(destination.parent)
        digests = []

        def copy_verified(out: BinaryIO) -> None:
            digest = copy_with_digest(stream, out)
            reason = mismatch(raw, digest)
            if reason is not None:
                raise _Rejected(reason)
            digests.append(digest)

        try:
            write_atomic(destination, copy_verified)
        except _Rejected as rejection:
            remove_empty_folders(created)
            self.attempts.append(f"{origin}: {raw.path} rejected ({rejection})")
            return
        self.verified[raw.path] = _entry(digests[0], destination, verified_by)
        del self.wanted[raw.path]


class _Rejected(Exception):
    """A copied file did not match its official checksum (the message says how)."""
