"""Initial sparse topologies with an exact number of links.

A topology initialiser maps ``(n_in, n_out, n_links, context)`` either to a boolean adjacency
``(n_in, n_out)`` (data-driven initialisers that rank every position, such as CSTI) or directly to link
positions (sorted int64, layer convention ``(out, in)``, see :mod:`cht.sparse.links`), which is what
random initialisers return so that a layer of any size initialises in memory proportional to its links.
``context`` carries what data-driven initialisers (CSTI) need: the layer index, a generator, the
training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cht.registry import Registry
from cht.sparse import links as L


@dataclass
class InitContext:
    """What an initialiser may use besides the shape: layer position, randomness, data statistics."""

    layer_index: int
    generator: torch.Generator
    extras: dict[str, Any] = field(default_factory=dict)


TopologyInit = Callable[[int, int, int, InitContext], torch.Tensor]
TOPOLOGY_INITS: Registry[TopologyInit] = Registry("topology init")
register_topology_init = TOPOLOGY_INITS.register


@register_topology_init("erdos_renyi")
def erdos_renyi_links(n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """Uniform random bipartite graph with exactly ``n_links`` links (the SET/static baseline), as positions."""
    return L.random_free_positions((n_out, n_in), torch.empty(0, dtype=torch.int64), n_links, context.generator)


def init_topology(name: str, n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """The initial links of an ``(n_in, n_out)`` layer by the named initialiser, as sorted positions
    ``o * n_in + i`` (layer convention ``(out, in)``)."""
    made = TOPOLOGY_INITS.lookup(name)(n_in, n_out, n_links, context)
    if made.dtype == torch.bool:
        if made.shape != (n_in, n_out):
            raise RuntimeError(f"topology init {name!r} returned shape {tuple(made.shape)}, expected {(n_in, n_out)}")
        made = L.from_adjacency(made)
    L.check_links(made, (n_out, n_in))
    if made.numel() != n_links:
        raise RuntimeError(f"topology init {name!r} returned {made.numel()} links, expected {n_links}")
    return made
