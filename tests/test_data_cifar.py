"""CIFAR-10/100 from small test-made archives in torchvision's layout (pickled batches inside a .tar.gz)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

from cht.data import DATASETS, DatasetError, RawFile, load_dataset, load_tensors, prepare_dataset

PER_BATCH = 4


def build_fake_cifar(name: str, directory: Path) -> dict:
    """Write ``<archive>.tar.gz`` with every batch file torchvision expects; return the images and labels."""
    spec = DATASETS[name]
    cls = spec.torchvision_class
    label_key = "labels" if cls is tv_datasets.CIFAR10 else "fine_labels"
    rng = np.random.default_rng(len(name))
    contents, arrays = {}, {"train": [], "test": []}
    for split, listing in (("train", cls.train_list), ("test", cls.test_list)):
        for filename, _ in listing:
            rows = rng.integers(0, 256, (PER_BATCH, 3 * 32 * 32), dtype=np.uint8)
            labels = rng.integers(0, spec.num_classes, PER_BATCH).tolist()
            contents[filename] = pickle.dumps({"data": rows, label_key: labels})
            arrays[split].append((rows, labels))
    contents[cls.meta["filename"]] = pickle.dumps({cls.meta["key"]: [f"class{i}" for i in range(spec.num_classes)]})
    archive = spec.archives[0]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for path, data in contents.items():
            info = tarfile.TarInfo(archive.members[path])
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / archive.filename).write_bytes(buffer.getvalue())
    patched = dataclasses.replace(
        spec, split_sizes=(PER_BATCH * len(cls.train_list), PER_BATCH * len(cls.test_list)),
        files=tuple(RawFile(path, md5=hashlib.md5(data).hexdigest()) for path, data in contents.items()),
        archives=(dataclasses.replace(archive, md5=hashlib.md5(buffer.getvalue()).hexdigest(), urls=()),))
    stacked = {split: (np.concatenate([rows for rows, _ in batches]), np.concatenate([lab for _, lab in batches]))
               for split, batches in arrays.items()}
    return {"spec": patched, "arrays": stacked, "source": directory}


@pytest.fixture(params=["cifar10", "cifar100"])
def fake_cifar(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    fake = build_fake_cifar(request.param, tmp_path / "source")
    monkeypatch.setitem(DATASETS, request.param, fake["spec"])
    return {**fake, "name": request.param, "root": tmp_path / "root"}


def test_tensors_match_the_pickled_rows_in_channel_order(fake_cifar):
    name, spec = fake_cifar["name"], fake_cifar["spec"]
    prepare_dataset(name, fake_cifar["root"], sources=[fake_cifar["source"]], download=False)
    for split, train in (("train", True), ("test", False)):
        x, y = load_tensors(name, fake_cifar["root"], train=train)
        rows, labels = fake_cifar["arrays"][split]
        images = rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255
        expected = (images - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None]
        assert x.shape == (len(rows), 3, 32, 32) and x.is_contiguous()
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), labels)


def test_dataset_with_default_transforms_agrees_with_the_tensors(fake_cifar):
    name, root = fake_cifar["name"], fake_cifar["root"]
    test_set = load_dataset(name, root, train=False, sources=[fake_cifar["source"]], download=False)
    assert isinstance(test_set, fake_cifar["spec"].torchvision_class)
    x, y = load_tensors(name, root, train=False)
    image, label = test_set[1]
    torch.testing.assert_close(image, x[1], rtol=0, atol=1e-5)
    assert label == y[1]
    augmented, _ = load_dataset(name, root, train=True)[0]
    assert augmented.shape == (3, 32, 32)


def test_a_damaged_batch_is_reported_by_name(fake_cifar):
    name, root = fake_cifar["name"], fake_cifar["root"]
    target = prepare_dataset(name, root, sources=[fake_cifar["source"]], download=False)
    victim = target / fake_cifar["spec"].files[0].path
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=f"{victim.name} is corrupt"):
        load_tensors(name, root, train=True)


def test_missing_cifar_names_the_archive_and_url(tmp_path):
    with pytest.raises(DatasetError) as raised:
        prepare_dataset("cifar10", tmp_path, download=False)
    message = str(raised.value)
    assert "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
