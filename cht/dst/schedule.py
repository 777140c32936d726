"""When topology evolves and how much of it changes."""

from __future__ import annotations

import math
from dataclasses import dataclass

UNITS = ("epoch", "step")
ZETA_DECAYS = ("constant", "cosine")


@dataclass(frozen=True)
class EvolutionSchedule:
    """Evolve every ``interval`` epochs (or optimiser steps) until ``end_fraction`` of training.

    ``zeta`` is the removal fraction; with ``zeta_decay="cosine"`` it follows
    ``ζ/2 · (1 + cos(π t / T_end))`` (RigL's schedule).
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
        """Removal fraction at training progress in [0, 1]."""
        if self.zeta_decay == "constant":
            return self.zeta
        return self.zeta / 2 * (1 + math.cos(math.pi * min(progress / max(self.end_fraction, 1e-12), 1.0)))
