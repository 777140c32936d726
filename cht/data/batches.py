"""Where training and evaluation batches come from: whole tensors in memory, or a DataLoader with workers.

The training loop iterates ``for inputs, targets in source.epoch(epoch)`` and evaluates over
``source.ordered()`` whichever source it has:

- :class:`TensorBatches` holds a split as one tensor on the training device (the MLP's fast path for the
  MNIST family and un-augmented CIFAR). Its shuffle is ``torch.randperm(n, generator)`` then contiguous
  slices of ``batch_size``, the generator's state travelling in checkpoints.
- :class:`LoaderBatches` reads a torchvision dataset through a :class:`~torch.utils.data.DataLoader` with
  workers and pinned memory (ImageNet, Tiny-ImageNet, augmented CIFAR). Epoch ``e``'s order comes from a
  generator seeded with ``seed + e`` and sample ``i``'s augmentation from the seed ``(seed + e, i)``, so a
  run resumed at an epoch boundary sees exactly the batches of an uninterrupted one, whatever the number
  of workers.

:func:`batch_sources` picks the source for a dataset and model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cht.data.load import default_transform, load_dataset, load_tensors
from cht.data.specs import get_spec

Batch = tuple[torch.Tensor, torch.Tensor]
EVAL_BATCH_SIZE = 1000


class BatchSource(Protocol):
    """A split, batched: shuffled epochs for training, a fixed order for evaluation."""

    inputs: torch.Tensor | None  # the whole split when it is held in memory (CSTI reads it), else None

    def __len__(self) -> int: ...
    def to(self, device: torch.device) -> None: ...
    def batches_per_epoch(self) -> int: ...
    def epoch(self, epoch: int) -> Iterator[Batch]: ...
    def ordered(self) -> Iterator[Batch]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TensorBatches:
    """A split held as tensors on the device; epochs are random permutations cut into contiguous batches."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                 generator: torch.Generator | None = None, eval_batch_size: int = EVAL_BATCH_SIZE) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.inputs)

    def to(self, device: torch.device) -> None:
        """Move the split to ``device`` (once, before training)."""
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """One shuffled pass; the permutation is drawn when the pass starts (``epoch`` is not needed)."""
        if self.generator is None:
            raise RuntimeError("this TensorBatches has no shuffle generator; give one to train on it")
        order = torch.randperm(len(self), generator=self.generator).to(self.inputs.device)
        for start in range(0, len(self), self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.inputs[index], self.targets[index]

    def ordered(self) -> Iterator[Batch]:
        for start in range(0, len(self), self.eval_batch_size):
            yield self.inputs[start:start + self.eval_batch_size], self.targets[start:start + self.eval_batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.generator is not None:
            self.generator.set_state(state["generator"])


class SeededSamples(Dataset):
    """``dataset[i]`` with the global torch RNG seeded from ``(epoch_seed, i)``: augmentation that depends on
    neither the worker that loads a sample nor the samples loaded before it. The caller's RNG is restored."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.epoch_seed * 1_000_003 + index)
            return self.dataset[index]


class LoaderBatches:
    """A torchvision dataset read by a DataLoader; epoch ``e`` is shuffled and augmented from ``seed + e``."""

    inputs = None

    def __init__(self, dataset: Dataset, batch_size: int, seed: int | None = None, num_workers: int = 0,
                 device: torch.device = torch.device("cpu")) -> None:
        self.dataset, self.batch_size, self.device = SeededSamples(dataset), batch_size, device
        self.seed, self.num_workers = seed, num_workers

    def __len__(self) -> int:
        return len(self.dataset)

    def to(self, device: torch.device) -> None:
        """Deliver batches on ``device`` (pinned host memory when it is a GPU)."""
        self.device = device

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if self.seed is None:
            raise RuntimeError("this LoaderBatches has no seed; give one to train on it")
        return self._iterate(shuffle=True, generator=torch.Generator().manual_seed(self.seed + epoch))

    def ordered(self) -> Iterator[Batch]:
        return self._iterate(shuffle=False, generator=torch.Generator().manual_seed(0))

    def _iterate(self, shuffle: bool, generator: torch.Generator) -> Iterator[Batch]:
        pin = self.device.type == "cuda"
        self.dataset.epoch_seed = int(torch.randint(2**31, (), generator=generator))
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                            num_workers=self.num_workers, pin_memory=pin,
                            persistent_workers=False, prefetch_factor=4 if self.num_workers else None)
        for inputs, targets in loader:
            yield inputs.to(self.device, non_blocking=pin), targets.to(self.device, non_blocking=pin)

    def state_dict(self) -> dict[str, Any]:
        return {}  # every epoch is seeded from (seed, epoch): nothing to carry

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def default_workers() -> int:
    """DataLoader workers when the config leaves it open: the CPUs this process may use, at most 8."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def uses_loader(dataset: str, augment: bool) -> bool:
    """Whether a split must be streamed: image-folder datasets always, in-memory ones when augmented."""
    return get_spec(dataset).layout == "image_folder" or augment


def batch_sources(dataset: str, root: str | os.PathLike, *, batch_size: int, seed: int, augment: bool,
                  num_workers: int | None = None,
                  max_train_samples: int | None = None, max_test_samples: int | None = None,
                  sources: Sequence[str | os.PathLike] = ()) -> tuple[BatchSource, BatchSource]:
    """Train and test sources for ``dataset``; ``augment`` applies the dataset's training augmentation.

    ``max_*_samples`` keep the first N samples of a split, as :func:`cht.data.load_tensors` does. The
    in-memory train source shuffles with ``torch.Generator().manual_seed(seed)``; the loader source seeds
    epoch ``e`` with ``seed + e``. Sources start on the CPU; ``source.to(device)`` moves them.
    """
    spec = get_spec(dataset)
    if augment and spec.augmentation == "none":
        raise ValueError(f"augment: {dataset} defines no augmentation; set augment to false (or null)")
    if not uses_loader(dataset, augment):
        train_inputs, train_targets = load_tensors(dataset, root, train=True, max_samples=max_train_samples,
                                                   sources=sources)
        test_inputs, test_targets = load_tensors(dataset, root, train=False, max_samples=max_test_samples,
                                                 sources=sources)
        return (TensorBatches(train_inputs, train_targets, batch_size, torch.Generator().manual_seed(seed)),
                TensorBatches(test_inputs, test_targets, batch_size))
    workers = default_workers() if num_workers is None else num_workers
    splits = []
    for train, limit in ((True, max_train_samples), (False, max_test_samples)):
        transform = default_transform(dataset, train=train and augment)
        data = load_dataset(dataset, Path(root), train=train, transform=transform, sources=sources)
        splits.append(Subset(data, range(min(limit, len(data)))) if limit is not None else data)
    return (LoaderBatches(splits[0], batch_size, seed=seed, num_workers=workers),
            LoaderBatches(splits[1], EVAL_BATCH_SIZE if spec.layout == "files" else batch_size,
                          num_workers=workers))
