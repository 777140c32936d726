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
  :class:`cht.sparse.stacked.GroupMember`, the stacked storage of the link interface (slice ``k``);
  dense (FC) members have an all-ones mask and no evolution;
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from cht.config import TrainConfig
from cht.data import DATASETS
from cht.models import build_model
from cht.sparse import links as L
from cht.sparse.layer import SparseLinear
from cht.sparse.stacked import GroupedLinear, GroupedSGD
from cht.tracking import Tracker
from cht.tracking_spool import RUN_SPOOL
from cht.data.batches import TensorBatches
from cht.run.lifecycle import Run, epoch_lr, read_checkpoint, train_runs
from cht.train import (BuiltRun, RunData, build_run, configured_method, deterministic_kernels, evaluate,
                       load_run_data, resolve_device, run_params, seed_everything)

# Fields every member of a group must share: they fix the data, the shapes and the step count.
SHARED_FIELDS = ("dataset", "model", "dim", "batch_size", "epochs", "max_train_samples", "max_test_samples",
                 "data_root", "device")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
EVALUATION_BATCH = 1000


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
    check_group_fits(configs, device)
    data = load_run_data(configs[0])
    methods, built = [], []
    for config, out_dir, tracker in zip(configs, out_dirs, trackers):
        out_dir.mkdir(parents=True, exist_ok=True)
        tracker.spool_path = tracker.spool_path or out_dir / RUN_SPOOL
        seed_everything(config.seed)
        methods.append(configured_method(config))
        built.append(build_run(config, methods[-1], data.train_inputs))
    state = read_checkpoint(checkpoint, configs)
    stepper = GroupStepper(configs, built, data, device, compile_mode, state and state["stepper"])
    runs = [Run.start(config, method, views, stepper.optimizer, out_dir, tracker, run.initial_masks, run.final_links,
                      run_params(config, method, device, "masked" if method.sparse else "dense"), device)
            for config, method, views, out_dir, tracker, run
            in zip(configs, methods, stepper.views, out_dirs, trackers, built)]
    del built  # the members' single models: the group holds copies
    members = ",".join(f"{c.method}/seed{c.seed}" for c in configs)
    # A member's epoch_seconds are the group's: the wall time of an epoch of all members together.
    return train_runs(stepper, runs, checkpoint, state, data.checksum,
                      tags={"cht.group_size": len(configs), "cht.group": members},
                      extra={"group": {"size": len(configs), "members": members.split(","), "compile": compile_mode}})


class GroupStepper:
    """``K`` runs stacked in a :class:`GroupedMLP`, stepped by one :class:`GroupedSGD`; member ``k`` draws its
    batches from its own shuffle generator (seeded as a single run's batch source, seed + 2)."""

    def __init__(self, configs: Sequence[TrainConfig], built: Sequence[BuiltRun], data: RunData,
                 device: torch.device, compile_mode: str, state: dict[str, Any] | None = None) -> None:
        """Stack the freshly built runs on ``device``; with ``state`` (a checkpoint's ``stepper`` entry), continue
        from it (links first: they give the masks, which place the saved weights and momentum; dense members
        keep their all-ones masks)."""
        self.configs, self.device, self.name = list(configs), device, f"group of {len(configs)}"
        self.model = GroupedMLP([run.model for run in built]).to(device)
        self.optimizer = GroupedSGD(list(self.model.parameters()), lr=[epoch_lr(0, c) for c in configs],
                                    momentum=[c.momentum for c in configs],
                                    weight_decay=[c.weight_decay for c in configs])
        links = state["links"] if state is not None else [[layer.links for layer in run.layers] for run in built]
        #: each member's link interfaces, one per hidden layer it keeps sparse (none for a dense member)
        self.views = [[grouped.member(index, layer_links) for grouped, layer_links in zip(self.model.hidden, member)]
                      for index, member in enumerate(links)]
        if state is not None:
            self._load(state)
        self.shuffles = [torch.Generator().manual_seed(config.seed + 2) for config in configs]
        batch_size = configs[0].batch_size
        self.x_train, self.y_train = data.train.inputs.flatten(1).to(device), data.train.targets.to(device)
        self.test = TensorBatches(data.test.inputs.flatten(1).to(device), data.test.targets.to(device), batch_size,
                                  eval_batch_size=EVALUATION_BATCH)
        self.n_train = len(self.x_train)
        self.steps_per_epoch = math.ceil(self.n_train / batch_size)
        self.losses_of: Callable = (group_losses if compile_mode == "off"
                                    else torch.compile(group_losses, mode=compile_mode))

    def begin_epoch(self, epoch: int) -> None:
        self.optimizer.set_lr([epoch_lr(epoch, config) for config in self.configs])
        self.model.train()

    def data_positions(self) -> list[Any]:
        return [shuffle.get_state() for shuffle in self.shuffles]

    def set_data_positions(self, positions: Sequence[Any]) -> None:
        for shuffle, position in zip(self.shuffles, positions):
            shuffle.set_state(position)

    def batches(self, epoch: int, skip: int) -> Iterator[torch.Tensor]:
        """Per batch, the ``(K, B)`` sample indices of every member."""
        batch_size = self.configs[0].batch_size
        orders = torch.stack([torch.randperm(self.n_train, generator=shuffle) for shuffle in self.shuffles])
        orders = orders.to(self.device)
        for batch in range(skip, self.steps_per_epoch):
            yield orders[:, batch * batch_size:(batch + 1) * batch_size]

    def step(self, index: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad()
        losses = self.losses_of(self.model, self.x_train, self.y_train, index)
        losses.sum().backward()
        for layer in self.model.hidden:
            layer.mask_gradient()
        self.optimizer.step()
        self.model.after_step()
        return losses.detach() * index.shape[1]

    def evaluate(self) -> list[float]:
        return evaluate(self.model, self.test)

    def after_update(self, index: int) -> None:
        """Nothing to restore: a member's links are its slice of the stacked mask."""

    def _masks(self) -> list[torch.Tensor | None]:
        """Per optimiser parameter, the mask off which it and its momentum are zero (``None``: dense)."""
        masks = {id(layer.weight): layer.mask for layer in self.model.hidden}
        return [masks.get(id(p)) for p in self.optimizer.params]

    def state_dict(self) -> dict[str, Any]:
        masks = self._masks()
        return {"links": [[view.links.cpu() for view in views] for views in self.views],
                "parameters": [_pack(p, mask) for p, mask in zip(self.optimizer.params, masks)],
                "momentum": [None if b is None else _pack(b, mask) for b, mask in zip(self.optimizer.buffers, masks)]}

    @torch.no_grad()
    def _load(self, state: dict[str, Any]) -> None:
        for index, views in enumerate(self.views):
            for grouped, view in zip(self.model.hidden, views):
                grouped.mask[index] = L.to_mask(view.links, view.shape)
        masks = self._masks()
        for p, mask, values in zip(self.optimizer.params, masks, state["parameters"]):
            p.copy_(_unpack(values, mask, p))
        self.optimizer.buffers = [None if values is None else _unpack(values, mask, p)
                                  for p, mask, values in zip(self.optimizer.params, masks, state["momentum"])]


def _pack(tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The entries on the mask only: a checkpoint of sparse members costs their links, not their positions."""
    return (tensor[mask] if mask is not None else tensor).detach().cpu()


def _unpack(values: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return values.to(like.device)
    full = torch.zeros_like(like)
    full[mask] = values.to(like.device)
    return full
