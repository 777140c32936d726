"""Dynamic sparse training: methods composed of a removal rule, a regrowth rule, a schedule and options."""

from cht.dst.engine import Evolution, EvolutionRecord
from cht.dst.methods import METHODS, Method, available_methods, get_method, register_method
from cht.dst.percolation import percolate
from cht.dst.removal import MagnitudeRemoval, RemovalRule
from cht.dst.regrowth import RandomRegrowth, RegrowthRule
from cht.dst.schedule import EvolutionSchedule

__all__ = [
    "METHODS",
    "EvolutionSchedule",
    "Evolution",
    "EvolutionRecord",
    "MagnitudeRemoval",
    "Method",
    "RandomRegrowth",
    "RegrowthRule",
    "RemovalRule",
    "available_methods",
    "get_method",
    "percolate",
    "register_method",
]
