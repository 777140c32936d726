"""Image-folder datasets (Tiny-ImageNet, ImageNet): a ``train/`` and a ``val/`` folder with one sub-folder per class.

Tiny-ImageNet comes as an official zip (md5-checked) whose ``val/`` holds all images in one folder plus
``val_annotations.txt``; it is unpacked in a staging directory, its ``val/`` re-arranged into class folders,
and only then moved into place. ImageNet cannot be downloaded: a user's tree is validated and linked.

No per-file checksums are published for these trees. Preparation records a cheap listing digest (every
file's path and size) that later calls compare against; the content checksum (sha256 of every file) is
computed when the archive is unpacked, or on the first :func:`cht.data.dataset_checksum` call, and cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.datasets.utils import extract_archive

from cht.data import fetch
from cht.data.acquire import Acquisition
from cht.data.integrity import (CHUNK_BYTES, combined_digest, file_digest, preparation_lock, read_record,
                                record_path, unique_path, write_record)
from cht.data.specs import Archive, DatasetError, DatasetSpec
from cht.io import sync_folder

SPLITS = ("train", "val")


def prepare_image_folder(spec: DatasetSpec, root: Path, sources: list[fetch.Source], download: bool,
                         full_verify: bool) -> Path:
    """Make ``<root>/<spec.directory>`` a valid train/val image tree (see :func:`cht.data.prepare_dataset`)."""
    target = root / spec.directory
    record = read_record(root, spec.name)
    if not full_verify and record is not None and target.is_dir() and record.get("listing") == listing_digest(target):
        return target
    with preparation_lock(root, spec.name):
        if target.exists() or target.is_symlink():
            _verify_existing(spec, root, target, full_verify)
            return target
        with fetch.staging_area(root, spec.name) as staging:
            run = _TreeAcquisition(spec, root, target, staging)
            run.acquire(sources, download, staging)
        if not target.exists():
            fixes = [spec.install_hint] if spec.install_hint else []
            if spec.archives:
                fixes.append(f"put {', '.join(a.filename for a in spec.archives)} in a directory and "
                             f"{fetch.SOURCE_HINT}")
                if not download:
                    fixes.append(f"allow download=True to fetch it from {', '.join(spec.urls)}")
            fixes.append(f"or place the arranged tree (train/<class>/..., val/<class>/...) at {target}")
            raise DatasetError(f"{spec.name}: no dataset at {target}.\nTried:\n{run.tried()}\nTo fix: " + "; ".join(fixes))
    return target


def arrange_val_folder(val_dir: Path) -> None:
    """Move Tiny-ImageNet's ``val/images/<file>`` into ``val/<wnid>/<file>`` as ``val_annotations.txt`` says.

    Safe to repeat and to resume after an interruption: files already moved are left alone.
    """
    annotations = val_dir / "val_annotations.txt"
    images = val_dir / "images"
    if not annotations.is_file():
        return
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or any(Path(name).name != name or name in ("", ".", "..") for name in fields[:2]):
            raise DatasetError(f"{annotations}, line {number}: expected '<file name>\\t<class id>\\t...', "
                               f"got {line!r}")
        filename, wnid = fields[0], fields[1]
        source, destination = images / filename, val_dir / wnid / filename
        if source.is_file():
            destination.parent.mkdir(exist_ok=True)
            os.replace(source, destination)
        elif not destination.is_file():
            raise DatasetError(f"{annotations}, line {number} lists {filename} (class {wnid}), but neither "
                               f"{source} nor {destination} exists")
    if images.is_dir():
        leftover = sorted(images.iterdir())
        if leftover:
            raise DatasetError(f"{images} still holds {len(leftover)} file(s) that {annotations.name} does not "
                               f"list, e.g. {leftover[0].name}")
        images.rmdir()


def listing_digest(tree: Path) -> str:
    """sha256 of the sorted ``relative path<TAB>size`` of every file: cheap, catches added/removed/resized files."""
    digest = hashlib.sha256()
    for relative, path in _files(tree):
        digest.update(f"{relative}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def content_checksum(tree: Path) -> str:
    """The dataset checksum of a tree: same formula as for file sets, over every file's sha256."""
    return combined_digest((relative, path.stat().st_size, _sha256(path)) for relative, path in _files(tree))


def image_folder_checksum(spec: DatasetSpec, root: Path) -> str:
    """The cached content checksum of a prepared tree, computed (and cached) on first request."""
    record = read_record(root, spec.name)
    assert record is not None, "call prepare_image_folder first"
    if record["checksum"] is not None and record["checksum_listing"] == record["listing"]:
        return record["checksum"]
    with preparation_lock(root, spec.name):
        target = root / spec.directory
        checksum = content_checksum(target)
        write_record(root, spec.name, {**record, "checksum": checksum, "checksum_listing": listing_digest(target)})
    return checksum


def image_folder_summary(spec: DatasetSpec, root: Path) -> dict[str, Any]:
    record = read_record(root, spec.name) or {}
    target = root / spec.directory
    sizes = [path.stat().st_size for _, path in _files(target)]
    return {"samples": record.get("images", {}), "linked_to": str(target.resolve()) if target.is_symlink() else None,
            "files": len(sizes), "bytes": sum(sizes), "verified_by": record.get("verified_by")}


def survey(spec: DatasetSpec, tree: Path) -> dict[str, int]:
    """Check that ``tree`` has train/ and val/ with the same ``spec.num_classes`` non-empty class folders.

    Returns the number of images per split.
    """
    classes_by_split: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for split in SPLITS:
        folder = tree / split
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing (expected one sub-folder per class)")
        try:
            classes, class_to_idx = find_classes(folder)
            counts[split] = len(make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS))
        except FileNotFoundError as error:
            raise DatasetError(f"{folder}: {error}") from error
        if len(classes) != spec.num_classes:
            raise DatasetError(f"{folder} has {len(classes)} class folder(s) ({', '.join(classes[:3])}"
                               f"{', ...' if len(classes) > 3 else ''}), expected {spec.num_classes}")
        classes_by_split[split] = classes
    only_train = sorted(set(classes_by_split["train"]) - set(classes_by_split["val"]))
    only_val = sorted(set(classes_by_split["val"]) - set(classes_by_split["train"]))
    if only_train or only_val:
        raise DatasetError(f"{tree}: train/ and val/ have different classes (only in train: {only_train[:5]}, "
                           f"only in val: {only_val[:5]})")
    return counts


# --- internals -----------------------------------------------------------------------------------------------


def _files(tree: Path) -> list[tuple[str, Path]]:
    """(relative path, path) of every file under ``tree``, sorted; linked folders are followed, as ImageFolder does."""
    found = []
    for directory, _, filenames in os.walk(tree, followlinks=True):
        for filename in filenames:
            path = Path(directory, filename)
            found.append((path.relative_to(tree).as_posix(), path))
    return sorted(found)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_existing(spec: DatasetSpec, root: Path, target: Path, full_verify: bool) -> None:
    if not target.is_dir():
        raise DatasetError(f"{spec.name}: {target} is not a directory (or a link to a missing one); remove it "
                           f"and prepare the dataset again")
    record = read_record(root, spec.name)
    if record is None:
        try:
            if not target.is_symlink():
                arrange_val_folder(target / "val")
            images = survey(spec, target)
        except DatasetError as error:
            raise DatasetError(f"{spec.name}: the existing {target} is not a usable dataset tree: {error}. "
                               f"Fix it, or remove it and prepare the dataset again.") from error
        write_record(root, spec.name, {
            "directory": spec.directory, "listing": listing_digest(target), "images": images,
            "checksum": None, "checksum_listing": None,
            "verified_by": "folder structure (no official per-file checksums exist)"})
        return
    listing = listing_digest(target)
    if record.get("listing") != listing:
        raise DatasetError(f"{spec.name}: files under {target} were added, removed or resized since they were "
                           f"verified. Restore them, or delete {record_path(root, spec.name)} to accept "
                           f"the tree as it is now.")
    if full_verify:
        checksum = content_checksum(target)
        if record["checksum"] is not None and checksum != record["checksum"]:
            raise DatasetError(f"{spec.name}: the contents of {target} changed since they were verified "
                               f"(checksum {checksum}, expected {record['checksum']}); restore the original files "
                               f"or delete {target} and prepare the dataset again")
        write_record(root, spec.name, {**record, "checksum": checksum, "checksum_listing": listing})


class _TreeAcquisition(Acquisition):
    """One preparation of an image-folder tree: done once ``target`` exists (unpacked, or linked to a user's tree)."""

    def __init__(self, spec: DatasetSpec, root: Path, target: Path, staging: Path) -> None:
        super().__init__(spec)
        self.root, self.target, self.staging = root, target, staging

    def done(self) -> bool:
        return self.target.exists() or self.target.is_symlink()

    def archives_needed(self) -> list[Archive]:
        return [] if self.done() else list(self.spec.archives)

    def from_directory(self, source: fetch.Source) -> None:
        spec, directory = self.spec, source.directory
        if not directory.is_dir():
            self.attempts.append(f"{source.label} {directory}: not a directory")
            return
        for archive in spec.archives:
            if (directory / archive.filename).is_file():
                self.from_archive(archive, directory / archive.filename,
                                  f"{source.label} {directory / archive.filename}")
                if self.done():
                    return
        for tree in (directory, directory / spec.directory):
            if (tree / "train").is_dir() and (tree / "val").is_dir():
                try:
                    images = survey(spec, tree)
                except DatasetError as error:
                    self.attempts.append(f"{source.label} {tree}: {error}")
                    continue
                self.target.symlink_to(tree, target_is_directory=True)
                sync_folder(self.target.parent)
                write_record(self.root, spec.name, {
                    "directory": spec.directory, "listing": listing_digest(self.target), "images": images,
                    "checksum": None, "checksum_listing": None,
                    "verified_by": f"folder structure of {tree}, linked (no official per-file checksums exist)"})
                return
        wanted = [archive.filename for archive in spec.archives] + ["train/ and val/ class folders"]
        self.attempts.append(f"{source.label} {directory}: found none of {', '.join(wanted)}")

    def from_archive(self, archive: Archive, path: Path, origin: str) -> None:
        """Unpack a verified archive in the staging area, arrange and check it, then move it into place."""
        spec = self.spec
        actual = file_digest(path).md5
        if archive.md5 is None or actual != archive.md5:
            self.attempts.append(f"{origin}: archive md5 {actual}, expected {archive.md5}")
            return
        unpacked = unique_path(self.staging)
        unpacked.mkdir()
        try:
            extract_archive(str(path), str(unpacked))
        except fetch.ARCHIVE_ERRORS as error:
            self.attempts.append(f"{origin}: unreadable ({error!r})")
            return
        tree = unpacked / spec.directory if (unpacked / spec.directory).is_dir() else unpacked
        try:
            arrange_val_folder(tree / "val")
            images = survey(spec, tree)
        except DatasetError as error:
            self.attempts.append(f"{origin}: {error}")
            return
        checksum, listing = content_checksum(tree), listing_digest(tree)
        os.replace(tree, self.target)
        sync_folder(self.target.parent)
        write_record(self.root, spec.name, {
            "directory": spec.directory, "listing": listing, "images": images,
            "checksum": checksum, "checksum_listing": listing, "verified_by": f"official md5 of {archive.filename}"})
