"""Loading prepared datasets: whole splits as normalised tensors, or torchvision datasets with transforms.

torchvision's own classes parse the files (IDX, CIFAR pickles, image folders); they are always built with
``download=False`` because :func:`cht.data.prepare_dataset` has fetched and verified the files already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from cht.data.prepare import PathLike, prepare_dataset
from cht.data.specs import DatasetError, DatasetSpec, get_spec


def load_tensors(name: str, root: PathLike, train: bool, max_samples: int | None = None,
                 sources: Sequence[PathLike] = (), download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an in-memory dataset (MNIST family, CIFAR) as ``(X, y)``.

    ``X`` is float32 of shape (N, C, H, W), scaled to [0, 1] then normalised with the spec's mean and std;
    ``y`` is int64. ``max_samples`` keeps the *first* N samples of the split, in file order (the official
    files are already shuffled, so classes stay roughly balanced); it is deterministic and a smaller
    ``max_samples`` always gives a prefix of a larger one. EMNIST images are transposed to stand upright.
    Tensors are on the CPU; move them to the model's device.
    """
    spec = get_spec(name)
    if spec.layout != "files":
        raise ValueError(f"dataset: {name} is an image-folder dataset too large to hold in memory; "
                         f"use load_dataset({name!r}, ...) with a DataLoader instead")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise ValueError(f"max_samples: expected a positive integer or None, got {max_samples!r}")
    prepare_dataset(name, root, sources, download)
    dataset = _file_dataset(spec, Path(root).expanduser().absolute(), train, transform=None)
    images = torch.as_tensor(dataset.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    expected = spec.split_sizes[0 if train else 1] if spec.split_sizes else len(images)
    if len(images) != expected or tuple(images.shape[1:]) != spec.input_shape or len(labels) != len(images):
        raise DatasetError(f"{name}: the {'train' if train else 'test'} split has images {tuple(images.shape)} and "
                           f"{len(labels)} labels, expected {(expected, *spec.input_shape)}")
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:max_samples]
    x = images.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
    x.sub_(torch.tensor(spec.mean).view(1, -1, 1, 1)).div_(torch.tensor(spec.std).view(1, -1, 1, 1))
    return x, labels.clone()


def load_dataset(name: str, root: PathLike, train: bool, transform: Callable | None = None,
                 sources: Sequence[PathLike] = (), download: bool = True) -> Dataset:
    """A torchvision dataset for any split; ``transform=None`` uses :func:`default_transform`.

    Image-folder datasets read ``train/`` or ``val/`` (Tiny-ImageNet's labelled ``val`` serves as test set).
    """
    spec = get_spec(name)
    location = prepare_dataset(name, root, sources, download)
    transform = transform if transform is not None else default_transform(name, train)
    if spec.layout == "image_folder":
        return spec.torchvision_class(str(location / ("train" if train else "val")), transform=transform)
    return _file_dataset(spec, Path(root).expanduser().absolute(), train, transform)


def default_transform(name: str, train: bool) -> Callable:
    """Standard preprocessing: augmentation for training splits where the spec asks for it, then normalisation.

    ``pad_crop_flip``: random crop after padding by 1/8 of the side, and horizontal flip (CIFAR,
    Tiny-ImageNet). ``resized_crop_flip``: random resized crop and flip for training, resize to 8/7 of the
    side and centre crop for evaluation (ImageNet).
    """
    spec = get_spec(name)
    size = spec.input_shape[-1]
    steps: list[Callable] = []
    if spec.augmentation == "pad_crop_flip" and train:
        steps = [transforms.RandomCrop(size, padding=size // 8), transforms.RandomHorizontalFlip()]
    elif spec.augmentation == "resized_crop_flip":
        steps = ([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()] if train
                 else [transforms.Resize(size * 8 // 7), transforms.CenterCrop(size)])
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])


def _file_dataset(spec: DatasetSpec, root: Path, train: bool, transform: Callable | None) -> Dataset:
    cls = spec.torchvision_class
    dataset = cls.__new__(cls)
    if isinstance(dataset, tv_datasets.CIFAR10):
        # torchvision re-checks CIFAR files against its built-in md5 list; give it the spec's (the same values
        # for the real files) as instance attributes, which keeps the object a plain, picklable CIFAR10.
        md5 = {raw.path: raw.md5 for raw in spec.files}
        dataset.train_list = [[path, md5[path]] for path, _ in cls.train_list]
        dataset.test_list = [[path, md5[path]] for path, _ in cls.test_list]
        dataset.meta = {**cls.meta, "md5": md5[cls.meta["filename"]]}
    try:
        dataset.__init__(str(root), train=train, transform=transform, download=False, **spec.torchvision_kwargs)
    except RuntimeError as error:
        raise DatasetError(f"{spec.name}: torchvision could not read the prepared files under {root} ({error}); "
                           f"run prepare_dataset({spec.name!r}, ..., full_verify=True) to re-check them") from error
    if spec.transpose_images:
        dataset.data = dataset.data.transpose(1, 2).contiguous()
    return dataset
