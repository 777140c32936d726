"""Training loop for sparse and dense models, with checkpoints that a rerun resumes from.

One epoch: shuffled mini-batches from a batch source (in-memory tensors, or a DataLoader for image-scale
data; see :mod:`cht.data.batches`), SGD with momentum, masks re-applied after
every optimiser step, topology updates when the method's schedule says so, then test accuracy.
A checkpoint after every epoch holds everything needed to continue bit-for-bit (model, optimiser,
scheduler, evolution state, random generators, metrics so far).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cht.analysis.graph import active_neurons
from cht.config import TrainConfig
from cht.data import DATASETS, dataset_checksum, prepare_dataset
from cht.data.batches import BatchSource, batch_sources
from cht.dst import Evolution, get_method
from cht.init import init_topology, init_weights
from cht.init.topology import InitContext
from cht.models import build_model, configure_performance, topology_init_for
from cht.sparse import apply_masks, link_counts, sparse_layers
from cht.tracking import Tracker

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MASKS = "masks.pt"


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


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed every generator in play; on CPU also insist on deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def lr_factor(epoch: int, config: TrainConfig) -> float:
    """Linear decay from 1 to ``lr_final_factor`` over ``lr_decay_fraction`` of the epochs, then flat."""
    decay_epochs = config.lr_decay_fraction * config.epochs
    if decay_epochs <= 0:
        return config.lr_final_factor
    return 1.0 - (1.0 - config.lr_final_factor) * min(epoch / decay_epochs, 1.0)


def write_atomic(path: Path, write: Any) -> None:
    """Write through a temporary file and rename, so a crash never leaves a half-written file."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


@dataclass
class History:
    """Per-epoch and per-update measurements, saved in checkpoints and in ``metrics.json``."""

    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    anp: list[float] = field(default_factory=list)
    evolution: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, source: BatchSource) -> float:
    """Top-1 accuracy over a batch source, in its fixed order."""
    model.eval()
    correct = 0
    for inputs, targets in source.ordered():
        correct += int((model(inputs).argmax(1) == targets).sum())
    return correct / len(source)


def final_link_counts(model: nn.Module, config: TrainConfig) -> list[int]:
    """Per-layer link counts at the configured density, which training ends on."""
    shapes = [(layer.in_features, layer.out_features) for layer in sparse_layers(model)]
    return link_counts(shapes, config.density, config.density_distribution)


def build_sparse_topology(model: nn.Module, config: TrainConfig, train_inputs: torch.Tensor | None) -> None:
    """Give every sparse layer its initial mask (exact link count) and weights, per the method.

    Methods with a density schedule (GraNet, CHTss) start denser than ``config.density``. CNN heads
    start Erdős–Rényi where the method asks for CSTI (see :func:`cht.models.topology_init_for`).
    """
    method = get_method(config.method)
    layers = sparse_layers(model)
    if not method.sparse:
        return
    generator = torch.Generator().manual_seed(config.seed)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    counts = link_counts(shapes, method.initial_density(config.density), config.density_distribution)
    for index, (layer, (n_in, n_out), n_links) in enumerate(zip(layers, shapes, counts)):
        context = InitContext(layer_index=index, generator=generator,
                              extras={"dataset": config.dataset, "train_inputs": train_inputs,
                                      "data_root": config.data_root})
        adjacency = init_topology(topology_init_for(model, method.topology_init), n_in, n_out, n_links, context)
        layer.set_mask(adjacency.t())
        init_weights(method.weight_init, layer.weight.data, layer.mask, generator)


def train(config: TrainConfig, out_dir: str | Path, tracker: Tracker | None = None) -> dict[str, Any]:
    """Train one model as ``config`` says, writing checkpoints, ``metrics.json`` and masks to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seed_everything(config.seed, device)
    tracker = tracker or Tracker(config.experiment, enabled=False)

    spec = DATASETS[config.dataset]
    root = Path(config.data_root)
    prepare_dataset(config.dataset, root, sources=config.data_sources)
    train_source, test_source = batch_sources(
        config.dataset, root, batch_size=config.batch_size, seed=config.seed + 2,
        augment=config.augmentation(), num_workers=config.num_workers,
        max_train_samples=config.max_train_samples, max_test_samples=config.max_test_samples)

    method = get_method(config.method).with_schedule(
        zeta=config.zeta, zeta_decay=config.zeta_decay, interval=config.update_interval,
        unit=config.update_unit, end_fraction=config.end_fraction)
    model = build_model(config.model, spec.input_shape, spec.num_classes, dim=config.dim, sparse=method.sparse)
    build_sparse_topology(model, config, train_source.inputs)
    model.to(device)
    train_source.to(device)
    test_source.to(device)
    configure_performance(model, device, config.mixed_precision, config.channels_last)
    layers = sparse_layers(model)
    initial_links = [layer.n_links for layer in layers]

    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, config))
    evolution = Evolution(method, layers, optimizer,
                          torch.Generator(device=device).manual_seed(config.seed + 1),
                          final_links=final_link_counts(model, config))
    history = History()
    start_epoch = 0

    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state["identity"] != config.identity():
            raise RuntimeError(f"{checkpoint_path} was written by a different configuration; delete it or "
                               f"choose another output directory")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        evolution.load_state_dict(state["evolution"])
        train_source.load_state_dict(state["batch_source"])
        torch.set_rng_state(state["torch_rng"])
        history = History(**state["history"])
        start_epoch = state["epoch"] + 1
        tracker.resume_run_id = state["mlflow_run_id"]

    n_train = len(train_source)
    steps_per_epoch = train_source.batches_per_epoch()
    total_steps = steps_per_epoch * config.epochs
    loss_function = nn.CrossEntropyLoss()
    checksum = dataset_checksum(config.dataset, root)
    with tracker.run():
        if start_epoch == 0:
            tracker.log_params(config.to_dict())
            tracker.set_tags({"cht.device": str(device), "cht.dataset_checksum": checksum,
                              "cht.method": config.method, "cht.dataset": config.dataset})
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            model.train()
            total_loss = torch.zeros((), device=device)
            batches = tqdm(train_source.epoch(epoch), desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
                           total=steps_per_epoch, leave=False, disable=not config.progress)
            for batch, (inputs, targets) in enumerate(batches):
                steps_done = epoch * steps_per_epoch + batch + 1
                epoch_end = batch == steps_per_epoch - 1
                update_due = evolution.due(epoch + 1, config.epochs, steps_done, total_steps, epoch_end)
                evolution.capture_gradients(update_due)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_function(model(inputs), targets)
                loss.backward()
                optimizer.step()
                apply_masks(layers)
                total_loss += loss.detach() * len(targets)
                if update_due:
                    record = evolution.update(steps_done / total_steps, epoch=epoch + 1, step=steps_done)
                    evolution.capture_gradients(False)
                    history.evolution.append(record.to_dict())
                    history.anp.append(record.anp)
                    tracker.log_metrics(evolution_metrics(record.to_dict()), step=steps_done)
            scheduler.step()
            train_loss = float(total_loss) / n_train
            if not math.isfinite(train_loss):
                raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1} of "
                                       f"{config.method} on {config.dataset}; lower lr (now {config.lr})")
            accuracy = evaluate(model, test_source)
            history.test_accuracy.append(accuracy)
            history.train_loss.append(train_loss)
            history.epoch_seconds.append(time.perf_counter() - started)
            tracker.log_metrics({"test_accuracy": accuracy, "train_loss": train_loss,
                                 "lr": optimizer.param_groups[0]["lr"],
                                 "epoch_seconds": history.epoch_seconds[-1]}, step=epoch + 1)
            if config.progress:
                tqdm.write(f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {train_loss:.4f}, "
                           f"test accuracy {accuracy:.4f}")
            state = {
                "identity": config.identity(), "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "evolution": evolution.state_dict(), "batch_source": train_source.state_dict(),
                "torch_rng": torch.get_rng_state(), "history": history.__dict__, "mlflow_run_id": tracker.run_id,
            }
            write_atomic(checkpoint_path, lambda path: torch.save(state, path))

        metrics = summarise(config, history, layers, initial_links, device, checksum)
        masks = [layer.adjacency.cpu().clone() for layer in layers]
        write_atomic(out_dir / MASKS, lambda path: torch.save(masks, path))
        write_atomic(out_dir / METRICS, lambda path: path.write_text(json.dumps(metrics, indent=2)))
        tracker.log_metrics({"final_test_accuracy": metrics["final_test_accuracy"],
                             "best_test_accuracy": metrics["best_test_accuracy"], "aae": metrics["aae"],
                             "final_anp": metrics["final_anp"]}, step=config.epochs)
        tracker.log_artifact(out_dir / METRICS)
        tracker.log_artifact(out_dir / MASKS)
    return metrics


def evolution_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Flatten an evolution record into mlflow metrics (per layer and overall)."""
    metrics = {"anp": record["anp"], "zeta": record["zeta"]}
    for index, layer in enumerate(record["layers"]):
        for key, value in layer.items():
            metrics[f"layer{index}.{key}"] = value
        metrics[f"layer{index}.active_out"] = record["active_per_layer"][index + 1]
    for phase, seconds in record["seconds"].items():
        metrics[f"seconds.{phase}"] = seconds
    return metrics


def summarise(config: TrainConfig, history: History, layers: list, initial_links: list[int],
              device: torch.device, checksum: str) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    activity = active_neurons([layer.adjacency for layer in layers]) if layers else None
    return {
        "method": config.method, "dataset": config.dataset, "model": config.model, "dim": config.dim,
        "density": config.density, "seed": config.seed, "epochs": config.epochs,
        "test_accuracy": history.test_accuracy, "train_loss": history.train_loss,
        "final_test_accuracy": history.test_accuracy[-1],
        "best_test_accuracy": max(history.test_accuracy),
        "aae": sum(history.test_accuracy) / len(history.test_accuracy),
        "links_per_layer": [layer.n_links for layer in layers],
        "initial_links_per_layer": initial_links,
        "anp": history.anp,
        "final_anp": activity.anp if activity else 1.0,
        "active_per_layer": activity.per_layer if activity else [],
        "evolution": history.evolution,
        "epoch_seconds": history.epoch_seconds,
        "train_time_s": sum(history.epoch_seconds),
        "device": str(device),
        "dataset_checksum": checksum,
        "config": config.to_dict(),
    }
