"""Train one run: build its model and initial topology, and step it (the run's lifecycle, epoch loop and
checkpoints are :mod:`cht.run.lifecycle`'s).

A step: a shuffled mini-batch from the run's batch source (in-memory tensors, or a DataLoader for
image-scale data; see :mod:`cht.data.batches`), SGD with momentum, and the sparse layers' invariant
restored after it. Sparse layers are stored as the run's ``storage`` says (:func:`store_layers`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cht.config import SPARSE_STORAGE_MAX_DENSITY, TrainConfig, training_run_name
from cht.data import DATASETS, dataset_checksum, prepare_dataset
from cht.data.batches import BatchSource, TensorBatches, batch_sources
from cht.dst import EarlyStop, Method, resolve_method
from cht.init import init_bias, init_topology, init_weights
from cht.init.topology import InitContext
from cht.memory import available_memory, check_run_memory, estimate_run_memory
from cht.models import build_model, configure_performance, is_convolutional, topology_init_for
from cht.sparse import after_optimizer_step, align_optimizer_state, link_counts, sparse_layers
from cht.run.lifecycle import CHECKPOINT, Run, epoch_lr, layer_adjacencies, read_checkpoint, train_runs
from cht.run.record import resolved_params
from cht.tracking import Tracker
from cht.tracking_spool import RUN_SPOOL


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request on a machine without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name!r} requested but CUDA is not available; use --device auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed every generator in play."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CPU, insist on deterministic kernels for the block (a run is then bit-for-bit repeatable); the
    setting in place before is restored after, so code run later in the process is left as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(before or device.type == "cpu")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@torch.no_grad()
def evaluate(model: nn.Module, source: BatchSource) -> float | list[float]:
    """Top-1 accuracy over a batch source in its fixed order; one per member for a model of stacked runs
    (logits ``(runs, batch, classes)``)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64)
    for inputs, targets in source.ordered():
        correct = correct + (model(inputs).argmax(-1) == targets).sum(-1).cpu()
    accuracy = correct.double() / len(source)
    return float(accuracy) if accuracy.dim() == 0 else accuracy.tolist()


def final_link_counts(model: nn.Module, config: TrainConfig) -> list[int]:
    """Per-layer link counts at the configured density, which training ends on."""
    shapes = [(layer.in_features, layer.out_features) for layer in sparse_layers(model)]
    return link_counts(shapes, config.density, config.density_distribution)


def resolve_storage(config: TrainConfig, device: torch.device, sparse: bool = True) -> str:
    """The storage of the sparse layers. ``auto`` on a CPU stays ``auto``: each layer is stored
    sparse while its density is at most ``SPARSE_STORAGE_MAX_DENSITY`` and masked above it
    (:func:`store_layers`), so GraNet and CHTss, which start at 50%, train masked until their
    density schedule has thinned a layer. On other devices ``auto`` is masked. A dense model
    (``sparse=False``) has no sparse layers: ``dense``."""
    if not sparse:
        return "dense"
    if config.storage != "auto":
        return config.storage
    return "auto" if device.type == "cpu" else "masked"


def store_layers(layers: list, storage: str, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Store the layers by ``storage``, carrying weights and optimiser state across. ``auto`` stores each
    one the way that trains it fastest on a CPU at its current density (the crossover measured by
    ``bench/train_throughput.py``)."""
    for layer in layers:
        if storage == "auto":
            layer.to_storage("sparse" if layer.density <= SPARSE_STORAGE_MAX_DENSITY else "masked", optimizer)
        elif storage != "dense":
            layer.to_storage(storage, optimizer)


def build_sparse_topology(model: nn.Module, config: TrainConfig, train_inputs: torch.Tensor | None) -> None:
    """Give every sparse layer its initial links (exact count) and weights, per the method.

    Methods with a density schedule (GraNet, CHTss) start denser than ``config.density``. Topologies and
    values draw from separate generators, so one seed gives the same topology whatever the initialisers
    of weights and biases (the protocols differ there only).
    """
    method = configured_method(config)
    layers = sparse_layers(model)
    if not method.sparse:
        return
    generator = torch.Generator().manual_seed(config.seed)
    value_generator = torch.Generator().manual_seed(config.seed + 3)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    counts = link_counts(shapes, method.initial_density(config.density), config.density_distribution)
    for index, (layer, (n_in, n_out), n_links) in enumerate(zip(layers, shapes, counts)):
        context = InitContext(layer_index=index, generator=generator,
                              extras={"dataset": config.dataset, "train_inputs": train_inputs,
                                      "data_root": config.data_root})
        links = init_topology(topology_init_for(model, method.topology_init), n_in, n_out, n_links, context)
        layer.set_links(links, init_weights(method.weight_init, layer.shape, links, value_generator))
        if layer.bias is not None:
            layer.bias.data.copy_(init_bias(method.bias_init, method.weight_init, layer.shape, n_links,
                                            value_generator))


@dataclass
class RunData:
    """A run's training and test batch sources (on the CPU until moved) and the dataset's checksum."""

    train: BatchSource
    test: BatchSource
    checksum: str

    @property
    def train_inputs(self) -> torch.Tensor | None:
        """The training inputs when held in memory (CSTI correlates them), else None."""
        return self.train.inputs if isinstance(self.train, TensorBatches) else None


def load_run_data(config: TrainConfig) -> RunData:
    """Prepare the configured dataset and its (possibly truncated) splits; the training source shuffles
    with the run's seed + 2."""
    root = Path(config.data_root)
    prepare_dataset(config.dataset, root, sources=config.data_sources)
    train, test = batch_sources(config.dataset, root, batch_size=config.batch_size, seed=config.seed + 2,
                                augment=config.augmentation(), num_workers=config.num_workers,
                                max_train_samples=config.max_train_samples, max_test_samples=config.max_test_samples)
    return RunData(train, test, dataset_checksum(config.dataset, root))


def configured_method(config: TrainConfig) -> Method:
    """The run's method, as its protocol sets it up for its model, with the configuration's evolution-schedule
    overrides."""
    method = resolve_method(config.method, config.protocol, is_convolutional(config.model)).with_schedule(
        zeta=config.zeta, zeta_decay=config.zeta_decay, interval=config.update_interval,
        unit=config.update_unit, end_fraction=config.end_fraction)
    if config.early_stop is None or config.early_stop == (method.early_stop is not None):
        return method
    return replace(method, early_stop=EarlyStop() if config.early_stop else None)


@dataclass
class BuiltRun:
    """A freshly initialised model with its sparse layers and what the run records of its start."""

    model: nn.Module
    layers: list
    initial_masks: list[torch.Tensor]
    final_links: list[int]


def build_run(config: TrainConfig, method: Method, x_train: torch.Tensor | None,
              storage: str = "masked") -> BuiltRun:
    """Build the model and its initial topology on the CPU (seed the generators first: the build draws), its
    sparse layers stored by ``storage``."""
    spec = DATASETS[config.dataset]
    model = build_model(config.model, spec.input_shape, spec.num_classes, dim=config.dim, sparse=method.sparse,
                        storage="masked" if storage in ("dense", "auto") else storage)
    build_sparse_topology(model, config, x_train)
    layers = sparse_layers(model)
    store_layers(layers, storage)
    return BuiltRun(model, layers, layer_adjacencies(layers), final_link_counts(model, config))


def run_params(config: TrainConfig, method: Method, device: torch.device, storage: str) -> dict[str, Any]:
    """What the run actually uses (mlflow params and the ``config`` block of ``metrics.json``)."""
    return {**resolved_params(config, method, device), "storage": storage}


class SingleStepper:
    """One model trained by ``torch.optim.SGD`` with momentum, its batches drawn from the run's batch source."""

    name: str

    def __init__(self, config: TrainConfig, built: BuiltRun, data: RunData, device: torch.device, storage: str,
                 state: dict[str, Any] | None = None) -> None:
        """Move the freshly built run to ``device``; with ``state`` (a checkpoint's ``stepper`` entry), continue
        from it (model first: sparse layers get new parameters, which the optimiser is then built over)."""
        self.config, self.model, self.layers, self.data = config, built.model, built.layers, data
        self.device, self.storage, self.name = device, storage, config.method
        self.model.to(device)
        data.train.to(device)
        data.test.to(device)
        configure_performance(self.model, device, config.mixed_precision, config.channels_last)
        if state is not None:
            self.model.load_state_dict(state["model"])
            store_layers(self.layers, storage)  # as the checkpointed run stored them at this density
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=epoch_lr(0, config), momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            align_optimizer_state(self.optimizer, self.layers)
        self.n_train = len(data.train)
        self.steps_per_epoch = data.train.batches_per_epoch()
        self.loss_function = nn.CrossEntropyLoss()

    def begin_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = epoch_lr(epoch, self.config)
        self.model.train()

    def data_positions(self) -> list[Any]:
        return [self.data.train.state_dict()]

    def set_data_positions(self, positions: Sequence[Any]) -> None:
        self.data.train.load_state_dict(positions[0])

    def batches(self, epoch: int, skip: int) -> Iterator[Any]:
        for index, batch in enumerate(self.data.train.epoch(epoch)):
            if index >= skip:  # those before were done before a stop: the same permutation, continued
                yield batch

    def step(self, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_function(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        after_optimizer_step(self.layers)
        return (loss.detach() * len(targets)).reshape(1)

    def evaluate(self) -> list[float]:
        return [evaluate(self.model, self.data.test)]

    def after_update(self, index: int) -> None:
        """With ``storage: auto`` each layer moves to the storage that suits its new density."""
        if self.storage == "auto":
            store_layers(self.layers, self.storage, self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}


def train(config: TrainConfig, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train one model as ``config`` says, writing checkpoints, ``metrics.json`` and masks to ``out_dir``, and
    resuming the checkpoint found there (:mod:`cht.run.lifecycle` says what happens to a run)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    with deterministic_kernels(device):
        seed_everything(config.seed)
        tracker = tracker or Tracker(config.experiment, enabled=False)
        tracker.run_name = tracker.run_name or training_run_name(config)
        tracker.spool_path = tracker.spool_path or out_dir / RUN_SPOOL
        method = configured_method(config)
        storage = resolve_storage(config, device, method.sparse)
        check_run_memory(estimate_run_memory(config, method, device, storage, SPARSE_STORAGE_MAX_DENSITY),
                         available_memory(device), storage)
        data = load_run_data(config)
        built = build_run(config, method, data.train_inputs, storage)
        state = read_checkpoint(out_dir / CHECKPOINT, [config])
        stepper = SingleStepper(config, built, data, device, storage, state and state["stepper"])
        run = Run.start(config, method, stepper.layers, stepper.optimizer, out_dir, tracker, built.initial_masks,
                        built.final_links, run_params(config, method, device, storage), device)
        (metrics,) = train_runs(stepper, [run], out_dir / CHECKPOINT, state, data.checksum)
        return metrics
