"""Train a group of runs in lock-step in one process: one batched product per layer for all of them.

At the paper's batch size (32) one run of the paper MLP leaves a GPU idle most of the time: each step is
a few dozen small kernel launches. Runs that share dataset, model shape and batch size can instead be
stacked along a leading *run axis*: member ``k``'s weights are slice ``k`` of a ``(K, out, in)`` tensor,
its batch slice ``k`` of a ``(K, B, in)`` input, and one ``torch.baddbmm`` per layer computes every
member's forward (and backward) pass. The members stay independent runs:

* each is built from the same seeding, model and initial topology as :func:`cht.train.train` builds, then
  copied into the stack, so it starts from the same weights and links; only the storage differs (masked
  dense slices of the stack, where a single run on a CPU may keep sparse layers as links);
* each draws its own data order from its own shuffle generator, has its own learning-rate schedule,
  momentum buffer slice (:class:`GroupedSGD` follows ``torch.optim.SGD``'s arithmetic with per-run
  hyper-parameters) and its own :class:`cht.dst.Evolution`, which drives the member through
  :class:`GroupMember`, a view of slice ``k`` that speaks the link interface of
  :class:`cht.sparse.SparseLinear`; dense (FC) members have an all-ones mask and no evolution;
* the loss is the sum of the members' mean losses, so member ``k``'s gradient is that of its own loss.

A run trained in a group therefore gives the result it gives alone, up to floating-point summation
order (batched against single products). Storage is masked-dense: at the paper's densities and widths a
GPU computes a dense batched product faster than it gathers sparse ones.

Every member still writes its own ``initial_masks.pt``, ``masks.pt`` and ``metrics.json`` and logs to
its own mlflow run; the group keeps one checkpoint, written after every epoch (and at a step boundary
when SIGTERM asks it to stop, see :mod:`cht.processes`), that resumes all members.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from cht.config import TrainConfig
from cht.data import DATASETS
from cht.dst import Evolution
from cht.models import build_model
from cht.sparse import links as L
from cht.sparse.layer import LinkGeometry, SparseLinear
from cht.processes import StopSignal
from cht.tracking import Tracker
from cht.tracking_spool import RUN_SPOOL
from cht.data.batches import TensorBatches
from cht.io import load_tensors, save_tensors_atomic
from cht.train import (INITIAL_MASKS, History, build_run, check_finite, configured_method, evaluate, finish_run,
                       load_run_data, log_epoch, lr_factor, open_run, record_update, resolve_device, run_params,
                       deterministic_kernels, seed_everything, stopped)

GROUP_CHECKPOINT = "group_checkpoint.pt"
# Fields every member of a group must share: they fix the data, the shapes and the step count.
SHARED_FIELDS = ("dataset", "model", "dim", "batch_size", "epochs", "max_train_samples", "max_test_samples",
                 "data_root", "device")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
EVALUATION_BATCH = 1000


class GroupedLinear(nn.Module):
    """``K`` linear layers stacked: ``y_k = x_k W_kᵀ + b_k`` for every member ``k`` in one batched product.

    ``weight`` is ``(K, out, in)`` (layer convention per member), ``bias`` ``(K, out)``; ``mask`` (bool,
    same shape as ``weight``) keeps each member's weights zero off its links, or is ``None`` for a dense
    layer. Member ``k`` is exposed to the evolution engine by :meth:`member`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.runs, self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.register_buffer("mask", None if mask is None else mask.clone())
        self.capturing = [False] * self.runs
        self.captured: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, B, in)``, or ``(B, in)`` shared by all members (evaluation)."""
        if x.dim() == 2:
            x = x.expand(self.runs, *x.shape)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    @torch.no_grad()
    def mask_gradient(self) -> None:
        """Keep the unmasked gradient when a member asked for it, then zero the gradient off the links (as
        :class:`SparseLinear`'s masked backend does in its gradient hook)."""
        if self.mask is None or self.weight.grad is None:
            return
        if any(self.capturing):
            self.captured = self.weight.grad.clone()
        self.weight.grad.mul_(self.mask)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mask is not None:
            self.weight.mul_(self.mask)

    def member(self, index: int, links: torch.Tensor) -> GroupMember:
        return GroupMember(self, index, links)


class GroupMember(LinkGeometry):
    """Member ``index`` of a :class:`GroupedLinear`, with the link interface of :class:`SparseLinear`.

    The evolution engine, removal and regrowth rules and analysis code use it as they use a sparse layer:
    ``links``, ``link_values()``, ``set_links()`` (carrying weights and the group optimiser's state of this
    slice), ``capture_gradient()``/``dense_gradient()`` (slice of the stacked gradient), ``adjacency``.
    """

    backend = "masked"

    def __init__(self, group: GroupedLinear, index: int, links: torch.Tensor) -> None:
        self.group = group
        self.index = index
        self.in_features = group.in_features
        self.out_features = group.out_features
        self.links = links.to(device=group.weight.device, dtype=torch.int64)

    def link_values(self) -> torch.Tensor:
        return self.group.weight.detach()[self.index].reshape(-1)[self.links]

    def dense_weight(self) -> torch.Tensor:
        return self.group.weight.detach()[self.index]

    @torch.no_grad()
    def set_links(self, links: torch.Tensor, values: torch.Tensor | None = None,
                  optimizer: GroupedSGD | None = None) -> None:
        """As :meth:`SparseLinear.set_links`: kept links keep weight and optimiser state, new ones start at 0."""
        links = links.to(device=self.links.device, dtype=torch.int64)
        L.check_links(links, self.shape)
        mask = L.to_mask(links, self.shape)
        self.links = links
        self.group.mask[self.index] = mask
        weight = self.group.weight.detach()[self.index]
        if values is None:
            weight.mul_(mask)
        else:
            weight.zero_().view(-1)[links] = values.to(weight)
        for state in optimizer.state_of(self.group.weight) if optimizer is not None else []:
            state[self.index].mul_(mask) if values is None else state[self.index].zero_()

    def capture_gradient(self, enabled: bool) -> None:
        self.group.capturing[self.index] = enabled
        if not any(self.group.capturing):
            self.group.captured = None

    def dense_gradient(self) -> torch.Tensor:
        if self.group.captured is None or not self.group.capturing[self.index]:
            raise RuntimeError("no dense gradient captured: call capture_gradient(True) before the update step's "
                               "backward pass")
        return self.group.captured[self.index]

    @torch.no_grad()
    def after_step(self) -> None:
        self.group.weight[self.index].mul_(self.group.mask[self.index])


class GroupedSGD:
    """``torch.optim.SGD`` (momentum, weight decay, no dampening or Nesterov) on stacked parameters, with
    per-run learning rate, momentum and weight decay (each a ``(K,)`` tensor broadcast over the run axis).

    Per element it computes what SGD computes: ``g ← g + wd·p``; ``buf ← g`` at the first step, else
    ``buf ← m·buf + g``; ``p ← p − lr·buf``.
    """

    def __init__(self, params: Sequence[nn.Parameter], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float]) -> None:
        self.params = list(params)
        device = self.params[0].device
        self.lr = torch.tensor(lr, dtype=self.params[0].dtype, device=device)
        self.momentum = torch.tensor(momentum, dtype=self.params[0].dtype, device=device)
        self.weight_decay = torch.tensor(weight_decay, dtype=self.params[0].dtype, device=device)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def set_lr(self, lr: Sequence[float]) -> None:
        self.lr.copy_(torch.tensor(lr, dtype=self.lr.dtype))

    def state_of(self, parameter: torch.Tensor) -> list[torch.Tensor]:
        """The state tensors of ``parameter`` (its momentum buffer once the first step made it)."""
        return [buffer for p, buffer in zip(self.params, self.buffers) if p is parameter and buffer is not None]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad + self.weight_decay.view(shape) * p
            buffer = self.buffers[index]
            if buffer is None:
                buffer = self.buffers[index] = grad.clone()
            else:
                buffer.mul_(self.momentum.view(shape)).add_(grad)
            p.sub_(self.lr.view(shape) * buffer)


class GroupedMLP(nn.Module):
    """The paper MLP (:class:`cht.models.mlp.SparseMLP`) of ``K`` members stacked; inputs already flat."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        for model in members:
            if not all(hasattr(model, name) for name in ("hidden", "classifier", "activation")):
                raise ValueError(f"group_runs: a {type(model).__name__} cannot be trained in a group (only the "
                                 f"MLP can); set group_runs: false")
        depth = {len(model.hidden) for model in members}
        if len(depth) != 1:
            raise ValueError("group_runs: the members' models have different depths")
        self.hidden = nn.ModuleList(
            _stack([model.hidden[index] for model in members], masked=True) for index in range(depth.pop()))
        self.classifier = _stack([model.classifier for model in members], masked=False)
        self.activation = members[0].activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.classifier(x)

    @torch.no_grad()
    def after_step(self) -> None:
        for layer in self.hidden:
            layer.after_step()


def _stack(layers: Sequence[nn.Module], masked: bool) -> GroupedLinear:
    """Stack the members' layers; a dense member of a masked layer gets an all-ones mask."""
    weights = [layer.dense_weight() if isinstance(layer, SparseLinear) else layer.weight.detach() for layer in layers]
    biases = [layer.bias.detach() for layer in layers]
    mask = None
    if masked:
        mask = torch.stack([L.to_mask(layer.links, layer.shape) if isinstance(layer, SparseLinear)
                            else torch.ones(layer.weight.shape, dtype=torch.bool) for layer in layers])
    return GroupedLinear(torch.stack(weights), torch.stack(biases), mask)


def check_group(configs: Sequence[TrainConfig]) -> None:
    """A group needs at least one member and members that share data, shapes and step count."""
    if not configs:
        raise ValueError("a group needs at least one run")
    for field in SHARED_FIELDS:
        values = {str(getattr(config, field)) for config in configs}
        if len(values) > 1:
            raise ValueError(f"runs of one group must share {field}, got {sorted(values)}; group runs by "
                             f"{', '.join(SHARED_FIELDS)}")
    names = [(config.method, config.seed, config.density) for config in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"a group holds the same run twice: {names}")


def group_memory_bytes(layer_shapes: Sequence[tuple[int, int]], runs: int, batch_size: int,
                       dataset_bytes: int = 0) -> int:
    """Device memory a group of ``runs`` needs (an upper estimate), for choosing the group size.

    Per weight element: the weight, its gradient, the momentum buffer, the captured dense gradient of an
    update step (4 bytes each) and the mask (1 byte); activations of the training step (inputs kept for
    backward, outputs and their gradients) and of an evaluation batch; plus the dataset on the device and
    a 25 % allowance for the allocator and temporaries. ``layer_shapes`` are ``(in, out)`` of every layer.
    """
    weights = sum(n_in * n_out + n_out for n_in, n_out in layer_shapes)
    widths = sum(n_in + n_out for n_in, n_out in layer_shapes)
    state = weights * (4 * 4 + 1)
    activations = max(3 * batch_size, EVALUATION_BATCH) * widths * 4
    return int(1.25 * (runs * (state + activations) + dataset_bytes))


def max_group_size(memory_bytes: int, layer_shapes: Sequence[tuple[int, int]], batch_size: int,
                   dataset_bytes: int = 0) -> int:
    """The largest group that :func:`group_memory_bytes` fits into ``memory_bytes`` (at least 1)."""
    per_run = group_memory_bytes(layer_shapes, 1, batch_size) - group_memory_bytes(layer_shapes, 0, batch_size)
    return max(1, int((memory_bytes - group_memory_bytes(layer_shapes, 0, batch_size, dataset_bytes)) // per_run))


def model_layer_shapes(model: str, dataset: str, dim: int) -> list[tuple[int, int]]:
    """``(in, out)`` of every linear layer of a model (built on the meta device: no memory, no drawing)."""
    spec = DATASETS[dataset]
    with torch.device("meta"):
        built = build_model(model, spec.input_shape, spec.num_classes, dim=dim, sparse=False)
    return [(m.in_features, m.out_features) for m in built.modules() if isinstance(m, (nn.Linear, SparseLinear))]


def dataset_bytes(dataset: str, max_train_samples: int | None = None, max_test_samples: int | None = None) -> int:
    """Bytes of a dataset's float32 splits on the device (an estimate when the split sizes are unknown)."""
    spec = DATASETS[dataset]
    train_size, test_size = spec.split_sizes or (100_000, 20_000)
    samples = min(train_size, max_train_samples or train_size) + min(test_size, max_test_samples or test_size)
    return samples * math.prod(spec.input_shape) * 4


def check_group_fits(configs: Sequence[TrainConfig], device: torch.device) -> None:
    """On CUDA, refuse a group that :func:`group_memory_bytes` says the device cannot hold, naming the fix."""
    if device.type != "cuda":
        return
    shared = configs[0]
    shapes = model_layer_shapes(shared.model, shared.dataset, shared.dim)
    data = dataset_bytes(shared.dataset, shared.max_train_samples, shared.max_test_samples)
    total = torch.cuda.get_device_properties(device).total_memory
    if group_memory_bytes(shapes, len(configs), shared.batch_size, data) > total:
        fit = max_group_size(total, shapes, shared.batch_size, data)
        raise RuntimeError(f"a group of {len(configs)} runs of {shared.model} dim {shared.dim} on {shared.dataset} "
                           f"needs more than the {total / 2**30:.0f} GiB of {device}; set group_size: {fit} or less")


@dataclass
class Member:
    """One run of a group: its configuration, where it writes, and its own training state."""

    config: TrainConfig
    out_dir: Path
    tracker: Tracker
    evolution: Evolution
    shuffle: torch.Generator
    history: History
    initial_links: list[int]
    initial_masks: list[torch.Tensor]
    params: dict[str, Any]


def group_losses(model: GroupedMLP, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy on its batch ``index[k]`` (a ``(K, B)`` tensor of sample indices)."""
    logits = model(x[index])
    losses = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="none")
    return losses.view(index.shape).mean(1)


def train_group(configs: Sequence[TrainConfig], out_dirs: Sequence[str | Path], checkpoint: str | Path,
                trackers: Sequence[Tracker] | None = None, compile_mode: str = "off") -> list[dict[str, Any]]:
    """Train every run of ``configs`` in one group, member ``k`` writing to ``out_dirs[k]``.

    ``checkpoint`` is the group's checkpoint file (written after every epoch; a later call resumes from it).
    ``compile_mode`` compiles the forward and loss with ``torch.compile`` (``reduce-overhead`` adds CUDA
    graphs); ``off`` runs eagerly. Returns the members' ``metrics.json`` contents.
    """
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode: {compile_mode!r} is not one of {COMPILE_MODES}")
    configs = list(configs)
    check_group(configs)
    if len(out_dirs) != len(configs) or (trackers is not None and len(trackers) != len(configs)):
        raise ValueError(f"{len(configs)} runs need as many output folders and trackers")
    out_dirs = [Path(folder) for folder in out_dirs]
    trackers = list(trackers) if trackers is not None else [Tracker(c.experiment, enabled=False) for c in configs]
    device = resolve_device(configs[0].device)
    with deterministic_kernels(device):
        return _train_group(configs, out_dirs, Path(checkpoint), trackers, compile_mode, device)


def _train_group(configs: list[TrainConfig], out_dirs: list[Path], checkpoint: Path, trackers: list[Tracker],
                 compile_mode: str, device: torch.device) -> list[dict[str, Any]]:
    shared = configs[0]
    check_group_fits(configs, device)
    data = load_run_data(shared)

    built, members = [], []
    for config, out_dir, tracker in zip(configs, out_dirs, trackers):
        out_dir.mkdir(parents=True, exist_ok=True)
        tracker.spool_path = tracker.spool_path or out_dir / RUN_SPOOL
        seed_everything(config.seed)
        method = configured_method(config)
        built.append((method, build_run(config, method, data.train_inputs)))
    model = GroupedMLP([run.model for _, run in built]).to(device)
    optimizer = GroupedSGD(list(model.parameters()), lr=[c.lr * lr_factor(0, c) for c in configs],
                           momentum=[c.momentum for c in configs], weight_decay=[c.weight_decay for c in configs])
    for index, ((method, run), config, out_dir, tracker) in enumerate(zip(built, configs, out_dirs, trackers)):
        views = [layer.member(index, sparse.links) for layer, sparse in zip(model.hidden, run.layers)]
        evolution = Evolution(method, views, optimizer, torch.Generator(device=device).manual_seed(config.seed + 1),
                              final_links=run.final_links)
        members.append(Member(config, out_dir, tracker, evolution, torch.Generator().manual_seed(config.seed + 2),
                              History(anp=[evolution.activity().anp] if views else []), run.initial_links,
                              run.initial_masks,
                              run_params(config, method, device, "masked" if method.sparse else "dense")))
    del built

    start_epoch = 0
    partial = None
    if checkpoint.exists():
        start_epoch, partial = _resume(checkpoint, configs, model, optimizer, members, device)

    x_train, y_train = data.train.inputs.flatten(1).to(device), data.train.targets.to(device)
    test = TensorBatches(data.test.inputs.flatten(1).to(device), data.test.targets.to(device), shared.batch_size,
                         eval_batch_size=EVALUATION_BATCH)
    n_train = len(x_train)
    steps_per_epoch = math.ceil(n_train / shared.batch_size)
    total_steps = steps_per_epoch * shared.epochs
    losses_of: Callable = group_losses if compile_mode == "off" else torch.compile(group_losses, mode=compile_mode)
    # A member's epoch_seconds are the group's: the wall time of an epoch of all members together.
    group_record = {"size": len(members), "members": [f"{c.method}/seed{c.seed}" for c in configs],
                    "compile": compile_mode}
    group_tags = {"cht.group_size": len(members),
                  "cht.group": ",".join(f"{c.method}/seed{c.seed}" for c in configs)}

    with ExitStack() as runs:
        for member in members:
            runs.enter_context(member.tracker.run())
        stop = runs.enter_context(StopSignal())
        if start_epoch == 0 and partial is None:
            for member in members:
                open_run(member.tracker, member.config, member.out_dir, member.params, device, data.checksum,
                         member.initial_masks)
                member.tracker.set_tags(group_tags)
        for member in members:  # a workflow manager removes a killed job's outputs
            if not (member.out_dir / INITIAL_MASKS).exists():
                save_tensors_atomic(member.out_dir / INITIAL_MASKS, member.initial_masks)
        for epoch in range(start_epoch, shared.epochs):
            skip, done_losses, done_seconds = ((partial["batches"], partial["loss"], partial["seconds"])
                                               if partial else (0, [0.0] * len(members), 0.0))
            partial = None
            started = time.perf_counter() - done_seconds
            optimizer.set_lr([c.lr * lr_factor(epoch, c) for c in configs])
            model.train()
            epoch_start = [m.shuffle.get_state() for m in members]
            orders = torch.stack([torch.randperm(n_train, generator=m.shuffle) for m in members]).to(device)
            total_loss = torch.tensor(done_losses, device=device)
            pending = [0] * len(members)
            batches = tqdm(range(skip, steps_per_epoch), initial=skip, total=steps_per_epoch,
                           desc=f"group of {len(members)} epoch {epoch + 1}/{shared.epochs}",
                           leave=False, disable=not shared.progress)
            for batch in batches:
                index = orders[:, batch * shared.batch_size:(batch + 1) * shared.batch_size]
                steps_done = epoch * steps_per_epoch + batch + 1
                epoch_end = batch == steps_per_epoch - 1
                due = [m.evolution.due(epoch + 1, shared.epochs, steps_done, total_steps, epoch_end) for m in members]
                for member, update_due in zip(members, due):
                    member.evolution.capture_gradients(update_due)
                optimizer.zero_grad()
                losses = losses_of(model, x_train, y_train, index)
                losses.sum().backward()
                for layer in model.hidden:
                    layer.mask_gradient()
                optimizer.step()
                model.after_step()
                total_loss += losses.detach() * index.shape[1]
                for k, member in enumerate(members):
                    if due[k] and not epoch_end:
                        record_update(member.evolution, member.history, member.tracker, steps_done, total_steps,
                                      epoch + 1)
                    elif due[k]:
                        pending[k] = steps_done
                if stop.received and not epoch_end:
                    _save(checkpoint, epoch - 1, configs, model, optimizer, members, epoch_start,
                          {"batches": batch + 1, "loss": total_loss.tolist(), "seconds": time.perf_counter() - started})
                    stopped([m.tracker for m in members], stop, checkpoint, epoch, batch + 1, steps_per_epoch,
                            steps_done)
            train_losses = [value / n_train for value in total_loss.tolist()]
            for member, train_loss in zip(members, train_losses):
                check_finite(train_loss, epoch, member.config)
            accuracies = evaluate(model, test)
            for k, member in enumerate(members):
                member.history.test_accuracy.append(accuracies[k])
                member.history.train_loss.append(train_losses[k])
                if pending[k]:
                    record_update(member.evolution, member.history, member.tracker, pending[k], total_steps,
                                  epoch + 1)
            seconds = time.perf_counter() - started
            for member in members:  # the lr logged is the next epoch's, as after a single run's scheduler step
                member.history.epoch_seconds.append(seconds)
                log_epoch(member.tracker, member.config, member.history, epoch,
                          member.config.lr * lr_factor(epoch + 1, member.config))
            _save(checkpoint, epoch, configs, model, optimizer, members, [m.shuffle.get_state() for m in members])
            if stop.received and epoch < shared.epochs - 1:
                stopped([m.tracker for m in members], stop, checkpoint, epoch + 1, 0, steps_per_epoch,
                        (epoch + 1) * steps_per_epoch)

        results = []
        for member in members:
            metrics = finish_run(member.config, member.out_dir, member.tracker, member.history, member.evolution,
                                 member.initial_links, device, data.checksum, member.params, {"group": group_record})
            results.append(metrics)
    return results


def _parameter_masks(model: GroupedMLP, optimizer: GroupedSGD) -> list[torch.Tensor | None]:
    """Per optimiser parameter, the mask off which it and its momentum are zero (``None``: dense)."""
    masks = {id(layer.weight): layer.mask for layer in model.hidden}
    return [masks.get(id(p)) for p in optimizer.params]


def _pack(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The entries on the mask only: a checkpoint of sparse members costs their links, not their positions."""
    return (tensor[mask] if mask is not None else tensor).detach().cpu()


def _unpack(values: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return values.to(like.device)
    full = torch.zeros_like(like)
    full[mask] = values.to(like.device)
    return full


def _save(path: Path, epoch: int, configs: Sequence[TrainConfig], model: GroupedMLP, optimizer: GroupedSGD,
          members: Sequence[Member], shuffle_states: Sequence[torch.Tensor],
          partial_epoch: dict[str, Any] | None = None) -> None:
    """Save the group after ``epoch`` (0-based; -1: none yet) and, when stopped mid-epoch, the part done of
    the next one (``shuffle_states`` are then the members' shuffle states it started from)."""
    masks = _parameter_masks(model, optimizer)
    state = {
        "identities": [config.identity() for config in configs], "epoch": epoch,
        "parameters": [_pack(p, mask) for p, mask in zip(optimizer.params, masks)],
        "momentum": [None if b is None else _pack(b, mask) for b, mask in zip(optimizer.buffers, masks)],
        "torch_rng": torch.get_rng_state(), "partial_epoch": partial_epoch,
        "members": [{
            "links": [layer.links.cpu() for layer in member.evolution.layers],
            "evolution": member.evolution.state_dict(), "shuffle_generator": shuffle,
            "history": member.history.__dict__, "mlflow_run_id": member.tracker.run_id,
            "initial_links": member.initial_links, "initial_masks": member.initial_masks,
        } for member, shuffle in zip(members, shuffle_states)],
    }
    save_tensors_atomic(path, state)


@torch.no_grad()
def _resume(path: Path, configs: Sequence[TrainConfig], model: GroupedMLP, optimizer: GroupedSGD,
            members: Sequence[Member], device: torch.device) -> tuple[int, dict[str, Any] | None]:
    """Load the group checkpoint into the freshly built group; the epoch to continue from and the part of it
    done before a stop (``None``: none).

    Links first: they give the masks, which place the saved weights and momentum (dense members keep
    their all-ones masks)."""
    state = load_tensors(path, map_location="cpu")
    if state["identities"] != [config.identity() for config in configs]:
        raise RuntimeError(f"{path} was written by a different group of runs; delete it or choose another "
                           f"checkpoint path")
    for index, (member, saved) in enumerate(zip(members, state["members"])):
        for grouped, layer, links in zip(model.hidden, member.evolution.layers, saved["links"]):
            layer.links = links.to(device)
            grouped.mask[index] = L.to_mask(layer.links, layer.shape)
        member.evolution.load_state_dict(saved["evolution"])
        member.shuffle.set_state(saved["shuffle_generator"])
        member.history = History(**saved["history"])
        member.initial_links, member.initial_masks = saved["initial_links"], saved["initial_masks"]
        member.tracker.resume_run_id = saved["mlflow_run_id"]
    masks = _parameter_masks(model, optimizer)
    for p, mask, values in zip(optimizer.params, masks, state["parameters"]):
        p.copy_(_unpack(values, mask, p))
    optimizer.buffers = [None if values is None else _unpack(values, mask, p)
                         for p, mask, values in zip(optimizer.params, masks, state["momentum"])]
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"] + 1, state.get("partial_epoch")
