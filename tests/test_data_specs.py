"""The dataset catalogue agrees with torchvision's own URLs and checksums, and is internally consistent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from cht.data import DATASETS, available_datasets, default_transform


@pytest.mark.parametrize("name, cls", [("mnist", tv_datasets.MNIST), ("fashion_mnist", tv_datasets.FashionMNIST)])
def test_idx_datasets_use_torchvisions_mirrors_and_archive_checksums(name, cls):
    spec = DATASETS[name]
    expected = {(f"{mirror}{filename}", md5) for filename, md5 in cls.resources for mirror in cls.mirrors}
    assert {(url, archive.md5) for archive in spec.archives for url in archive.urls} == expected
    assert all(archive.filename == f"{raw_path}.gz" for archive in spec.archives for raw_path in archive.members)
    assert spec.directory == f"{cls.__name__}/raw"


def test_emnist_is_the_balanced_split_of_torchvisions_zip():
    spec = DATASETS["emnist"]
    (archive,) = spec.archives
    assert archive.urls == (tv_datasets.EMNIST.url,) and archive.md5 == tv_datasets.EMNIST.md5
    assert spec.torchvision_kwargs["split"] == "balanced"
    assert spec.num_classes == len(tv_datasets.EMNIST.classes_split_dict["balanced"]) == 47


@pytest.mark.parametrize("name, cls", [("cifar10", tv_datasets.CIFAR10), ("cifar100", tv_datasets.CIFAR100)])
def test_cifar_uses_torchvisions_archive_and_file_checksums(name, cls):
    spec = DATASETS[name]
    (archive,) = spec.archives
    assert archive.urls == (cls.url,) and archive.md5 == cls.tgz_md5 and archive.filename == cls.filename
    expected = {path: md5 for path, md5 in cls.train_list + cls.test_list} | {cls.meta["filename"]: cls.meta["md5"]}
    assert {raw.path: raw.md5 for raw in spec.files} == expected
    assert spec.directory == cls.base_folder
    assert all(member == f"{cls.base_folder}/{path}" for path, member in archive.members.items())


def test_idx_file_sizes_follow_from_the_sample_counts():
    for name in ("mnist", "fashion_mnist", "emnist"):
        spec = DATASETS[name]
        n_train, n_test = spec.split_sizes
        sizes = sorted(raw.size for raw in spec.files)
        assert sizes == sorted([8 + n_train, 8 + n_test, 16 + 784 * n_train, 16 + 784 * n_test])


@pytest.mark.parametrize("name", available_datasets())
def test_every_spec_is_consistent(name):
    spec = DATASETS[name]
    assert spec.name == name and name in available_datasets()
    assert issubclass(spec.torchvision_class, Dataset)
    assert len(spec.mean) == len(spec.std) == spec.input_shape[0]
    assert all(0 < value < 1 for value in spec.mean + spec.std)
    for raw in spec.files:
        assert spec.archives_providing(raw.path), f"{raw.path} has no archive to come from"
    assert all(url.startswith(("http://", "https://")) for url in spec.urls)


def test_a_spec_with_mismatched_normalisation_is_refused():
    with pytest.raises(ValueError, match="mean and std"):
        dataclasses.replace(DATASETS["cifar10"], mean=(0.5,))


@pytest.mark.parametrize("name", available_datasets())
@pytest.mark.parametrize("train", [True, False])
def test_default_transform_gives_the_model_input_shape(name, train):
    channels, height, width = DATASETS[name].input_shape
    mode = "L" if channels == 1 else "RGB"
    size = (width, height) if name != "imagenet" else (300, 260)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], channels),
                                                               dtype=np.uint8).squeeze(), mode=mode)
    assert tuple(default_transform(name, train)(image).shape) == (channels, height, width)
