"""The method registry: each DST method is a composition of existing pieces.

Adding a method is one :func:`register_method` call naming its removal rule, regrowth rule, schedule
and options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cht.dst.regrowth import RandomRegrowth, RegrowthRule
from cht.dst.removal import MagnitudeRemoval, RemovalRule
from cht.dst.schedule import EvolutionSchedule


@dataclass(frozen=True)
class Method:
    """A sparse-training method: how the topology starts and how it evolves."""

    name: str
    description: str
    sparse: bool = True
    topology_init: str = "erdos_renyi"
    weight_init: str = "kaiming"
    removal: RemovalRule | None = None
    regrowth: RegrowthRule | None = None
    schedule: EvolutionSchedule = field(default_factory=EvolutionSchedule)
    percolation: bool = False
    early_stop: float | None = None
    needs_dense_grad: bool = False

    @property
    def evolves(self) -> bool:
        return self.sparse and self.removal is not None and self.regrowth is not None

    def with_schedule(self, **changes: Any) -> Method:
        """This method with some schedule fields replaced (``None`` values keep the method's default)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, schedule=replace(self.schedule, **changes)) if changes else self


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` available by name to the CLI, configs and pipeline."""
    METHODS[method.name] = method
    return method


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(METHODS)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {available_methods()}") from None


register_method(Method("fc", "fully connected (dense) counterpart", sparse=False))
register_method(Method("static", "fixed random (Erdős–Rényi) sparse topology"))
register_method(Method("set", "SET: magnitude removal, uniform random regrowth",
                       removal=MagnitudeRemoval(), regrowth=RandomRegrowth()))
