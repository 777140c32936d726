"""The one order in which every dataset's files are looked for, whatever form the dataset takes.

Each of the user's sources in turn (local folders, or mirror URL prefixes that archive names are appended
to), then the dataset's default local folders, then its official URLs (only when downloading is allowed).
A dataset kind (a fixed set of files, :mod:`cht.data.prepare`; an image-folder tree, :mod:`cht.data.folders`)
only says what it still needs and how a local folder or a downloaded archive is used; every attempt is
logged, so a failure can say exactly what was tried.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from cht.data import fetch
from cht.data.integrity import unique_path
from cht.data.specs import Archive, DatasetSpec


class Acquisition(ABC):
    """One preparation of ``spec``: what is still missing, and a log of every attempt to find it."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.attempts: list[str] = []

    @abstractmethod
    def done(self) -> bool:
        """Whether nothing is missing any more."""

    @abstractmethod
    def archives_needed(self) -> list[Archive]:
        """Official archives that would provide something still missing."""

    @abstractmethod
    def from_directory(self, source: fetch.Source) -> None:
        """Take what is missing from a local folder, logging what was found or not."""

    @abstractmethod
    def from_archive(self, archive: Archive, path: Path, origin: str) -> None:
        """Take what is missing from the archive at ``path`` (``origin`` says where it came from)."""

    def acquire(self, sources: list[fetch.Source], download: bool, staging: Path) -> None:
        """Try every source in order until nothing is missing; downloads go to ``staging``."""
        for source in [*sources, *fetch.as_sources(self.spec.default_sources, "default source")]:
            if self.done():
                return
            if not source.is_remote:
                self.from_directory(source)
                continue
            if not self.archives_needed():
                self.attempts.append(f"{source.label} {source.location}: {self.spec.name} has no downloadable "
                                     f"archive")
            for archive in self.archives_needed():
                self._from_url(archive, source.url_for(archive.filename), f"{source.label} (mirror)", staging)
        if self.done() or not self.archives_needed():
            return
        if not download:
            self.attempts.append("official URLs not tried (download=False)")
            return
        for archive in self.archives_needed():
            for url in archive.urls:
                if archive not in self.archives_needed():
                    break
                self._from_url(archive, url, "official URL", staging)

    def tried(self) -> str:
        """The attempts, one indented line each, for an error message."""
        return "\n".join(f"  - {attempt}" for attempt in self.attempts) or "  - nothing (no sources)"

    def _from_url(self, archive: Archive, url: str, label: str, staging: Path) -> None:
        download_dir = unique_path(staging)
        download_dir.mkdir()
        path = download_dir / archive.filename
        try:
            try:
                fetch.fetch_url(url, path)
            except fetch.FETCH_ERRORS as error:
                self.attempts.append(f"{label} {url}: download failed ({error})")
                return
            self.from_archive(archive, path, f"{label} {url}")
        finally:
            shutil.rmtree(download_dir, ignore_errors=True)
