"""The method registry: each DST method is a composition of existing pieces.

Adding a method is one :func:`register_method` call naming its topology and weight initialisation,
removal rule, regrowth rule, schedules and options. Defaults follow the paper's MLP settings (update
every epoch, ζ = 0.3); the training configuration may override the evolution schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cht.dst.regrowth import CHRegrowth, GradientRegrowth, RandomRegrowth, RegrowthRule, SoftCHRegrowth
from cht.dst.removal import MagnitudeRemoval, MagnitudeTopKRemoval, MESTRemoval, RemovalRule, SoftRemoval
from cht.dst.schedule import ConstantDensity, CubicDensity, DensitySchedule, EvolutionSchedule, SigmoidDensity
from cht.registry import Registry


@dataclass(frozen=True)
class EarlyStop:
    """Freeze the topology once regrowth mostly re-creates the links it just removed.

    A layer signals when more than ``threshold`` of its regrown links had just been removed. With
    ``sticky=False`` every layer must signal at the same update (the paper's wording); with
    ``sticky=True`` a layer's signal, once raised, stays raised and the topology freezes when the last
    layer raises its own (the ICLR release's code).
    """

    threshold: float = 0.9
    sticky: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"early stop threshold must lie in [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class Method:
    """A sparse-training method: how the topology starts and how it evolves.

    Sparse methods default to SWI (Kaiming scaled by the expected in-degree): with torch's dense
    default a 1%-dense MLP starts with vanishing activations and stays at chance for epochs, which
    would measure the initialisation rather than the method (RigL and later work scale it likewise).
    """

    name: str
    description: str
    sparse: bool = True
    topology_init: str = "erdos_renyi"
    weight_init: str = "swi"
    removal: RemovalRule | None = None
    regrowth: RegrowthRule | None = None
    schedule: EvolutionSchedule = field(default_factory=EvolutionSchedule)
    density: DensitySchedule = field(default_factory=ConstantDensity)
    percolation: bool = False
    early_stop: EarlyStop | None = None
    needs_dense_grad: bool = False

    def __post_init__(self) -> None:
        if (self.removal is None) != (self.regrowth is None):
            raise ValueError(f"method {self.name!r}: give both a removal and a regrowth rule, or neither")
        if self.density.end > 0 and not self.evolves:
            raise ValueError(f"method {self.name!r}: a density schedule needs removal and regrowth rules")
        if self.density.end > self.schedule.end_fraction:
            raise ValueError(f"method {self.name!r}: evolution ends at {self.schedule.end_fraction} of training "
                             f"but the density schedule reaches the target only at {self.density.end}; "
                             f"set end_fraction ≥ {self.density.end}")

    @property
    def evolves(self) -> bool:
        return self.sparse and self.removal is not None and self.regrowth is not None

    def initial_density(self, target: float) -> float:
        """Density to initialise at when training should end at ``target`` (above it for GraNet/CHTss)."""
        return self.density.start_density(target)

    def with_schedule(self, **changes: Any) -> Method:
        """This method with some schedule fields replaced (``None`` values keep the method's default)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, schedule=replace(self.schedule, **changes)) if changes else self


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> Method:
    """Make ``method`` available by name to the CLI, configs and pipeline."""
    METHODS[method.name] = method
    return method


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.lookup(name)


CHT_TOPOLOGY = dict(topology_init="csti", weight_init="swi", percolation=True)

register_method(Method("fc", "fully connected (dense) counterpart", sparse=False))
register_method(Method("static", "fixed random (Erdős–Rényi) sparse topology"))
register_method(Method("set", "SET: magnitude removal, uniform random regrowth",
                       removal=MagnitudeRemoval(), regrowth=RandomRegrowth()))
register_method(Method("rigl", "RigL: smallest-|w| removal, dense-gradient regrowth, cosine ζ, stops at 75%",
                       removal=MagnitudeTopKRemoval(), regrowth=GradientRegrowth(),
                       schedule=EvolutionSchedule(zeta_decay="cosine", end_fraction=0.75),
                       needs_dense_grad=True))
register_method(Method("mest", "MEST: removal by |w| + 0.01·|grad|, uniform random regrowth",
                       removal=MESTRemoval(gradient_factor=0.01), regrowth=RandomRegrowth(),
                       needs_dense_grad=True))
register_method(Method("granet", "GraNet: cubic magnitude pruning from 50% density to the target by 75% "
                                 "of training, smallest-|w| removal, gradient regrowth, cosine ζ",
                       removal=MagnitudeTopKRemoval(), regrowth=GradientRegrowth(),
                       schedule=EvolutionSchedule(zeta_decay="cosine"),
                       density=CubicDensity(start=0.5, begin=0.0, end=0.75), needs_dense_grad=True))
register_method(Method("cht", "CHT: CSTI + SWI, SET removal, percolation, CH3-L3 top-n regrowth, "
                              "early stop at 90% overlap",
                       removal=MagnitudeRemoval(), regrowth=CHRegrowth("CH3-L3", selection="top_n"),
                       early_stop=EarlyStop(0.9), **CHT_TOPOLOGY))
register_method(Method("cht_iclr", "CHT as released with the ICLR 2024 paper: CH3-L3 threshold selection "
                                   "(ties grow extra links), sticky per-layer early stop",
                       removal=MagnitudeRemoval(), regrowth=CHRegrowth("CH3-L3", selection="iclr"),
                       early_stop=EarlyStop(0.9, sticky=True), **CHT_TOPOLOGY))
register_method(Method("chts", "CHTs: removal sampled ∝ |w|^T (T 1→3), percolation, regrowth sampled "
                               "∝ CH3-L3n score, CSTI + SWI",
                       removal=SoftRemoval(MagnitudeTopKRemoval(), 1.0, 3.0),
                       regrowth=SoftCHRegrowth("CH3-L3n"),
                       **CHT_TOPOLOGY))
register_method(Method("chtss", "CHTss: CHTs with sigmoid density decay from 50% to the target by 80% "
                                "of training",
                       removal=SoftRemoval(MagnitudeTopKRemoval(), 1.0, 3.0),
                       regrowth=SoftCHRegrowth("CH3-L3n"),
                       density=SigmoidDensity(start=0.5, end=0.8), **CHT_TOPOLOGY))
