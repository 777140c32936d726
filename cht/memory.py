"""Memory before work: a run's peak memory, estimated before it allocates anything, against what it may use.

A run too large for its machine used to end in the kernel's OOM killer, silently and after minutes of
set-up. :func:`check_run_memory` refuses it first, with one line: the estimate, what is available (RAM,
the cgroup or SLURM job limit, or CUDA memory) and the fix.

The estimate adds, in bytes (the constants were fitted to peaks measured on the project's CPU machine,
``bench/memory_estimate.py``, and hold within ±25% there):

* ``runtime``: the interpreter with torch and the libraries (host memory only);
* ``data``: the training and test sets held in memory as float32 (streamed datasets: a few batches);
* ``dense layers``: weight, gradient and momentum of every dense parameter;
* ``sparse layers``: on the masked storage a dense weight, its gradient, momentum and mask per position;
  on the sparse storage values, gradient, momentum and the link indices of both orientations per link;
  at the method's initial density (GraNet, GMP, CHTss start denser), with ``storage: auto`` choosing per
  layer as training does;
* ``activations``: the batch's activations and their gradients;
* ``evolution``: the largest transient of a topology update, on the largest layer (CH scores, dense
  gradients, the selection's work space).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cht.config import TrainConfig
from cht.dst import CHRegrowth, GradientRegrowth, Method, SoftCHRegrowth

GIB = 1024**3
#: Host memory of the interpreter with torch, numpy, scipy and the library imported (0.84 GiB) and training (the
#: allocator's caches, the checkpoint being written): the fit to the peaks of bench/memory_estimate.py.
RUNTIME_BYTES = int(0.95 * GIB)
#: Masked storage, per position: float32 weight, gradient, momentum and the masked gradient's temporary, bool mask.
MASKED_BYTES_PER_POSITION = 4 + 4 + 4 + 4 + 1
#: Sparse storage, per link: int64 position, float32 value, gradient and momentum, and the int64 indices of
#: the by-output and by-input orientations (columns, order, rows).
SPARSE_BYTES_PER_LINK = 8 + 4 + 4 + 4 + 3 * 8
#: Masked storage keeps the link positions too.
LINK_INDEX_BYTES = 8
#: Dense parameters: weight, gradient, momentum.
DENSE_BYTES_PER_PARAMETER = 12
#: Transients of an update on the largest layer, per position: CH scores and candidate masks (float32 and
#: float64 work arrays of the scorers, the selection's keys); gradient rules: the dense gradient and top-k.
CH_BYTES_PER_POSITION = 48
GRADIENT_BYTES_PER_POSITION = 17
#: Streamed datasets (CNN inputs) keep a few batches in flight per loader worker.
STREAMED_BATCHES = 8


class MemoryRequirementError(RuntimeError):
    """The run cannot fit in the memory available to it; the message gives the estimate and the fix."""


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of a run, by part, on ``device``."""

    device: str
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        largest = sorted(self.parts.items(), key=lambda item: -item[1])[:3]
        return f"{self.total / GIB:.1f} GiB (" + ", ".join(f"{name} {value / GIB:.1f}" for name, value in largest) + ")"


def layer_shapes(config: TrainConfig, sparse: bool) -> tuple[list[tuple[int, int]], int, list[int]]:
    """Sparse layers' ``(out, in)`` shapes, the dense parameter count and the widths of the model, built on
    the meta device (nothing is allocated)."""
    from cht.data import DATASETS
    from cht.models import build_model
    from cht.sparse import sparse_layers

    spec = DATASETS[config.dataset]
    with torch.device("meta"):
        model = build_model(config.model, spec.input_shape, spec.num_classes, dim=config.dim, sparse=sparse)
    layers = sparse_layers(model)
    shapes = [(layer.out_features, layer.in_features) for layer in layers]
    in_sparse = {id(parameter) for layer in layers for parameter in layer.parameters(recurse=False)}
    dense = sum(parameter.numel() for parameter in model.parameters() if id(parameter) not in in_sparse)
    widths = [math.prod(spec.input_shape)] + [module.out_features for module in model.modules()
                                               if hasattr(module, "out_features")]
    return shapes, dense, widths


def estimate_run_memory(config: TrainConfig, method: Method, device: torch.device, storage: str,
                        sparse_max_density: float) -> MemoryEstimate:
    """The run's peak memory on ``device`` (host memory for a CPU run, device memory for CUDA)."""
    from cht.data import DATASETS
    from cht.data.batches import uses_loader
    from cht.sparse import link_counts

    spec = DATASETS[config.dataset]
    shapes, dense_parameters, widths = layer_shapes(config, method.sparse)
    estimate = MemoryEstimate(str(device))
    if device.type == "cpu":
        estimate.parts["runtime"] = RUNTIME_BYTES
    sample_bytes = 4 * math.prod(spec.input_shape)
    if spec.split_sizes is not None and not uses_loader(config.dataset, config.augmentation()):
        train, test = spec.split_sizes
        train = min(train, config.max_train_samples or train)
        test = min(test, config.max_test_samples or test)
        estimate.parts["data"] = (train + test) * sample_bytes
    else:
        estimate.parts["data"] = STREAMED_BATCHES * max(config.num_workers or 1, 1) * config.batch_size * sample_bytes
    estimate.parts["dense layers"] = DENSE_BYTES_PER_PARAMETER * dense_parameters
    positions = [rows * cols for rows, cols in shapes]
    if method.sparse and shapes:
        initial = method.initial_density(config.density)
        links = link_counts([(cols, rows) for rows, cols in shapes], initial, config.density_distribution)
        layer_bytes = 0
        for count, total in zip(links, positions):
            masked = storage == "masked" or (storage == "auto" and count / total > sparse_max_density)
            layer_bytes += (MASKED_BYTES_PER_POSITION * total + LINK_INDEX_BYTES * count if masked
                            else SPARSE_BYTES_PER_LINK * count)
        estimate.parts["sparse layers"] = layer_bytes
        if method.evolves:
            rule = method.regrowth
            per_position = (CH_BYTES_PER_POSITION if isinstance(rule, (CHRegrowth, SoftCHRegrowth))
                            else GRADIENT_BYTES_PER_POSITION if isinstance(rule, GradientRegrowth) or
                            method.needs_dense_grad else 1)
            estimate.parts["evolution"] = per_position * max(positions)
    estimate.parts["activations"] = 4 * 4 * config.batch_size * sum(widths)
    return estimate


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes the run may use and where that limit comes from: the CUDA device's free memory, or the least of
    the machine's available RAM, the cgroup's limit and the SLURM job's ``--mem``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory of {torch.cuda.get_device_name(device)}"
    limits = [(_meminfo_available(), "available RAM")]
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append((cgroup, "the cgroup's memory limit"))
    slurm = _slurm_limit()
    if slurm is not None:
        limits.append((slurm, "the SLURM job's mem"))
    known = [(value, source) for value, source in limits if value is not None]
    return min(known) if known else (0, "unknown")


def check_run_memory(estimate: MemoryEstimate, available: tuple[int, str], storage: str) -> None:
    """Raise :class:`MemoryRequirementError` when the estimate exceeds what is available."""
    limit, source = available
    if limit <= 0 or estimate.total <= limit:
        return
    fixes = ["a smaller --dim", "a smaller --batch-size"]
    if storage in ("masked", "auto") and "sparse layers" in estimate.parts:
        fixes.insert(0, "--storage sparse")
    raise MemoryRequirementError(
        f"this run needs about {estimate.describe()} of memory on {estimate.device}, but {limit / GIB:.1f} GiB is "
        f"available ({source}); use {', '.join(fixes[:-1])} or {fixes[-1]}")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit() -> int | None:
    """The cgroup v2 limit of this process less its current usage (None without a limit)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        usage = int(Path("/sys/fs/cgroup/memory.current").read_text())
        return max(int(limit) - usage, 0)
    except (OSError, ValueError):
        return None


def _slurm_limit() -> int | None:
    """``--mem`` (``SLURM_MEM_PER_NODE``) or ``--mem-per-cpu`` × CPUs of the job, in bytes (MiB in SLURM)."""
    per_node = os.environ.get("SLURM_MEM_PER_NODE")
    if per_node and per_node.isdigit() and int(per_node) > 0:
        return int(per_node) * 1024**2
    per_cpu, cpus = os.environ.get("SLURM_MEM_PER_CPU"), os.environ.get("SLURM_CPUS_ON_NODE", "1")
    if per_cpu and per_cpu.isdigit() and cpus.isdigit():
        return int(per_cpu) * int(cpus) * 1024**2
    return None
