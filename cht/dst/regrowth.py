"""Regrowth rules: where an evolution step adds links.

A rule sees the layer (its links not yet changed), the post-removal link set ``context.survivors``
(sorted flat positions, layer convention ``(out, in)``, see :mod:`cht.sparse.links`) and how many links
to add, and returns the sorted positions of the new links: never a survivor, possibly a link that was
just removed (it then keeps its weight).

Every rule except the ICLR-faithful CH selection returns exactly ``n`` links (fewer only when fewer free
positions exist). When a CH rule finds fewer than ``n`` candidates with a positive score, it grows all
of them and fills the shortage uniformly at random, first among positions joining two neurons that
still have links in this layer (so the fill does not revive neurons that percolation or removal left
without links), then among all free positions; the number of links filled that way is reported as
``stats["fallback"]``. Soft CH regrowth can instead handle a shortage as the later release does
(``shortage="score_floor"``, see :class:`SoftCHRegrowth`). Rules that score every position (gradients,
CH scores) build the dense matrix they need; random regrowth and the fill never do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cht import topology
from cht.dst.removal import dense_gradient
from cht.dst.timing import timed
from cht.init.selection import largest_k
from cht.sparse import links
from cht.sparse.layer import SparseLinear

CH_SELECTIONS = ("top_n", "iclr")
SHORTAGE_RULES = ("fill", "score_floor")
# The later release adds this to every free position's score when the n-th best is 0
# (Cannistraci-Hebb-training, mlp_and_cnn/dst_scheduler.py:558-562 for L3n and :585-590 for L3p at d1677b5),
# then samples n of all free positions ∝ the raised score (:607-613).
RELEASE_SCORE_FLOOR = 1e-5


@dataclass
class RegrowthContext:
    """Per-step information a rule may use: the post-removal links, progress in [0, 1], randomness.

    Rules that score candidates add their phase times (``scoring``, ``selection``) to ``timings``
    (shared by all layers of one update) and per-layer counts (e.g. ``fallback``) to ``stats``.
    """

    survivors: torch.Tensor
    progress: float
    generator: torch.Generator
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


class RegrowthRule(Protocol):
    def __call__(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor: ...


def free_count(layer: SparseLinear, context: RegrowthContext) -> int:
    """Positions not held by a survivor."""
    return layer.in_features * layer.out_features - context.survivors.numel()


def fill_shortage(layer: SparseLinear, grown: torch.Tensor, n: int, context: RegrowthContext) -> torch.Tensor:
    """Top ``grown`` up to ``n`` links with uniform random free positions, preferring active neurons."""
    missing = min(n, free_count(layer, context)) - grown.numel()
    context.stats["fallback"] = max(missing, 0)
    if missing <= 0:
        return grown
    occupied = links.merge(context.survivors, grown)
    out_degree, in_degree = links.degrees(context.survivors, layer.shape)
    active_rows, active_cols = out_degree.nonzero().squeeze(1), in_degree.nonzero().squeeze(1)
    from_active = min(missing, links.count_free(layer.shape, occupied, active_rows, active_cols))
    extra = links.random_free_positions(layer.shape, occupied, from_active, context.generator,
                                        rows=active_rows, cols=active_cols)
    rest = links.random_free_positions(layer.shape, links.merge(occupied, extra), missing - from_active,
                                       context.generator)
    return links.merge(grown, extra, rest)


def _check_ch_rule(rule: str, owner: str) -> None:
    if rule not in topology.available_rules():
        raise ValueError(f"{owner}: rule {rule!r} is not one of {topology.available_rules()}")


def survivor_adjacency(layer: SparseLinear, context: RegrowthContext) -> torch.Tensor:
    """Dense boolean adjacency ``(in, out)`` of the survivors, the topology code's convention."""
    return links.to_adjacency(context.survivors, layer.shape)


def ch_scores(rule: str, adjacency: torch.Tensor, context: RegrowthContext) -> torch.Tensor:
    """CH scores ``(in, out)`` of the post-removal adjacency, timed as ``scoring``."""
    with timed(context.timings, "scoring", adjacency.device):
        return topology.link_scores(adjacency, rule=rule)


def positions_of(grown_adjacency: torch.Tensor) -> torch.Tensor:
    """Link positions (layer convention) of a boolean ``(in, out)`` selection."""
    return links.from_adjacency(grown_adjacency)


@dataclass(frozen=True)
class RandomRegrowth:
    """SET rule: ``n`` links uniformly at random among the free positions."""

    def __call__(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor:
        return links.random_free_positions(layer.shape, context.survivors, min(n, free_count(layer, context)),
                                           context.generator)


@dataclass(frozen=True)
class GradientRegrowth:
    """RigL rule: the ``n`` free positions with the largest dense-gradient magnitude at the update step."""

    def __call__(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor:
        gradient = dense_gradient(layer, "gradient regrowth").abs()
        free = ~links.to_mask(context.survivors, layer.shape)
        return links.from_mask(largest_k(gradient, free, min(n, free_count(layer, context))))


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

    def __call__(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor:
        positions = layer.in_features * layer.out_features
        if self.selection == "top_n" and context.survivors.device.type == "cpu" and positions > links.DENSE_POSITIONS:
            return fill_shortage(layer, self._top_n_from_links(layer, n, context), n, context)
        adjacency = survivor_adjacency(layer, context)
        scores = ch_scores(self.rule, adjacency, context)
        with timed(context.timings, "selection", scores.device):
            if self.selection == "iclr":
                return positions_of(topology.select_iclr_threshold(scores, ~adjacency, n))
            grown = topology.select_top_n(scores, ~adjacency, n, generator=context.generator, positive_only=True)
            return fill_shortage(layer, positions_of(grown), n, context)

    def _top_n_from_links(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor:
        """The same choice as the dense route, scored row by row from the link lists (CPU) for layers too large
        for a dense score matrix: memory follows the links, so layers of any width evolve (timed as ``scoring``,
        which includes the selection)."""
        outputs, inputs = links.rows_cols(context.survivors, layer.in_features)
        with timed(context.timings, "scoring", context.survivors.device):
            chosen = topology.top_n_links(layer.in_features, layer.out_features, inputs, outputs, n, rule=self.rule,
                                          generator=context.generator, positive_only=True)
        return torch.sort(chosen.dst * layer.in_features + chosen.src).values


@dataclass(frozen=True)
class SoftCHRegrowth:
    """CHTs rule: ``n`` candidates drawn without replacement with probability ∝ their CH score.

    The default node-based rule (CH3-L3n) is the one the soft-rule paper samples from. When fewer than
    ``n`` free positions score > 0, ``shortage`` decides the rest:

    * ``"fill"``: every positive candidate is grown and the shortage is filled as the module describes,
      preferring positions between neurons that still have links;
    * ``"score_floor"``: as the later release, every free position's score is raised by
      :data:`RELEASE_SCORE_FLOOR` and all ``n`` are drawn ∝ the raised score, so zero-score positions compete
      with the positive ones and new links may reach neurons that percolation left without links.

    ``stats["fallback"]`` counts the grown links that scored 0 either way.
    """

    rule: str = "CH3-L3n"
    shortage: str = "fill"

    def __post_init__(self) -> None:
        _check_ch_rule(self.rule, "SoftCHRegrowth")
        if self.shortage not in SHORTAGE_RULES:
            raise ValueError(f"SoftCHRegrowth: shortage {self.shortage!r} is not one of {SHORTAGE_RULES}")

    def __call__(self, layer: SparseLinear, n: int, context: RegrowthContext) -> torch.Tensor:
        adjacency = survivor_adjacency(layer, context)
        scores = ch_scores(self.rule, adjacency, context)
        with timed(context.timings, "selection", scores.device):
            free = ~adjacency
            positive = free & (scores > 0)
            n_positive = int(positive.sum())
            if self.shortage == "score_floor" and n_positive < n:
                grown = topology.sample_proportional(scores + RELEASE_SCORE_FLOOR, free,
                                                     min(n, int(free.sum())), generator=context.generator)
                context.stats["fallback"] = int((grown & ~positive).sum())
                return positions_of(grown)
            grown = topology.sample_proportional(scores, positive, min(n, n_positive), generator=context.generator)
            return fill_shortage(layer, positions_of(grown), n, context)
