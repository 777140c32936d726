"""Regrowth rules: where an evolution step adds links.

A rule sees the layer (its mask not yet changed), the post-removal mask in the context, the candidate
positions (non-links after removal, layer convention ``(out, in)``) and how many links to add, and
returns a boolean mask of new links inside the candidates.

Every rule except the ICLR-faithful CH selection returns exactly ``n`` links. When a CH rule finds fewer
than ``n`` candidates with a positive score, it grows all of them and fills the shortage uniformly at
random, first among candidates joining two neurons that still have links in this layer (so the fill
does not revive neurons that percolation or removal left without links), then among all candidates;
the number of links filled that way is reported as ``stats["fallback"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cht import topology
from cht.dst.removal import dense_gradient
from cht.dst.timing import timed
from cht.init.selection import largest_k, random_links
from cht.sparse.layer import SparseLinear

CH_SELECTIONS = ("top_n", "iclr")


@dataclass
class RegrowthContext:
    """Per-step information a rule may use: the post-removal mask, progress in [0, 1], randomness.

    Rules that score candidates add their phase times (``scoring``, ``selection``) to ``timings``
    (shared by all layers of one update) and per-layer counts (e.g. ``fallback``) to ``stats``.
    """

    mask: torch.Tensor
    progress: float
    generator: torch.Generator
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


class RegrowthRule(Protocol):
    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor: ...


def fill_shortage(grown: torch.Tensor, candidates: torch.Tensor, n: int,
                  context: RegrowthContext) -> torch.Tensor:
    """Top ``grown`` up to ``n`` links with uniform random candidates, preferring active neurons."""
    missing = n - int(grown.sum())
    context.stats["fallback"] = max(missing, 0)
    if missing <= 0:
        return grown
    open_positions = candidates & ~grown
    mask = context.mask
    between_active = open_positions & mask.any(dim=1, keepdim=True) & mask.any(dim=0, keepdim=True)
    from_active = min(missing, int(between_active.sum()))
    extra = random_links(between_active, from_active, context.generator)
    if missing > from_active:
        extra |= random_links(open_positions & ~extra, missing - from_active, context.generator)
    return grown | extra


def _check_ch_rule(rule: str, owner: str) -> None:
    if rule not in topology.available_rules():
        raise ValueError(f"{owner}: rule {rule!r} is not one of {topology.available_rules()}")


def ch_scores(rule: str, context: RegrowthContext) -> torch.Tensor:
    """Scores of the post-removal mask in layer convention ``(out, in)``, timed as ``scoring``."""
    with timed(context.timings, "scoring", context.mask.device):
        return topology.link_scores(context.mask.t(), rule=rule).t()


@dataclass(frozen=True)
class RandomRegrowth:
    """SET rule: ``n`` links uniformly at random among the non-links."""

    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor:
        return random_links(candidates, min(n, int(candidates.sum())), context.generator)


@dataclass(frozen=True)
class GradientRegrowth:
    """RigL rule: the ``n`` non-links with the largest dense-gradient magnitude at the update step."""

    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor:
        gradient = dense_gradient(layer, "gradient regrowth")
        return largest_k(gradient.abs(), candidates, min(n, int(candidates.sum())))


@dataclass(frozen=True)
class CHRegrowth:
    """CHT rule: the candidates with the highest Cannistraci-Hebb link-prediction scores.

    ``selection="top_n"`` takes exactly ``n`` (ties broken at random by the evolution generator; a
    shortage of positive scores is filled as the module describes). ``selection="iclr"`` reproduces the
    ICLR 2024 release: every candidate scoring at least the n-th best score, only positive ones when
    that score is 0, so a step may grow more or fewer than ``n`` links; the engine's next step regrows
    towards the layer's target count, so the count does not drift for long.
    """

    rule: str = "CH3-L3"
    selection: str = "top_n"

    def __post_init__(self) -> None:
        _check_ch_rule(self.rule, "CHRegrowth")
        if self.selection not in CH_SELECTIONS:
            raise ValueError(f"CHRegrowth: selection {self.selection!r} is not one of {CH_SELECTIONS}")

    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor:
        scores = ch_scores(self.rule, context)
        with timed(context.timings, "selection", scores.device):
            if self.selection == "iclr":
                return topology.select_iclr_threshold(scores, candidates, n)
            grown = topology.select_top_n(scores, candidates, n, generator=context.generator, positive_only=True)
            return fill_shortage(grown, candidates, n, context)


@dataclass(frozen=True)
class SoftCHRegrowth:
    """CHTs rule: ``n`` candidates drawn without replacement with probability ∝ their CH score.

    The default node-based rule (CH3-L3n) is the one the soft-rule paper samples from.
    """

    rule: str = "CH3-L3n"

    def __post_init__(self) -> None:
        _check_ch_rule(self.rule, "SoftCHRegrowth")

    def __call__(self, layer: SparseLinear, candidates: torch.Tensor, n: int,
                 context: RegrowthContext) -> torch.Tensor:
        scores = ch_scores(self.rule, context)
        with timed(context.timings, "selection", scores.device):
            positive = candidates & (scores > 0)
            grown = topology.sample_proportional(scores, positive, min(n, int(positive.sum())),
                                                 generator=context.generator)
            return fill_shortage(grown, candidates, n, context)
