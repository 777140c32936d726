"""The evolution engine: one code path for every DST method.

Each update, per sparse layer:

1. **prune** to the density schedule's link count when it fell below the current count (smallest ``|w|``;
   GraNet and CHTss); constant-density methods skip this phase;
2. **remove** links with the method's removal rule and fraction ζ;
3. optionally **percolate**: drop the links of hidden neurons left without inputs or outputs, across
   consecutive layers;
4. **regrow** ``target − survivors`` links with the regrowth rule, so every layer ends the step on the
   schedule's exact link count (the ICLR-faithful CH selection may land a few links off; the next step
   regrows towards the target again);
5. hand each layer its new link set (the layer carries weights and optimiser state) and record what
   happened.

The engine speaks to layers only through their link interface (:class:`cht.sparse.SparseLinear`): it
works the same on the masked and the sparse storage and never allocates a dense matrix itself.

Removed-then-regrown links keep their weight; links that are new start at zero; pruned, removed and
percolated links that stay out have weight zero. Early stop freezes the topology once regrowth keeps
re-creating the links it just removed (overlap above the threshold in every layer), but never while a
density schedule still has links to prune. A run with too few updates to finish its density schedule
prunes straight to the target at its last update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from cht.analysis.graph import ActiveNeurons, active_neurons_of_links
from cht.dst.methods import Method
from cht.dst.percolation import percolate
from cht.dst.regrowth import RegrowthContext
from cht.dst.removal import MagnitudeTopKRemoval, RemovalContext
from cht.dst.timing import timed
from cht.sparse import links as L
from cht.sparse.layer import SparseLinear

# Density schedules prune by magnitude, as gradual magnitude pruning (GraNet) and the CHTss code do.
MAGNITUDE_PRUNING = MagnitudeTopKRemoval()


@dataclass
class LayerChange:
    """What one update did to one layer.

    ``pruned``: links dropped to follow the density schedule; ``removed``: by the removal rule;
    ``percolated``: by percolation; ``regrown``: links grown (``fallback`` of them without a positive
    CH score); ``overlap``: links regrown that had just been removed or percolated, as a share of the
    links the step asked the regrowth rule for (the released early stop divides by that count, which
    differs from ``regrown`` when threshold selection grows ties or candidates run short:
    ``sparse.py`` at dfbd68d, ``mlp_and_cnn/dst_scheduler.py`` at d1677b5);
    ``links``: count after the step, ``target``: the schedule's count for this step.
    """

    removed: int
    percolated: int
    regrown: int
    overlap: float
    links: int
    pruned: int = 0
    target: int = 0
    fallback: int = 0


@dataclass
class EvolutionRecord:
    """What one update did to the network, as logged to mlflow and metrics.json.

    ``seconds`` holds wall times (synchronised on CUDA): ``removal`` (density pruning and the removal
    rule), ``percolation``, ``regrowth`` (the whole regrowth phase) and, for CH rules, the ``scoring``
    and ``selection`` parts of it.
    """

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
    """Drives a method's topology updates over a model's sparse layers.

    ``final_links`` are the per-layer link counts at the end of the density schedule (the target
    density). They default to the layers' current counts, which is right for constant-density methods;
    methods that start denser (``method.initial_density(target) > target``) need them passed.
    The layers' counts at construction are taken as the schedule's starting counts.
    """

    def __init__(self, method: Method, layers: list[SparseLinear], optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, final_links: Sequence[int] | None = None) -> None:
        self.method = method
        self.layers = layers
        self.optimizer = optimizer
        self.generator = generator
        self.initial_links = [layer.n_links for layer in layers]
        self.final_links = list(final_links) if final_links is not None else list(self.initial_links)
        if len(self.final_links) != len(layers):
            raise ValueError(f"final_links has {len(self.final_links)} entries for {len(layers)} sparse layers")
        for index, (layer, count) in enumerate(zip(layers, self.final_links)):
            positions = layer.in_features * layer.out_features
            if not 0 <= count <= positions:
                raise ValueError(f"final_links[{index}] = {count} does not fit a layer of {positions} positions")
        self.frozen = False
        self.layer_signals = [False] * len(layers)
        self.updates = 0
        self.signal_updates: list[int | None] = [None] * len(layers)
        self.closing = False

    def due(self, epochs_done: int, total_epochs: int, steps_done: int, total_steps: int,
            epoch_end: bool) -> bool:
        """Whether an update follows the optimiser step that brings training to these counts."""
        if self.frozen or not self.method.evolves:
            return False
        schedule = self.method.schedule
        count, total = (steps_done, total_steps) if schedule.unit == "step" else (epochs_done, total_epochs)
        if (schedule.unit == "epoch" and not epoch_end) or not schedule.is_update(count, total):
            return False
        self.closing = not schedule.is_update(count + schedule.interval, total)
        return True

    def begin_step(self, epochs_done: int, total_epochs: int, steps_done: int, total_steps: int,
                   epoch_end: bool) -> bool:
        """The engine's one call before an optimiser step: whether an update follows it (see :meth:`due`); if
        so, a gradient rule's layers keep that step's dense gradient."""
        update_due = self.due(epochs_done, total_epochs, steps_done, total_steps, epoch_end)
        self.capture_gradients(update_due)
        return update_due

    def capture_gradients(self, enabled: bool) -> None:
        """Ask the layers to keep the dense gradient of the next backward pass (for gradient rules)."""
        for layer in self.layers:
            layer.capture_gradient(enabled and self.method.needs_dense_grad)

    def target_links(self, progress: float) -> list[int]:
        """Per-layer link counts the density schedule asks for at ``progress``.

        At the last update of a run (as :meth:`due` announced it) the counts are the final ones even
        if the schedule has not ended: a run too short to follow the schedule still ends on its target.
        """
        remaining = 0.0 if self.closing else self.method.density.remaining(progress)
        return [final + round((initial - final) * remaining)
                for initial, final in zip(self.initial_links, self.final_links)]

    @torch.no_grad()
    def update(self, progress: float, epoch: int, step: int) -> EvolutionRecord:
        """Run one prune → remove → percolate → regrow update on every sparse layer."""
        method = self.method
        zeta = method.schedule.fraction(progress)
        targets = self.target_links(progress)
        seconds: dict[str, float] = {}
        device = self.layers[0].links.device if self.layers else torch.device("cpu")
        shapes = [layer.shape for layer in self.layers]

        with timed(seconds, "removal", device):
            pruned = []
            for layer, target in zip(self.layers, targets):
                excess = max(layer.n_links - target, 0) if method.density.end > 0 else 0
                pruned.append(excess)
                if excess:
                    weakest = MAGNITUDE_PRUNING.lowest(layer, excess)
                    layer.set_links(layer.links[~weakest], optimizer=self.optimizer)
            removal_context = RemovalContext(progress=progress, generator=self.generator)
            removed = [self._remove(layer, final, zeta, removal_context)
                       for layer, final in zip(self.layers, self.final_links)]
        kept = [layer.links[~gone] for layer, gone in zip(self.layers, removed)]
        if method.percolation:
            with timed(seconds, "percolation", device):
                kept = percolate(kept, shapes)

        changes = []
        with timed(seconds, "regrowth", device):
            for layer, gone, survivors, target, n_pruned in zip(self.layers, removed, kept, targets, pruned):
                dropped = layer.links[~L.contains(survivors, layer.links)]
                context = RegrowthContext(survivors=survivors, progress=progress, generator=self.generator,
                                          timings=seconds)
                requested = max(target - survivors.numel(), 0)
                grown = (method.regrowth(layer, requested, context) if method.regrowth is not None
                         else survivors.new_empty(0))
                regrown, n_removed = grown.numel(), int(gone.sum())
                overlap = int(L.contains(dropped, grown).sum()) / requested if requested else 0.0
                layer.set_links(L.merge(survivors, grown), optimizer=self.optimizer)
                changes.append(LayerChange(removed=n_removed, percolated=dropped.numel() - n_removed,
                                           regrown=regrown, overlap=overlap, links=layer.n_links,
                                           pruned=n_pruned, target=target,
                                           fallback=context.stats.get("fallback", 0)))
        self.updates += 1
        self._check_early_stop(changes, targets)
        self.closing = False

        activity = self.activity()
        return EvolutionRecord(epoch=epoch, step=step, progress=progress, zeta=zeta, layers=changes,
                               active_per_layer=activity.per_layer, anp=activity.anp, seconds=seconds,
                               frozen=self.frozen)

    def _remove(self, layer: SparseLinear, final: int, zeta: float, context: RemovalContext) -> torch.Tensor:
        """The removal rule's choice on one layer (none without a rule); under ``zeta_decay="surplus"`` the
        fraction is whatever lies above the layer's final count."""
        if self.method.removal is None:
            return torch.zeros(layer.n_links, dtype=torch.bool, device=layer.links.device)
        if self.method.schedule.zeta_decay == "surplus":
            zeta = (layer.n_links - final) / layer.n_links if layer.n_links > final else 0.0
        return self.method.removal(layer, zeta, context)

    def activity(self) -> ActiveNeurons:
        """Active neurons of the current topology (see :func:`cht.analysis.graph.active_neurons`)."""
        return active_neurons_of_links([layer.links for layer in self.layers], [layer.shape for layer in self.layers])

    def _check_early_stop(self, changes: list[LayerChange], targets: list[int]) -> None:
        """Freeze when every layer's overlap exceeds the threshold (now, or at some step if sticky)."""
        early_stop = self.method.early_stop
        if early_stop is None:
            return
        signals = [change.overlap > early_stop.threshold for change in changes]
        if early_stop.sticky:
            signals = [now or before for now, before in zip(signals, self.layer_signals)]
        self.layer_signals = signals
        self.signal_updates = [first if first is not None or not now else self.updates
                               for first, now in zip(self.signal_updates, signals)]
        density_settled = targets == self.final_links
        if density_settled and all(signals):
            self.frozen = True

    def state_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "generator": self.generator.get_state(),
                "layer_signals": list(self.layer_signals), "initial_links": list(self.initial_links),
                "updates": self.updates, "signal_updates": list(self.signal_updates),
                "final_links": list(self.final_links)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frozen = state["frozen"]
        self.generator.set_state(state["generator"])
        self.layer_signals = list(state.get("layer_signals", self.layer_signals))
        self.updates = state.get("updates", self.updates)
        self.signal_updates = list(state.get("signal_updates", self.signal_updates))
        self.initial_links = list(state.get("initial_links", self.initial_links))
        self.final_links = list(state.get("final_links", self.final_links))
