"""Image-folder datasets on tiny test-made trees: Tiny-ImageNet's zip and val re-arrangement, ImageNet at a path."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cht.data import (DATASETS, DatasetError, arrange_val_folder, dataset_checksum, describe, load_dataset,
                      prepare_dataset)
from cht.data import fetch

WNIDS = ("n01443537", "n01629819", "n01641577")


def jpeg(seed: int, side: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def tiny_imagenet_tree(base: Path) -> dict[str, str]:
    """The layout of the official zip, 3 classes; returns val file name -> class as val_annotations.txt says."""
    tree = base / "tiny-imagenet-200"
    (tree / "val" / "images").mkdir(parents=True)
    (tree / "test" / "images").mkdir(parents=True)
    (tree / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    val_classes, lines = {}, []
    for index, wnid in enumerate(WNIDS):
        images = tree / "train" / wnid / "images"
        images.mkdir(parents=True)
        for k in range(2):
            (images / f"{wnid}_{k}.JPEG").write_bytes(jpeg(10 * index + k))
        (tree / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for k in range(2):
            filename = f"val_{2 * index + k}.JPEG"
            (tree / "val" / "images" / filename).write_bytes(jpeg(100 + 2 * index + k))
            val_classes[filename] = wnid
            lines.append(f"{filename}\t{wnid}\t0\t0\t63\t63")
    (tree / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (tree / "test" / "images" / "test_0.JPEG").write_bytes(jpeg(999))
    return val_classes


def zip_tree(base: Path, destination: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(base.rglob("*")):
            bundle.write(path, path.relative_to(base).as_posix())
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.fixture
def fake_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    val_classes = tiny_imagenet_tree(tmp_path / "unzipped")
    data = zip_tree(tmp_path / "unzipped", tmp_path / "source" / "tiny-imagenet-200.zip")
    real = DATASETS["tiny_imagenet"]
    spec = dataclasses.replace(real, num_classes=len(WNIDS), archives=(dataclasses.replace(
        real.archives[0], md5=hashlib.md5(data).hexdigest(), urls=("http://tiny.invalid/tiny-imagenet-200.zip",)),))
    monkeypatch.setitem(DATASETS, "tiny_imagenet", spec)
    return {"val_classes": val_classes, "source": tmp_path / "source", "root": tmp_path / "root",
            "unzipped": tmp_path / "unzipped"}


def test_tiny_imagenet_val_is_arranged_into_class_folders(fake_tiny):
    target = prepare_dataset("tiny_imagenet", fake_tiny["root"], sources=[fake_tiny["source"]], download=False)
    assert target == fake_tiny["root"] / "tiny-imagenet-200"
    assert not (target / "val" / "images").exists()
    for filename, wnid in fake_tiny["val_classes"].items():
        assert (target / "val" / wnid / filename).is_file()
    val = load_dataset("tiny_imagenet", fake_tiny["root"], train=False)
    assert val.classes == sorted(WNIDS)
    assert sorted((Path(path).name, val.classes[label]) for path, label in val.samples) == \
        sorted(fake_tiny["val_classes"].items())
    image, _ = val[0]
    assert tuple(image.shape) == (3, 64, 64)
    train = load_dataset("tiny_imagenet", fake_tiny["root"], train=True)
    assert len(train) == 2 * len(WNIDS) and train.classes == val.classes
    assert describe("tiny_imagenet", fake_tiny["root"])["samples"] == {"train": 6, "val": 6}


def reference_tree_checksum(tree: Path) -> str:
    lines = sorted(f"{path.relative_to(tree).as_posix()}\t{path.stat().st_size}\t"
                   f"{hashlib.sha256(path.read_bytes()).hexdigest()}\n" for path in tree.rglob("*") if path.is_file())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def test_tiny_imagenet_checksum_and_changes_after_preparation(fake_tiny):
    root = fake_tiny["root"]
    target = prepare_dataset("tiny_imagenet", root, sources=[fake_tiny["source"]], download=False)
    shutil.rmtree(fake_tiny["source"])
    assert prepare_dataset("tiny_imagenet", root, download=False) == target
    assert dataset_checksum("tiny_imagenet", root) == reference_tree_checksum(target)
    (target / "train" / WNIDS[0] / "images" / "extra.JPEG").write_bytes(jpeg(7))
    with pytest.raises(DatasetError, match="added, removed or resized"):
        load_dataset("tiny_imagenet", root, train=True)


def test_full_verification_of_a_tree_finds_changed_content(fake_tiny):
    root = fake_tiny["root"]
    target = prepare_dataset("tiny_imagenet", root, sources=[fake_tiny["source"]], download=False)
    victim = target / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    prepare_dataset("tiny_imagenet", root)
    with pytest.raises(DatasetError, match="contents of .* changed"):
        prepare_dataset("tiny_imagenet", root, full_verify=True)


def test_tiny_imagenet_zip_with_a_wrong_md5_is_refused(fake_tiny, monkeypatch):
    spec = DATASETS["tiny_imagenet"]
    monkeypatch.setitem(DATASETS, "tiny_imagenet", dataclasses.replace(
        spec, archives=(dataclasses.replace(spec.archives[0], md5="0" * 32),)))
    with pytest.raises(DatasetError, match="archive md5"):
        prepare_dataset("tiny_imagenet", fake_tiny["root"], sources=[fake_tiny["source"]], download=False)
    assert not (fake_tiny["root"] / "tiny-imagenet-200").exists()


def test_tiny_imagenet_download_goes_through_the_staging_area(fake_tiny, monkeypatch):
    zip_path = fake_tiny["source"] / "tiny-imagenet-200.zip"
    fetched = []

    def serve(url: str, destination: Path) -> None:
        fetched.append((url, destination))
        shutil.copyfile(zip_path, destination)

    monkeypatch.setattr(fetch, "fetch_url", serve)
    target = prepare_dataset("tiny_imagenet", fake_tiny["root"])
    assert [url for url, _ in fetched] == ["http://tiny.invalid/tiny-imagenet-200.zip"]
    assert fetched[0][1].parent.parent.name.startswith(fetch.STAGING_PREFIX)
    assert (target / "val" / WNIDS[2]).is_dir()
    assert list(fake_tiny["root"].glob(f"{fetch.STAGING_PREFIX}*")) == []


def test_val_arrangement_resumes_after_an_interruption(fake_tiny):
    val = fake_tiny["unzipped"] / "tiny-imagenet-200" / "val"
    first, wnid = next(iter(fake_tiny["val_classes"].items()))
    (val / wnid).mkdir()
    (val / "images" / first).rename(val / wnid / first)
    arrange_val_folder(val)
    arrange_val_folder(val)
    assert sorted(p.relative_to(val).as_posix() for p in val.rglob("*.JPEG")) == \
        sorted(f"{w}/{f}" for f, w in fake_tiny["val_classes"].items())


@pytest.mark.parametrize("line, message", [("val_0.JPEG", "expected"), ("../evil.JPEG\tn01443537", "expected"),
                                           ("val_missing.JPEG\tn01443537", "neither")])
def test_val_annotations_that_do_not_match_the_files_are_errors(fake_tiny, line, message):
    val = fake_tiny["unzipped"] / "tiny-imagenet-200" / "val"
    with open(val / "val_annotations.txt", "a") as annotations:
        annotations.write(line + "\n")
    with pytest.raises(DatasetError, match=message):
        arrange_val_folder(val)


# --- ImageNet: a user's tree, linked ------------------------------------------------------------------------


def imagenet_tree(base: Path, train_classes=WNIDS[:2], val_classes=WNIDS[:2]) -> Path:
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for index, wnid in enumerate(classes):
            (base / split / wnid).mkdir(parents=True)
            (base / split / wnid / f"{wnid}_{split}.JPEG").write_bytes(jpeg(index, side=80))
    return base


@pytest.fixture
def two_class_imagenet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATASETS, "imagenet", dataclasses.replace(DATASETS["imagenet"], num_classes=2))


def test_imagenet_at_a_user_path_is_linked_and_loaded(two_class_imagenet, tmp_path):
    tree = imagenet_tree(tmp_path / "ILSVRC2012")
    root = tmp_path / "root"
    target = prepare_dataset("imagenet", root, sources=[tree])
    assert target.is_symlink() and target.resolve() == tree.resolve()
    val = load_dataset("imagenet", root, train=False)
    assert val.classes == list(WNIDS[:2])
    assert tuple(val[0][0].shape) == (3, 224, 224)
    assert tuple(load_dataset("imagenet", root, train=True)[1][0].shape) == (3, 224, 224)
    assert describe("imagenet", root)["linked_to"] == str(tree.resolve())


def test_imagenet_missing_path_is_a_clear_error(two_class_imagenet, tmp_path):
    missing = tmp_path / "no_such_imagenet"
    with pytest.raises(DatasetError) as raised:
        prepare_dataset("imagenet", tmp_path / "root", sources=[missing, "https://example.org/imagenet/"])
    message = str(raised.value)
    assert f"{missing}: not a directory" in message
    assert "no downloadable archive" in message
    assert "image-net.org" in message


def test_imagenet_with_different_train_and_val_classes_is_refused(two_class_imagenet, tmp_path):
    tree = imagenet_tree(tmp_path / "tree", val_classes=(WNIDS[0], WNIDS[2]))
    with pytest.raises(DatasetError, match="different classes"):
        prepare_dataset("imagenet", tmp_path / "root", sources=[tree])
    assert not (tmp_path / "root" / "imagenet").exists()


def test_imagenet_with_the_wrong_number_of_classes_is_refused(tmp_path):
    tree = imagenet_tree(tmp_path / "tree")
    with pytest.raises(DatasetError, match="2 class folder.*expected 1000"):
        prepare_dataset("imagenet", tmp_path / "root", sources=[tree])
