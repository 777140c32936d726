"""Catalogue of the paper's datasets: shapes, normalisation, official files, checksums and download locations.

URLs and archive checksums are torchvision's (0.29) own lists, so a download here fetches exactly what
torchvision would. Checksums of the *unpacked* files are what gets verified on disk:

- MNIST: md5 of the four unpacked IDX files as published alongside the dataset (identical values in several
  independent projects); sizes follow from the IDX headers.
- Fashion-MNIST: sha256 and md5 of the four unpacked IDX files, computed from Debian's
  ``dataset-fashion-mnist`` package (Debian re-gzipped the files, the unpacked bytes are the official ones:
  the md5s equal those the Fashion-MNIST release lists for the unpacked files).
- EMNIST: no digest of the unpacked files is published; they are accepted only when they come out of the
  official ``gzip.zip`` whose md5 matches, and their sha256 is then recorded for later re-verification.
- CIFAR-10/100: torchvision's md5 of every unpacked batch file.
- Tiny-ImageNet: md5 of the official zip; ImageNet: no public download, so no checksum (a user tree).

Normalisation constants are per-channel mean and standard deviation over all training-set pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

Layout = Literal["files", "image_folder"]
Augmentation = Literal["none", "pad_crop_flip", "resized_crop_flip"]


class DatasetError(RuntimeError):
    """Dataset files are missing, corrupt or unreachable; the message says what to install or where to put what."""


@dataclass(frozen=True)
class RawFile:
    """One file of a prepared dataset, relative to the dataset's directory, with whatever official digests exist."""

    path: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None

    @property
    def has_official_digest(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


@dataclass(frozen=True)
class Archive:
    """An official download unit (``.gz``, ``.tar.gz`` or ``.zip``) and the raw files it holds.

    ``members`` maps a :class:`RawFile` path to the member's path inside the archive ('' for a single-file
    gzip); a member ending in ``.gz`` whose raw file does not is gunzipped on the way out. An archive with no
    members (Tiny-ImageNet) is unpacked whole.
    """

    filename: str
    md5: str | None
    urls: tuple[str, ...]
    members: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to fetch, verify, load and normalise one dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    torchvision_class: type[Dataset]
    directory: str
    layout: Layout  # raw files that torchvision reads, or a folder of images per class
    files: tuple[RawFile, ...] = ()
    archives: tuple[Archive, ...] = ()
    default_sources: tuple[str, ...] = ()
    install_hint: str = ""
    torchvision_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    split_sizes: tuple[int, int] | None = None
    augmentation: Augmentation = "none"
    transpose_images: bool = False

    def __post_init__(self) -> None:
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean and std need {channels} values (one per channel of input_shape)")
        known = {f.path for f in self.files}
        for archive in self.archives:
            unknown = set(archive.members) - known
            if unknown:
                raise ValueError(f"{self.name}: archive {archive.filename} lists unknown files {sorted(unknown)}")

    @property
    def urls(self) -> tuple[str, ...]:
        """Every official download location, in the order they are tried."""
        return tuple(url for archive in self.archives for url in archive.urls)

    def archives_providing(self, path: str) -> tuple[Archive, ...]:
        return tuple(archive for archive in self.archives if path in archive.members)


def _gzip_per_file(mirrors: tuple[str, ...], gz_md5: Mapping[str, str]) -> tuple[Archive, ...]:
    """One ``<name>.gz`` archive per raw file, each fetched from every mirror in turn (MNIST-style releases)."""
    return tuple(Archive(f"{name}.gz", md5, tuple(mirror + f"{name}.gz" for mirror in mirrors),
                         MappingProxyType({name: ""})) for name, md5 in gz_md5.items())


def _idx_sizes(train: int, test: int, prefix: str = "", test_tag: str = "t10k") -> dict[str, int]:
    """Byte sizes of the four 28x28 IDX files: 16-byte image header, 8-byte label header, one byte per value."""
    return {f"{prefix}train-images-idx3-ubyte": 16 + train * 28 * 28,
            f"{prefix}train-labels-idx1-ubyte": 8 + train,
            f"{prefix}{test_tag}-images-idx3-ubyte": 16 + test * 28 * 28,
            f"{prefix}{test_tag}-labels-idx1-ubyte": 8 + test}


_MNIST_SIZES = _idx_sizes(60000, 10000)

MNIST = DatasetSpec(
    name="mnist", num_classes=10, input_shape=(1, 28, 28), mean=(0.1307,), std=(0.3081,),
    torchvision_class=tv_datasets.MNIST, directory="MNIST/raw", layout="files", split_sizes=(60000, 10000),
    files=tuple(RawFile(name, _MNIST_SIZES[name], md5=md5) for name, md5 in {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }.items()),
    archives=_gzip_per_file(("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"), {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist", num_classes=10, input_shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,),
    torchvision_class=tv_datasets.FashionMNIST, directory="FashionMNIST/raw", layout="files",
    split_sizes=(60000, 10000),
    files=(
        RawFile("train-images-idx3-ubyte", 47040016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        RawFile("train-labels-idx1-ubyte", 60008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "9018921c3c673c538a1fc5bad174d6f9"),
        RawFile("t10k-images-idx3-ubyte", 7840016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", "8181f5470baa50b63fa0f6fddb340f0a"),
        RawFile("t10k-labels-idx1-ubyte", 10008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    archives=_gzip_per_file(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    default_sources=("/usr/share/datasets/fashion-mnist",),
    install_hint="apt-get install dataset-fashion-mnist (it puts the four .gz files in "
                 "/usr/share/datasets/fashion-mnist, which is searched by default)",
)

_EMNIST_SIZES = _idx_sizes(112800, 18800, prefix="emnist-balanced-", test_tag="test")

EMNIST = DatasetSpec(
    name="emnist", num_classes=47, input_shape=(1, 28, 28), mean=(0.1751,), std=(0.3332,),
    torchvision_class=tv_datasets.EMNIST, torchvision_kwargs=MappingProxyType({"split": "balanced"}),
    directory="EMNIST/raw", layout="files", split_sizes=(112800, 18800), transpose_images=True,
    files=tuple(RawFile(name, size) for name, size in _EMNIST_SIZES.items()),
    archives=(Archive("gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e",
                      ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",),
                      MappingProxyType({name: f"gzip/{name}.gz" for name in _EMNIST_SIZES})),),
)


def _cifar(name: str, num_classes: int, folder: str, filename: str, tgz_md5: str, file_md5: Mapping[str, str],
           mean: tuple[float, ...], std: tuple[float, ...], torchvision_class: type[Dataset]) -> DatasetSpec:
    return DatasetSpec(
        name=name, num_classes=num_classes, input_shape=(3, 32, 32), mean=mean, std=std,
        torchvision_class=torchvision_class, directory=folder, layout="files", split_sizes=(50000, 10000),
        augmentation="pad_crop_flip",
        files=tuple(RawFile(path, md5=md5) for path, md5 in file_md5.items()),
        archives=(Archive(filename, tgz_md5, (f"https://www.cs.toronto.edu/~kriz/{filename}",),
                          MappingProxyType({path: f"{folder}/{path}" for path in file_md5})),),
    )


CIFAR10 = _cifar("cifar10", 10, "cifar-10-batches-py", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), torchvision_class=tv_datasets.CIFAR10)

CIFAR100 = _cifar("cifar100", 100, "cifar-100-python", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), torchvision_class=tv_datasets.CIFAR100)

TINY_IMAGENET = DatasetSpec(
    name="tiny_imagenet", num_classes=200, input_shape=(3, 64, 64),
    mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821),
    torchvision_class=tv_datasets.ImageFolder, directory="tiny-imagenet-200", layout="image_folder",
    split_sizes=(100000, 10000), augmentation="pad_crop_flip",
    archives=(Archive("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
                      ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",)),),
)

IMAGENET = DatasetSpec(
    name="imagenet", num_classes=1000, input_shape=(3, 224, 224),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    torchvision_class=tv_datasets.ImageFolder, directory="imagenet", layout="image_folder",
    split_sizes=(1281167, 50000), augmentation="resized_crop_flip",
    install_hint="ImageNet (ILSVRC2012) needs a licence and cannot be downloaded automatically: get it from "
                 "https://image-net.org, arrange train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (one folder per "
                 "class), then pass that folder in sources (it is linked, not copied)",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    MNIST, FASHION_MNIST, EMNIST, CIFAR10, CIFAR100, TINY_IMAGENET, IMAGENET)}


def available_datasets() -> list[str]:
    """Names accepted by every function of :mod:`cht.data`."""
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec registered under ``name``; an unknown name is an error that lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset: unknown name {name!r}; choose one of {available_datasets()}") from None
