"""Dynamic sparse training: methods composed of a removal rule, a regrowth rule, schedules and options."""

from cht.dst.engine import Evolution, EvolutionRecord, LayerChange
from cht.dst.methods import METHODS, EarlyStop, Method, available_methods, get_method, register_method
from cht.dst.percolation import percolate
from cht.dst.protocols import PROTOCOLS, SetupProtocol, available_protocols, resolve_method
from cht.dst.regrowth import (CHRegrowth, GradientRegrowth, RandomRegrowth, RegrowthContext, RegrowthRule,
                              SoftCHRegrowth)
from cht.dst.removal import (MagnitudeRemoval, MagnitudeTopKRemoval, MESTRemoval, RankedRemoval,
                             RelativeImportanceRemoval, RemovalContext, RemovalRule, SoftRemoval)
from cht.dst.schedule import (ConstantDensity, CubicDensity, DensitySchedule, EvolutionSchedule, ExtraDensity,
                              SigmoidDensity)

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "CHRegrowth",
    "ConstantDensity",
    "CubicDensity",
    "ExtraDensity",
    "DensitySchedule",
    "EarlyStop",
    "Evolution",
    "EvolutionRecord",
    "EvolutionSchedule",
    "GradientRegrowth",
    "LayerChange",
    "MESTRemoval",
    "MagnitudeRemoval",
    "MagnitudeTopKRemoval",
    "Method",
    "SetupProtocol",
    "RandomRegrowth",
    "RankedRemoval",
    "RegrowthContext",
    "RegrowthRule",
    "RelativeImportanceRemoval",
    "RemovalContext",
    "RemovalRule",
    "SigmoidDensity",
    "SoftCHRegrowth",
    "SoftRemoval",
    "available_methods",
    "available_protocols",
    "get_method",
    "percolate",
    "register_method",
    "resolve_method",
]
