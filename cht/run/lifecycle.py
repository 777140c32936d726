"""One run lifecycle for a single model and for a stacked group of runs.

A *stepper* trains: it holds the model, the optimiser and the data order of the runs it trains, and takes one
optimiser step of all of them at a time (:class:`cht.train.SingleStepper` holds one model,
:class:`cht.grouped.GroupStepper` ``K`` runs stacked along a run axis). Everything else that happens to a run
happens here, once for both:

* the epoch and step loop: each epoch trains, evaluates, then evolves the topology when the method's schedule
  says so. An update scheduled by step runs right after its step, except one that falls on an epoch's last
  step, which waits for the evaluation, so every accuracy is measured on a topology trained for a whole
  epoch, as in the authors' loop (``run.py``, ICLR release ``dfbd68d``);
* one checkpoint format, written atomically after every epoch, and at a step boundary when SIGTERM asks to
  stop (:mod:`cht.processes`), holding everything needed to continue bit for bit;
* resume from it, the history of measurements, the mlflow record and ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch
from tqdm.auto import tqdm

from cht.config import RUN_KEY, TrainConfig
from cht.dst import Evolution, Method
from cht.io import load_checkpoint, save_checkpoint, save_tensors_atomic, write_text_atomic
from cht.processes import StopSignal, TrainingStopped
from cht.run.record import evolution_metrics
from cht.tracking import Tracker

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
MASKS = "masks.pt"
INITIAL_MASKS = "initial_masks.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where and what to change."""


def check_finite(train_loss: float, epoch: int, config: TrainConfig) -> None:
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch + 1} of "
                               f"{config.method} on {config.dataset}; lower lr (now {config.lr})")


def epoch_lr(epoch: int, config: TrainConfig) -> float:
    """The learning rate of ``epoch`` (0-based): ``lr``, decaying linearly to ``lr · lr_final_factor`` over
    ``lr_decay_fraction`` of the epochs, then flat."""
    decay_epochs = config.lr_decay_fraction * config.epochs
    factor = (config.lr_final_factor if decay_epochs <= 0
              else 1.0 - (1.0 - config.lr_final_factor) * min(epoch / decay_epochs, 1.0))
    return config.lr * factor


def layer_adjacencies(layers: Sequence) -> list[torch.Tensor]:
    """Every sparse layer's adjacency ``(in, out)`` on the CPU, as ``masks.pt`` stores it."""
    return [layer.adjacency.cpu().clone() for layer in layers]


@dataclass
class History:
    """Per-epoch and per-update measurements, saved in checkpoints and in ``metrics.json``."""

    test_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    anp: list[float] = field(default_factory=list)
    evolution: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    """One run's record keeping: where it writes, its tracker, its topology evolution and its measurements."""

    config: TrainConfig
    out_dir: Path
    tracker: Tracker
    evolution: Evolution
    history: History
    initial_links: list[int]
    initial_masks: list[torch.Tensor]
    params: dict[str, Any]

    @classmethod
    def start(cls, config: TrainConfig, method: Method, layers: Sequence, optimizer: Any, out_dir: Path,
              tracker: Tracker, initial_masks: list[torch.Tensor], final_links: list[int],
              params: dict[str, Any], device: torch.device) -> Run:
        """A run at its start: its evolution over ``layers`` (the stepper's link interfaces of this run) draws
        from the run's seed + 1, and its ANP history begins with that of the initial topology."""
        evolution = Evolution(method, list(layers), optimizer,
                              torch.Generator(device=device).manual_seed(config.seed + 1), final_links=final_links)
        history = History(anp=[evolution.activity().anp] if layers else [])
        return cls(config, out_dir, tracker, evolution, history, [layer.n_links for layer in layers], initial_masks,
                   params)

    def state_dict(self) -> dict[str, Any]:
        return {"evolution": self.evolution.state_dict(), "history": self.history.__dict__,
                "mlflow_run_id": self.tracker.run_id, "initial_links": self.initial_links,
                "initial_masks": self.initial_masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evolution.load_state_dict(state["evolution"])
        self.history = History(**state["history"])
        self.initial_links, self.initial_masks = state["initial_links"], state["initial_masks"]
        self.tracker.resume_run_id = state["mlflow_run_id"]

    def open(self, device: torch.device, checksum: str, tags: dict[str, Any]) -> None:
        """What a run records once, when it starts (not when it resumes)."""
        self.tracker.log_params(self.params)
        self.tracker.set_tags({"cht.device": str(device), "cht.dataset_checksum": checksum,
                               "cht.method": self.config.method, "cht.dataset": self.config.dataset, **tags})
        save_tensors_atomic(self.out_dir / INITIAL_MASKS, self.initial_masks)

    def record_update(self, steps_done: int, total_steps: int, epoch: int) -> None:
        """Run a due topology update and record it."""
        record = self.evolution.update(steps_done / total_steps, epoch=epoch, step=steps_done)
        self.evolution.capture_gradients(False)
        self.history.evolution.append(record.to_dict())
        self.history.anp.append(record.anp)
        self.tracker.log_metrics(evolution_metrics(record.to_dict()), step=steps_done)

    def log_epoch(self, epoch: int, seconds: float) -> None:
        """Report a finished epoch (its numbers are the last entries of the history); the lr logged is the
        next epoch's, the one the optimiser holds from now on."""
        config, history = self.config, self.history
        history.epoch_seconds.append(seconds)
        accuracy, train_loss = history.test_accuracy[-1], history.train_loss[-1]
        self.tracker.log_metrics({"epoch/test_accuracy": accuracy, "epoch/train_loss": train_loss,
                                  "epoch/lr": epoch_lr(epoch + 1, config), "epoch/seconds": seconds}, step=epoch + 1)
        if config.progress:
            tqdm.write(f"{config.method} epoch {epoch + 1}/{config.epochs}: loss {train_loss:.4f}, "
                       f"test accuracy {accuracy:.4f}")

    def finish(self, device: torch.device, checksum: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Write ``masks.pt`` and ``metrics.json`` (last: its presence marks a finished run) and report them."""
        metrics = {**self.summary(device, checksum), **extra}
        save_tensors_atomic(self.out_dir / MASKS, layer_adjacencies(self.evolution.layers))
        write_text_atomic(self.out_dir / METRICS, json.dumps(metrics, indent=2))
        self.tracker.log_metrics({"final_test_accuracy": metrics["final_test_accuracy"],
                                  "best_test_accuracy": metrics["best_test_accuracy"], "aae": metrics["aae"],
                                  "final_anp": metrics["final_anp"] if self.evolution.layers else None},
                                 step=self.config.epochs)
        self.tracker.log_artifact(self.out_dir / METRICS)
        self.tracker.log_artifact(self.out_dir / MASKS)
        return metrics

    def summary(self, device: torch.device, checksum: str) -> dict[str, Any]:
        """The content of ``metrics.json``.

        ``aae`` (area across epochs) is the mean of the per-epoch test accuracies: a learning-speed measure.
        ``anp`` starts with the active-neuron proportion at initialisation (CSTI can leave neurons unlinked),
        followed by one entry per topology update; ``early_stop_update`` gives, per sparse layer, the update
        at which it first signalled early stop (``null`` if never).
        """
        config, history, evolution = self.config, self.history, self.evolution
        activity = evolution.activity() if evolution.layers else None
        return {
            **{key: getattr(config, key) for key in RUN_KEY}, "epochs": config.epochs,
            "test_accuracy": history.test_accuracy, "train_loss": history.train_loss,
            "final_test_accuracy": history.test_accuracy[-1],
            "best_test_accuracy": max(history.test_accuracy),
            "aae": sum(history.test_accuracy) / len(history.test_accuracy),
            "links_per_layer": [layer.n_links for layer in evolution.layers],
            "initial_links_per_layer": self.initial_links,
            "anp": history.anp,
            "final_anp": activity.anp if activity else 1.0,
            "active_per_layer": activity.per_layer if activity else [],
            "early_stop_update": list(evolution.signal_updates),
            "evolution": history.evolution,
            "epoch_seconds": history.epoch_seconds,
            "train_time_s": sum(history.epoch_seconds),
            "device": str(device),
            "storage": self.params["storage"],
            "dataset_checksum": checksum,
            "config": self.params,
        }


class Stepper(Protocol):
    """What the lifecycle needs of a trainer of ``K`` runs (``K = 1`` for a single model).

    Per-run values (losses, accuracies, data positions) are sequences in the order of the runs."""

    name: str  #: for the progress bar
    device: torch.device
    n_train: int  #: training samples per epoch
    steps_per_epoch: int

    def begin_epoch(self, epoch: int) -> None:
        """Set every run's learning rate for ``epoch`` and switch to training mode."""

    def data_positions(self) -> list[Any]:
        """Each run's data-order state: at an epoch's start it fixes that epoch's batches."""

    def set_data_positions(self, positions: Sequence[Any]) -> None: ...

    def batches(self, epoch: int, skip: int) -> Iterator[Any]:
        """The epoch's batches after the first ``skip`` (same order as a run that did not skip them)."""

    def step(self, batch: Any) -> torch.Tensor:
        """One optimiser step of every run on ``batch``, the sparse layers' invariant restored after it; each
        run's summed loss over its batch, ``(K,)``."""

    def evaluate(self) -> list[float]:
        """Each run's test accuracy."""

    def after_update(self, index: int) -> None:
        """Run ``index``'s topology just changed (a stepper may restore its layers' storage)."""

    def state_dict(self) -> dict[str, Any]:
        """The model and optimiser state of every run (a checkpoint's ``stepper`` entry)."""


def read_checkpoint(path: Path, configs: Sequence[TrainConfig]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` of the runs of ``configs``, or None if there is none; a checkpoint of other
    runs, or a file that is not one, is an error naming it."""
    return load_checkpoint(path, [config.identity() for config in configs]) if path.exists() else None


def train_runs(stepper: Stepper, runs: Sequence[Run], checkpoint: Path, state: dict[str, Any] | None,
               checksum: str, tags: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train ``runs`` through ``stepper`` to their last epoch, resuming ``state`` (read from ``checkpoint``; the
    stepper has already taken its ``stepper`` entry), and return their ``metrics.json`` contents.

    ``tags`` are added to each run's mlflow tags when it opens, ``extra`` to each ``metrics.json``.
    """
    configs = [run.config for run in runs]
    shared, device = configs[0], stepper.device
    start_epoch, partial = 0, None
    if state is not None:
        for run, saved in zip(runs, state["runs"]):
            run.load_state_dict(saved)
        stepper.set_data_positions([saved["data_position"] for saved in state["runs"]])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, partial = state["epoch"] + 1, state.get("partial_epoch")

    def save(epoch: int, positions: Sequence[Any], partial_epoch: dict[str, Any] | None = None) -> None:
        """Save the runs after ``epoch`` (0-based; -1: none yet) and, when stopped mid-epoch, the part done of
        the next one: its batches, summed losses and seconds (``positions`` are then those it started from)."""
        save_checkpoint(checkpoint, {
            "identities": [config.identity() for config in configs], "epoch": epoch,
            "partial_epoch": partial_epoch, "torch_rng": torch.get_rng_state(), "stepper": stepper.state_dict(),
            "runs": [{**run.state_dict(), "data_position": position} for run, position in zip(runs, positions)],
        })

    steps_per_epoch = stepper.steps_per_epoch
    total_steps = steps_per_epoch * shared.epochs

    def evolve(index: int, steps_done: int, epoch: int) -> None:
        """Run ``runs[index]``'s due update after step ``steps_done`` and let the stepper follow its topology."""
        runs[index].record_update(steps_done, total_steps, epoch + 1)
        stepper.after_update(index)
    with ExitStack() as open_runs:
        for run in runs:
            open_runs.enter_context(run.tracker.run())  # closed KILLED or FAILED by an exception
        stop = open_runs.enter_context(StopSignal())
        if start_epoch == 0 and partial is None:
            for run in runs:
                run.open(device, checksum, tags or {})
        for run in runs:  # a workflow manager removes a killed job's outputs
            if not (run.out_dir / INITIAL_MASKS).exists():
                save_tensors_atomic(run.out_dir / INITIAL_MASKS, run.initial_masks)
        for epoch in range(start_epoch, shared.epochs):
            skip, done_losses, done_seconds = ((partial["batches"], partial["loss"], partial["seconds"])
                                               if partial else (0, [0.0] * len(runs), 0.0))
            partial = None
            started = time.perf_counter() - done_seconds
            stepper.begin_epoch(epoch)
            epoch_start = stepper.data_positions()
            total_loss = torch.tensor(done_losses, device=device)
            pending = [0] * len(runs)
            batches = tqdm(stepper.batches(epoch, skip), initial=skip, total=steps_per_epoch, leave=False,
                           desc=f"{stepper.name} epoch {epoch + 1}/{shared.epochs}", disable=not shared.progress)
            for batch_index, batch in enumerate(batches, start=skip):
                steps_done = epoch * steps_per_epoch + batch_index + 1
                epoch_end = batch_index == steps_per_epoch - 1
                due = [run.evolution.begin_step(epoch + 1, shared.epochs, steps_done, total_steps, epoch_end)
                       for run in runs]
                total_loss += stepper.step(batch)
                for index, update_due in enumerate(due):
                    if update_due and not epoch_end:
                        evolve(index, steps_done, epoch)
                    elif update_due:
                        pending[index] = steps_done  # after this epoch's evaluation
                if stop.received and not epoch_end:
                    save(epoch - 1, epoch_start, {"batches": batch_index + 1, "loss": total_loss.tolist(),
                                                  "seconds": time.perf_counter() - started})
                    _stopped(runs, stop, checkpoint, epoch, batch_index + 1, steps_per_epoch, steps_done)
            train_losses = [loss / stepper.n_train for loss in total_loss.tolist()]
            for run, loss in zip(runs, train_losses):
                check_finite(loss, epoch, run.config)
            accuracies = stepper.evaluate()
            for index, run in enumerate(runs):
                run.history.test_accuracy.append(accuracies[index])
                run.history.train_loss.append(train_losses[index])
                if pending[index]:
                    evolve(index, pending[index], epoch)
            seconds = time.perf_counter() - started  # a group's members share it: the epoch of all of them
            for run in runs:
                run.log_epoch(epoch, seconds)
            save(epoch, stepper.data_positions())
            if stop.received and epoch < shared.epochs - 1:
                _stopped(runs, stop, checkpoint, epoch + 1, 0, steps_per_epoch, (epoch + 1) * steps_per_epoch)
        return [run.finish(device, checksum, extra or {}) for run in runs]


def _stopped(runs: Sequence[Run], stop: StopSignal, checkpoint: Path, epoch: int, batches: int,
             steps_per_epoch: int, steps_done: int) -> NoReturn:
    """End runs stopped by ``stop`` once their checkpoint is written: each mlflow record shows where (the metric
    ``run/stopped`` at that step, the tag ``cht.stopped``) and closes KILLED."""
    where = f"{stop.describe()} after step {batches} of {steps_per_epoch} in epoch {epoch + 1}"
    for run in runs:
        run.tracker.log_metrics({"run/stopped": 1.0}, step=steps_done)
        run.tracker.set_tags({"cht.stopped": f"{where} (step {steps_done} of the run)"})
    raise TrainingStopped(f"stopped by {where}; {checkpoint} holds it, and the next start resumes from there")
