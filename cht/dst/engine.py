"""The evolution engine: one code path for every DST method.

Each update removes links (the method's removal rule), optionally percolates dead hidden neurons
across consecutive layers, regrows as many links as were removed (the regrowth rule), masks weights and
optimiser state, and records what happened. Removed-then-regrown links keep their weight; links that
are new start at zero.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cht.analysis.graph import active_neurons
from cht.dst.methods import Method
from cht.dst.percolation import percolate
from cht.dst.regrowth import RegrowthContext
from cht.dst.removal import RemovalContext
from cht.sparse.layer import SparseLinear
from cht.sparse.optim import mask_optimizer_state


@dataclass
class LayerChange:
    """What one update did to one layer."""

    removed: int
    percolated: int
    regrown: int
    overlap: float
    links: int


@dataclass
class EvolutionRecord:
    """What one update did to the network, as logged to mlflow and metrics.json."""

    epoch: int
    step: int
    progress: float
    zeta: float
    layers: list[LayerChange]
    active_per_layer: list[int]
    anp: float
    seconds: dict[str, float] = field(default_factory=dict)
    frozen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Evolution:
    """Drives a method's topology updates over a model's sparse layers."""

    def __init__(self, method: Method, layers: list[SparseLinear], optimizer: torch.optim.Optimizer,
                 generator: torch.Generator) -> None:
        self.method = method
        self.layers = layers
        self.optimizer = optimizer
        self.generator = generator
        self.frozen = False

    def due(self, epochs_done: int, total_epochs: int, steps_done: int, total_steps: int,
            epoch_end: bool) -> bool:
        """Whether an update follows the optimiser step that brings training to these counts."""
        if self.frozen or not self.method.evolves:
            return False
        schedule = self.method.schedule
        if schedule.unit == "step":
            return schedule.is_update(steps_done, total_steps)
        return epoch_end and schedule.is_update(epochs_done, total_epochs)

    def capture_gradients(self, enabled: bool) -> None:
        """Ask the layers to keep the dense gradient of the next backward pass (for gradient regrowth)."""
        for layer in self.layers:
            layer.capture_dense_grad = enabled and self.method.needs_dense_grad
            if not layer.capture_dense_grad:
                layer.dense_grad = None

    @torch.no_grad()
    def update(self, progress: float, epoch: int, step: int) -> EvolutionRecord:
        """Run one removal → percolation → regrowth update on every sparse layer."""
        method = self.method
        zeta = method.schedule.fraction(progress)
        seconds: dict[str, float] = {}

        start = time.perf_counter()
        removal_context = RemovalContext(progress=progress, generator=self.generator)
        removed = [method.removal(layer, zeta, removal_context) for layer in self.layers]
        kept = [layer.mask & ~gone for layer, gone in zip(self.layers, removed)]
        if method.percolation:
            kept = [a.t() for a in percolate([k.t() for k in kept])]
        seconds["removal"] = time.perf_counter() - start

        start = time.perf_counter()
        changes = []
        for layer, gone, survivors in zip(self.layers, removed, kept):
            dropped = layer.mask & ~survivors
            n_missing = layer.n_links - int(survivors.sum())
            context = RegrowthContext(mask=survivors, progress=progress, generator=self.generator,
                                      timings=seconds)
            grown = method.regrowth(layer, ~survivors, n_missing, context)
            regrown = int(grown.sum())
            overlap = int((grown & dropped).sum()) / regrown if regrown else 0.0
            layer.set_mask(survivors | grown)
            changes.append(LayerChange(removed=int(gone.sum()), percolated=int(dropped.sum() - gone.sum()),
                                       regrown=regrown, overlap=overlap, links=layer.n_links))
        seconds["regrowth"] = time.perf_counter() - start
        mask_optimizer_state(self.optimizer, self.layers)

        if method.early_stop is not None and all(c.overlap > method.early_stop for c in changes):
            self.frozen = True
        activity = active_neurons([layer.adjacency for layer in self.layers])
        return EvolutionRecord(epoch=epoch, step=step, progress=progress, zeta=zeta, layers=changes,
                               active_per_layer=activity.per_layer, anp=activity.anp, seconds=seconds,
                               frozen=self.frozen)

    def state_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frozen = state["frozen"]
        self.generator.set_state(state["generator"])
