"""The real Fashion-MNIST, from Debian's ``dataset-fashion-mnist`` package (skipped where it is not installed)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

from cht.data import DATASETS, DatasetError, dataset_checksum, describe, load_dataset, load_tensors, prepare_dataset

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

pytestmark = pytest.mark.skipif(not all((DEBIAN / f"{name}.gz").is_file() for name in NAMES),
                                reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")


def test_prepared_files_are_the_official_ones(fashion_root):
    target = fashion_root / "FashionMNIST" / "raw"
    spec = DATASETS["fashion_mnist"]
    for raw in spec.files:
        data = (target / raw.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()) == \
            (raw.size, raw.sha256, raw.md5)
    lines = "".join(f"{raw.path}\t{raw.size}\t{raw.sha256}\n" for raw in sorted(spec.files, key=lambda r: r.path))
    assert dataset_checksum("fashion_mnist", fashion_root) == hashlib.sha256(lines.encode()).hexdigest()
    summary = describe("fashion_mnist", fashion_root)
    assert summary["location"] == str(target) and summary["bytes"] == sum(raw.size for raw in spec.files)


@pytest.mark.parametrize("train, count", [(True, 60000), (False, 10000)])
def test_splits_are_complete_balanced_and_normalised(fashion_root, train, count):
    x, y = load_tensors("fashion_mnist", fashion_root, train=train)
    assert x.shape == (count, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [count // 10] * 10
    if train:  # the constants are the training set's statistics
        assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    else:
        assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_dataset_view_agrees_with_the_tensors(fashion_root):
    dataset = load_dataset("fashion_mnist", fashion_root, train=False)
    assert isinstance(dataset, tv_datasets.FashionMNIST) and len(dataset) == 10000
    x, y = load_tensors("fashion_mnist", fashion_root, train=False, max_samples=3)
    image, label = dataset[2]
    torch.testing.assert_close(image, x[2], rtol=0, atol=1e-5)
    assert label == y[2].item()


def test_debian_gzip_files_work_as_an_explicit_source_too(tmp_path):
    root = tmp_path / "root"
    target = prepare_dataset("fashion_mnist", root, sources=[DEBIAN], download=False)
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)


def test_a_truncated_real_file_is_reported_by_name(fashion_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(fashion_root, root)
    victim = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    with open(victim, "r+b") as handle:
        handle.truncate(5000)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte is corrupt.*size 5000 bytes, expected 10008"):
        load_tensors("fashion_mnist", root, train=False)
    victim.unlink()
    assert np.array_equal(load_tensors("fashion_mnist", root, train=False)[1].numpy()[:5],
                          load_tensors("fashion_mnist", fashion_root, train=False)[1].numpy()[:5])
