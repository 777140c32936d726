"""Where dataset files come from: local directories, mirror URL prefixes and official URLs, and reading archives.

Downloads use torchvision's own downloader; they always land in a temporary directory and are only moved
into place by the caller after their checksums verify.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from torchvision.datasets.utils import download_url

from cht.data.specs import Archive

#: What a failed fetch may raise: network errors, HTTP protocol errors, bad URLs, torchvision's own errors.
FETCH_ERRORS = (OSError, http.client.HTTPException, ValueError, RuntimeError)
#: What a damaged or foreign archive may raise while being read.
ARCHIVE_ERRORS = (OSError, EOFError, KeyError, zlib.error, tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile)

REMOTE_SCHEMES = ("http://", "https://", "ftp://")
#: How a user passes a folder of dataset files, whichever way they run cht.
SOURCE_HINT = ("pass that directory with --data-source DIR (python -m cht), data_sources: [DIR] (config files) "
               "or sources=[DIR] (prepare_dataset)")
STAGING_PREFIX = ".cht-tmp-"


@dataclass(frozen=True)
class Source:
    """A place to look for files: a local directory, or a URL prefix that archive filenames are appended to."""

    location: str
    label: str

    @property
    def is_remote(self) -> bool:
        return self.location.startswith(REMOTE_SCHEMES)

    @property
    def directory(self) -> Path:
        return Path(self.location)

    def url_for(self, filename: str) -> str:
        return self.location.rstrip("/") + "/" + filename


def as_sources(sources: Sequence[str | os.PathLike[str]], label: str) -> list[Source]:
    """Normalise user-given sources; ``file://`` URLs become plain paths (torchvision cannot fetch them)."""
    if isinstance(sources, (str, bytes, os.PathLike)):
        raise TypeError(f"sources: expected a list of directories or URL prefixes, got the single value {sources!r}; "
                        f"wrap it in a list: sources=[{str(sources)!r}]")
    normalised = []
    for source in sources:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"sources: {source!r} is neither a path nor a URL string")
        location = os.fspath(source)
        if location.startswith("file://"):
            location = urllib.request.url2pathname(urllib.parse.urlparse(location).path)
        elif not location.startswith(REMOTE_SCHEMES):
            location = str(Path(location).expanduser().absolute())
        normalised.append(Source(location, label))
    return normalised


@contextmanager
def staging_area(root: Path, name: str) -> Iterator[Path]:
    """A private temporary directory under ``root`` where downloads and unpacking happen.

    It sits on the same filesystem as the prepared data, so moving a verified file into place is an atomic
    rename. Leftovers of interrupted runs are removed first (callers hold the preparation lock, so none of
    them is in use).
    """
    for stale in root.glob(f"{STAGING_PREFIX}{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{STAGING_PREFIX}{name}-") as staging:
        yield Path(staging)


def fetch_url(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (a path that does not exist yet) with torchvision's downloader."""
    download_url(url, root=str(destination.parent), filename=destination.name)


def archive_format(filename: str) -> str:
    if filename.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    if filename.endswith(".zip"):
        return "zip"
    if filename.endswith(".gz"):
        return "gzip"
    raise ValueError(f"archive {filename}: unknown format (expected .gz, .tar.gz, .tgz, .tar or .zip)")


@contextmanager
def open_archive(path: Path, archive: Archive) -> Iterator[Callable[[str], BinaryIO]]:
    """Yield a function that opens one member of the archive at ``path`` as a stream of its unpacked bytes."""
    kind = archive_format(archive.filename)
    with ExitStack() as stack:
        if kind == "gzip":
            def open_member(member: str) -> BinaryIO:
                return stack.enter_context(gzip.open(path, "rb"))
        elif kind == "tar":
            bundle = stack.enter_context(tarfile.open(path, "r:*"))

            def open_member(member: str) -> BinaryIO:
                stream = bundle.extractfile(member)
                if stream is None:
                    raise KeyError(f"{member} is not a regular file in {path.name}")
                return _gunzip_if_needed(stack.enter_context(stream), member)
        else:
            bundle = stack.enter_context(zipfile.ZipFile(path))

            def open_member(member: str) -> BinaryIO:
                return _gunzip_if_needed(stack.enter_context(bundle.open(member)), member)
        yield open_member


def _gunzip_if_needed(stream: BinaryIO, member: str) -> BinaryIO:
    return gzip.GzipFile(fileobj=stream, mode="rb") if member.endswith(".gz") else stream  # type: ignore[return-value]
