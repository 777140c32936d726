"""Regrowth rules: where an evolution step adds links.

A rule sees the layer after removal (its mask already updated in a working copy), the candidate
positions (non-links, layer convention ``(out, in)``) and how many links to add, and returns a boolean
mask of exactly that many new links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cht.init.topology import random_links
from cht.sparse.layer import SparseLinear


@dataclass
class RegrowthContext:
    """Per-step information a rule may use: the post-removal mask, progress in [0, 1], randomness.

    Rules that score candidates add their phase times (e.g. ``scoring``, ``selection``) to ``timings``.
    """

    mask: torch.Tensor
    progress: float
    generator: torch.Generator
    timings: dict[str, float] = field(default_factory=dict)


class RegrowthRule(Protocol):
    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class RandomRegrowth:
    """SET rule: ``n`` links uniformly at random among the non-links."""

    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor:
        return random_links(candidates, min(n, int(candidates.sum())), context.generator)
