"""When topology evolves, how much of it changes, and how many links each layer should hold.

Two independent schedules drive an evolution step:

* :class:`EvolutionSchedule` says *when* updates happen (every ``interval`` epochs or steps until
  ``end_fraction`` of training) and which fraction ζ of the links is replaced.
* A density schedule says how many links a layer should hold at a given training progress. Most
  methods keep the density constant; GraNet and CHTss start denser and prune towards the target.
  A schedule is expressed as :meth:`remaining`, the share of the initial surplus over the target that
  is still present (1 at the start, 0 once the target is reached), so the engine can turn it into
  exact per-layer link counts whatever the per-layer density distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

UNITS = ("epoch", "step")
ZETA_DECAYS = ("constant", "cosine", "surplus")


@dataclass(frozen=True)
class EvolutionSchedule:
    """Evolve every ``interval`` epochs (or optimiser steps) until ``end_fraction`` of training.

    ``zeta`` is the removal fraction; with ``zeta_decay="cosine"`` it follows
    ``ζ/2 · (1 + cos(π t / T_end))`` (RigL's schedule). With ``zeta_decay="surplus"`` each update
    removes every link above the layer's final (target) count, whatever ``zeta`` says, so only the
    strongest target's worth of links survives and the rest of the density schedule's count is regrown
    (the later release's ``--EM_S``, see :class:`ExtraDensity`); the engine computes that fraction per
    layer.
    """

    interval: int = 1
    unit: str = "epoch"
    zeta: float = 0.3
    zeta_decay: str = "constant"
    end_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"update interval must be ≥ 1, got {self.interval}")
        if self.unit not in UNITS:
            raise ValueError(f"update unit must be one of {UNITS}, got {self.unit!r}")
        if not 0.0 <= self.zeta <= 1.0:
            raise ValueError(f"zeta must lie in [0, 1], got {self.zeta}")
        if self.zeta_decay not in ZETA_DECAYS:
            raise ValueError(f"zeta decay must be one of {ZETA_DECAYS}, got {self.zeta_decay!r}")
        if not 0.0 <= self.end_fraction <= 1.0:
            raise ValueError(f"end fraction must lie in [0, 1], got {self.end_fraction}")

    def is_update(self, count: int, total: int) -> bool:
        """Whether an update follows the ``count``-th completed epoch/step (1-based) of ``total``."""
        return count % self.interval == 0 and count < total and count <= self.end_fraction * total

    def fraction(self, progress: float) -> float:
        """Removal fraction at training progress in [0, 1] (``zeta`` itself for ``surplus``, which the
        engine replaces per layer)."""
        if self.zeta_decay in ("constant", "surplus"):
            return self.zeta
        return self.zeta / 2 * (1 + math.cos(math.pi * min(progress / max(self.end_fraction, 1e-12), 1.0)))


class DensitySchedule(Protocol):
    """How a layer's link count moves from its initial value to the target over training."""

    @property
    def end(self) -> float:
        """Training progress at which the target density is reached (0 for a constant density)."""
        ...

    def start_density(self, target: float) -> float:
        """Density the network is initialised at when the final density is ``target``."""
        ...

    def remaining(self, progress: float) -> float:
        """Share of the initial surplus over the target still present at ``progress`` (1 → 0)."""
        ...


def _check_progress_window(name: str, start: float, begin: float, end: float) -> None:
    if not 0.0 < start <= 1.0:
        raise ValueError(f"{name}: start density must lie in (0, 1], got {start}")
    if not 0.0 <= begin < end <= 1.0:
        raise ValueError(f"{name}: need 0 ≤ begin < end ≤ 1 (fractions of training), got begin={begin}, end={end}")


# Progress values computed as steps_done / total_steps can land a rounding error short of a
# schedule's end; treat them as reaching it.
_PROGRESS_TOLERANCE = 1e-9


def _window_position(progress: float, begin: float, end: float) -> float:
    """Where ``progress`` lies in ``[begin, end]``, clipped to [0, 1]."""
    position = (progress - begin) / (end - begin)
    if position >= 1.0 - _PROGRESS_TOLERANCE:
        return 1.0
    return min(max(position, 0.0), 1.0)


@dataclass(frozen=True)
class ConstantDensity:
    """The network holds the target density from the first step to the last."""

    @property
    def end(self) -> float:
        return 0.0

    def start_density(self, target: float) -> float:
        return target

    def remaining(self, progress: float) -> float:
        return 0.0


@dataclass(frozen=True)
class CubicDensity:
    """Gradual magnitude pruning (Zhu & Gupta 2017, as GraNet uses it).

    Density ``d(t) = d_f + (d_0 − d_f) · (1 − (t − begin)/(end − begin))³`` inside the window, ``d_0``
    before it and the target ``d_f`` after it: most links go early, when the network is most plastic.
    """

    start: float = 0.5
    begin: float = 0.0
    end: float = 0.75

    def __post_init__(self) -> None:
        _check_progress_window("CubicDensity", self.start, self.begin, self.end)

    def start_density(self, target: float) -> float:
        return max(self.start, target)

    def remaining(self, progress: float) -> float:
        return (1.0 - _window_position(progress, self.begin, self.end)) ** 3


@dataclass(frozen=True)
class SigmoidDensity:
    """CHTss: an S-shaped decay from ``start`` to the target, reached at ``end`` of training.

    The logistic ``σ(2k(x − ½))`` over ``x = t / end`` is rescaled to run exactly from 0 to 1 on
    ``[0, end]``; ``steepness`` k = 6 matches the authors' code.
    """

    start: float = 0.5
    end: float = 0.8
    steepness: float = 6.0

    def __post_init__(self) -> None:
        _check_progress_window("SigmoidDensity", self.start, 0.0, self.end)
        if self.steepness <= 0:
            raise ValueError(f"SigmoidDensity: steepness must be positive, got {self.steepness}")

    def start_density(self, target: float) -> float:
        return max(self.start, target)

    def remaining(self, progress: float) -> float:
        x = _window_position(progress, 0.0, self.end)
        k = self.steepness

        def logistic(z: float) -> float:
            return 1.0 / (1.0 + math.exp(-z))

        low, high = logistic(-k), logistic(k)
        return 1.0 - (logistic(2 * k * (x - 0.5)) - low) / (high - low)


@dataclass(frozen=True)
class ExtraDensity:
    """Train above the target density in two phases, then at the target (the later release's ``--EM_S``).

    ``mlp_and_cnn/dst_scheduler.py`` at d1677b5: the network starts at target + ``extra`` (``S = 1 −
    density − 0.05``); every update keeps the target's worth of largest weights and regrows ``extra`` of
    the positions while ``step ≤ 0.6 · T_end`` (``half_at`` = 0.6 · 0.75 of training), ``extra / 2``
    until the update before ``T_end`` (``end`` = 0.75), and nothing at that last update, after which the
    topology is fixed at the target density. ``extra`` is a share of the layer's positions, not of the
    target. Pair it with ``zeta_decay="surplus"`` for the release's removal.
    """

    extra: float = 0.05
    half_at: float = 0.45
    end: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.extra < 1.0:
            raise ValueError(f"ExtraDensity: extra must lie in (0, 1), got {self.extra}")
        if not 0.0 <= self.half_at < self.end <= 1.0:
            raise ValueError(f"ExtraDensity: need 0 ≤ half_at < end ≤ 1, got half_at={self.half_at}, end={self.end}")

    def start_density(self, target: float) -> float:
        return min(target + self.extra, 1.0)

    def remaining(self, progress: float) -> float:
        if progress <= self.half_at + _PROGRESS_TOLERANCE:
            return 1.0
        return 0.5 if progress < self.end - _PROGRESS_TOLERANCE else 0.0
