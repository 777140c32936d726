"""Training loop for sparse and dense models, with checkpoints that a rerun resumes from.

One epoch: shuffled mini-batches from a batch source (in-memory tensors, or a DataLoader for image-scale
data; see :mod:`cht.data.batches`), SGD with momentum, the sparse layers'
invariant restored after every optimiser step, test accuracy, then a topology update when the
method's schedule says so (updates scheduled by step happen right after their step, except one that
falls on an epoch's last step, which waits for the evaluation).
A checkpoint after every epoch holds everything needed to continue bit-for-bit (model, optimiser,
scheduler, evolution state, random generators, metrics so far).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cht.config import RUN_KEY, TrainConfig, training_run_name
from cht.data import DATASETS, dataset_checksum, prepare_dataset
from cht.data.batches import BatchSource, TensorBatches, batch_sources
from cht.dst import EarlyStop, Evolution, Method, resolve_method
from cht.init import init_bias, init_topology, init_weights
from cht.init.topology import InitContext
from cht.io import load_checkpoint, save_checkpoint, save_tensors_atomic, write_text_atomic
from cht.memory import available_memory, check_run_memory, estimate_run_memory
from cht.models import build_model, configure_performance, is_convolutional, topology_init_for
from cht.processes import StopSignal, TrainingStopped
from cht.sparse import after_optimizer_step, align_optimizer_state, link_counts, sparse_layers
from cht.run.record import evolution_metrics, resolved_params
from cht.tracking import Tracker
from cht.tracking_spool import RUN_SPOOL

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MASKS = "masks.pt"
INITIAL_MASKS = "initial_masks.pt"
# At or below this density the sparse backend trains faster than the masked one on a CPU
# (bench/train_throughput.py: paper MLP, batch 32 and 256, 1 and 2 threads).
SPARSE_BACKEND_MAX_DENSITY = 0.1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to change."""


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


def lr_factor(epoch: int, config: TrainConfig) -> float:
    """Linear decay from 1 to ``lr_final_factor`` over ``lr_decay_fraction`` of the epochs, then flat."""
    decay_epochs = config.lr_decay_fraction * config.epochs
    if decay_epochs <= 0:
        return config.lr_final_factor
    return 1.0 - (1.0 - config.lr_final_factor) * min(epoch / decay_epochs, 1.0)


@dataclass
class History:
    """Per-epoch and per-update measurements, saved in checkpoints and in ``metrics.json``."""

    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    anp: list[float] = field(default_factory=list)
    evolution: list[dict[str, Any]] = field(default_factory=list)


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


def resolve_backend(config: TrainConfig, device: torch.device, sparse: bool = True) -> str:
    """The storage backend of the sparse layers. ``auto`` on a CPU stays ``auto``: each layer is stored
    sparse while its density is at most ``SPARSE_BACKEND_MAX_DENSITY`` and masked above it
    (:func:`store_layers`), so GraNet and CHTss, which start at 50%, train masked until their
    density schedule has thinned a layer. On other devices ``auto`` is masked. A dense model
    (``sparse=False``) has no sparse layers: ``dense``."""
    if not sparse:
        return "dense"
    if config.backend != "auto":
        return config.backend
    return "auto" if device.type == "cpu" else "masked"


def store_layers(layers: list, backend: str, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Store the layers by ``backend``, carrying weights and optimiser state across. ``auto`` stores each
    one the way that trains it fastest on a CPU at its current density (the crossover measured by
    ``bench/train_throughput.py``)."""
    for layer in layers:
        if backend == "auto":
            layer.to_backend("sparse" if layer.density <= SPARSE_BACKEND_MAX_DENSITY else "masked", optimizer)
        elif backend != "dense":
            layer.to_backend(backend, optimizer)


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


def layer_adjacencies(layers: list) -> list[torch.Tensor]:
    """Every sparse layer's adjacency ``(in, out)`` on the CPU, as ``masks.pt`` stores it."""
    return [layer.adjacency.cpu().clone() for layer in layers]


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
    initial_links: list[int]
    initial_masks: list[torch.Tensor]
    final_links: list[int]


def build_run(config: TrainConfig, method: Method, x_train: torch.Tensor | None,
              backend: str = "masked") -> BuiltRun:
    """Build the model and its initial topology on the CPU (seed the generators first: the build draws), its
    sparse layers stored by ``backend``."""
    spec = DATASETS[config.dataset]
    model = build_model(config.model, spec.input_shape, spec.num_classes, dim=config.dim, sparse=method.sparse,
                        backend="masked" if backend in ("dense", "auto") else backend)
    build_sparse_topology(model, config, x_train)
    layers = sparse_layers(model)
    store_layers(layers, backend)
    return BuiltRun(model, layers, [layer.n_links for layer in layers], layer_adjacencies(layers),
                    final_link_counts(model, config))


def run_params(config: TrainConfig, method: Method, device: torch.device, backend: str) -> dict[str, Any]:
    """What the run actually uses (mlflow params and the ``config`` block of ``metrics.json``)."""
    return {**resolved_params(config, method, device), "backend": backend}


def open_run(tracker: Tracker, config: TrainConfig, out_dir: Path, params: dict[str, Any], device: torch.device,
             checksum: str, initial_masks: list[torch.Tensor]) -> None:
    """What a run records once, when it starts (not when it resumes)."""
    tracker.log_params(params)
    tracker.set_tags({"cht.device": str(device), "cht.dataset_checksum": checksum,
                      "cht.method": config.method, "cht.dataset": config.dataset})
    save_tensors_atomic(out_dir / INITIAL_MASKS, initial_masks)


def record_update(evolution: Evolution, history: History, tracker: Tracker, steps_done: int, total_steps: int,
                  epoch: int, backend: str = "masked") -> None:
    """Run a due topology update and record it; with ``backend: auto`` each layer then moves to the storage
    that suits its new density."""
    record = evolution.update(steps_done / total_steps, epoch=epoch, step=steps_done)
    evolution.capture_gradients(False)
    if backend == "auto":
        store_layers(evolution.layers, backend, evolution.optimizer)
    history.evolution.append(record.to_dict())
    history.anp.append(record.anp)
    tracker.log_metrics(evolution_metrics(record.to_dict()), step=steps_done)


def check_finite(train_loss: float, epoch: int, config: TrainConfig) -> None:
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1} of "
                               f"{config.method} on {config.dataset}; lower lr (now {config.lr})")


def log_epoch(tracker: Tracker, config: TrainConfig, history: History, epoch: int, lr: float) -> None:
    """Report a finished epoch (its numbers are the last entries of ``history``)."""
    accuracy, train_loss = history.test_accuracy[-1], history.train_loss[-1]
    tracker.log_metrics({"epoch/test_accuracy": accuracy, "epoch/train_loss": train_loss, "epoch/lr": lr,
                         "epoch/seconds": history.epoch_seconds[-1]}, step=epoch + 1)
    if config.progress:
        tqdm.write(f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {train_loss:.4f}, "
                   f"test accuracy {accuracy:.4f}")


def finish_run(config: TrainConfig, out_dir: Path, tracker: Tracker, history: History, evolution: Evolution,
               initial_links: list[int], device: torch.device, checksum: str, params: dict[str, Any],
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``masks.pt`` and ``metrics.json`` (last: its presence marks a finished run) and report them.

    ``extra`` adds entries to ``metrics.json`` (a grouped run records its group there)."""
    metrics = {**summarise(config, history, evolution, initial_links, device, checksum, params), **(extra or {})}
    save_tensors_atomic(out_dir / MASKS, layer_adjacencies(evolution.layers))
    write_text_atomic(out_dir / METRICS, json.dumps(metrics, indent=2))
    tracker.log_metrics({"final_test_accuracy": metrics["final_test_accuracy"],
                         "best_test_accuracy": metrics["best_test_accuracy"], "aae": metrics["aae"],
                         "final_anp": metrics["final_anp"] if evolution.layers else None}, step=config.epochs)
    tracker.log_artifact(out_dir / METRICS)
    tracker.log_artifact(out_dir / MASKS)
    return metrics


def train(config: TrainConfig, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train one model as ``config`` says, writing checkpoints, ``metrics.json`` and masks to ``out_dir``.

    Each epoch trains, then evaluates, then (when the schedule says so) evolves the topology: every
    accuracy is measured on a topology that was trained for a whole epoch, as in the authors' loop,
    which evolves at the start of the next epoch (``run.py``, ICLR release ``dfbd68d``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    with deterministic_kernels(device):
        return _train(config, out_dir, device, tracker)


def _train(config: TrainConfig, out_dir: Path, device: torch.device, tracker: Tracker | None) -> dict[str, Any]:
    seed_everything(config.seed)
    tracker = tracker or Tracker(config.experiment, enabled=False)
    tracker.run_name = tracker.run_name or training_run_name(config)
    tracker.spool_path = tracker.spool_path or out_dir / RUN_SPOOL

    method = configured_method(config)
    backend = resolve_backend(config, device, method.sparse)
    check_run_memory(estimate_run_memory(config, method, device, backend, SPARSE_BACKEND_MAX_DENSITY),
                     available_memory(device), backend)
    data = load_run_data(config)
    built = build_run(config, method, data.train_inputs, backend)
    model, layers = built.model, built.layers
    initial_links, initial_masks = built.initial_links, built.initial_masks
    model.to(device)
    data.train.to(device)
    data.test.to(device)
    configure_performance(model, device, config.mixed_precision, config.channels_last)

    checkpoint_path = out_dir / CHECKPOINT
    state = load_checkpoint(checkpoint_path, config.identity()) if checkpoint_path.exists() else None
    if state is not None:
        model.load_state_dict(state["model"])  # before the optimiser: sparse layers get new parameters
        store_layers(layers, backend)  # as the checkpointed run stored them at this density
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, config))
    evolution = Evolution(method, layers, optimizer,
                          torch.Generator(device=device).manual_seed(config.seed + 1),
                          final_links=built.final_links)
    history = History(anp=[evolution.activity().anp] if layers else [])
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        align_optimizer_state(optimizer, layers)
        scheduler.load_state_dict(state["scheduler"])
        evolution.load_state_dict(state["evolution"])
        data.train.load_state_dict(state["batch_source"])
        torch.set_rng_state(state["torch_rng"])
        history = History(**state["history"])
        initial_links, initial_masks = state["initial_links"], state["initial_masks"]
        start_epoch = state["epoch"] + 1
        tracker.resume_run_id = state["mlflow_run_id"]
    partial = state.get("partial_epoch") if state is not None else None

    n_train = len(data.train)
    steps_per_epoch = data.train.batches_per_epoch()
    total_steps = steps_per_epoch * config.epochs
    loss_function = nn.CrossEntropyLoss()

    params = run_params(config, method, device, backend)

    def checkpoint(epoch: int, batch_source: dict[str, Any], partial_epoch: dict[str, Any] | None = None) -> None:
        """Save the run after ``epoch`` (0-based; -1: none yet) and, when stopped mid-epoch, the part done of the
        next one: its batches, summed loss and seconds (``batch_source`` is then the state it started from)."""
        save_checkpoint(checkpoint_path, {
            "identity": config.identity(), "epoch": epoch, "backend": backend, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "evolution": evolution.state_dict(), "batch_source": batch_source,
            "torch_rng": torch.get_rng_state(), "history": history.__dict__, "mlflow_run_id": tracker.run_id,
            "initial_links": initial_links, "initial_masks": initial_masks, "partial_epoch": partial_epoch,
        })

    with tracker.run(), StopSignal() as stop:
        if start_epoch == 0 and partial is None:
            open_run(tracker, config, out_dir, params, device, data.checksum, initial_masks)
        elif not (out_dir / INITIAL_MASKS).exists():  # a workflow manager removes a killed job's outputs
            save_tensors_atomic(out_dir / INITIAL_MASKS, initial_masks)
        for epoch in range(start_epoch, config.epochs):
            skip, done_loss, done_seconds = ((partial["batches"], partial["loss"], partial["seconds"])
                                             if partial else (0, 0.0, 0.0))
            partial = None
            started = time.perf_counter() - done_seconds
            model.train()
            total_loss = torch.full((), done_loss, device=device)
            pending_update = 0
            epoch_start = data.train.state_dict()
            batches = tqdm(data.train.epoch(epoch), desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
                           total=steps_per_epoch, leave=False, disable=not config.progress)
            for batch, (inputs, targets) in enumerate(batches):
                if batch < skip:  # done before a stop: the same permutation, continued where it stopped
                    continue
                steps_done = epoch * steps_per_epoch + batch + 1
                epoch_end = batch == steps_per_epoch - 1
                update_due = evolution.due(epoch + 1, config.epochs, steps_done, total_steps, epoch_end)
                evolution.capture_gradients(update_due)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_function(model(inputs), targets)
                loss.backward()
                optimizer.step()
                after_optimizer_step(layers)
                total_loss += loss.detach() * len(targets)
                if update_due and not epoch_end:
                    record_update(evolution, history, tracker, steps_done, total_steps, epoch + 1,
                                  backend=backend)
                elif update_due:
                    pending_update = steps_done  # after this epoch's evaluation
                if stop.received and not epoch_end:
                    checkpoint(epoch - 1, epoch_start, {"batches": batch + 1, "loss": float(total_loss),
                                                        "seconds": time.perf_counter() - started})
                    stopped([tracker], stop, checkpoint_path, epoch, batch + 1, steps_per_epoch, steps_done)
            scheduler.step()
            train_loss = float(total_loss) / n_train
            check_finite(train_loss, epoch, config)
            history.test_accuracy.append(evaluate(model, data.test))
            history.train_loss.append(train_loss)
            if pending_update:
                record_update(evolution, history, tracker, pending_update, total_steps, epoch + 1,
                              backend=backend)
            history.epoch_seconds.append(time.perf_counter() - started)
            log_epoch(tracker, config, history, epoch, optimizer.param_groups[0]["lr"])
            checkpoint(epoch, data.train.state_dict())
            if stop.received and epoch < config.epochs - 1:
                stopped([tracker], stop, checkpoint_path, epoch + 1, 0, steps_per_epoch, (epoch + 1) * steps_per_epoch)

        return finish_run(config, out_dir, tracker, history, evolution, initial_links, device, data.checksum,
                          params)


def stopped(trackers: Sequence[Tracker], stop: StopSignal, checkpoint_path: Path, epoch: int, batches: int,
            steps_per_epoch: int, steps_done: int) -> NoReturn:
    """End runs stopped by ``stop`` once their checkpoint is written: each mlflow record shows where (the metric
    ``run/stopped`` at that step, the tag ``cht.stopped``) and closes KILLED."""
    where = f"{stop.describe()} after step {batches} of {steps_per_epoch} in epoch {epoch + 1}"
    for tracker in trackers:
        tracker.log_metrics({"run/stopped": 1.0}, step=steps_done)
        tracker.set_tags({"cht.stopped": f"{where} (step {steps_done} of the run)"})
    raise TrainingStopped(f"stopped by {where}; {checkpoint_path} holds it, and the next start resumes from there")


def summarise(config: TrainConfig, history: History, evolution: Evolution, initial_links: list[int],
              device: torch.device, checksum: str, params: dict[str, Any]) -> dict[str, Any]:
    """The content of ``metrics.json``.

    ``aae`` (area across epochs) is the mean of the per-epoch test accuracies: a learning-speed measure.
    ``anp`` starts with the active-neuron proportion at initialisation (CSTI can leave neurons unlinked),
    followed by one entry per topology update; ``early_stop_update`` gives, per sparse layer, the update
    at which it first signalled early stop (``null`` if never).
    """
    layers = evolution.layers
    activity = evolution.activity() if layers else None
    return {
        **{key: getattr(config, key) for key in RUN_KEY}, "epochs": config.epochs,
        "test_accuracy": history.test_accuracy, "train_loss": history.train_loss,
        "final_test_accuracy": history.test_accuracy[-1],
        "best_test_accuracy": max(history.test_accuracy),
        "aae": sum(history.test_accuracy) / len(history.test_accuracy),
        "links_per_layer": [layer.n_links for layer in layers],
        "initial_links_per_layer": initial_links,
        "anp": history.anp,
        "final_anp": activity.anp if activity else 1.0,
        "active_per_layer": activity.per_layer if activity else [],
        "early_stop_update": list(evolution.signal_updates),
        "evolution": history.evolution,
        "epoch_seconds": history.epoch_seconds,
        "train_time_s": sum(history.epoch_seconds),
        "device": str(device),
        "backend": params["backend"],
        "dataset_checksum": checksum,
        "config": params,
    }
