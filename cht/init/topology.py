"""Initial sparse topologies with an exact number of links.

A topology initialiser maps ``(n_in, n_out, n_links, context)`` to a boolean adjacency ``(n_in, n_out)``.
``context`` carries what data-driven initialisers (CSTI) need: the layer index, a generator, the
training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cht.init.selection import random_links
from cht.registry import Registry


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
def erdos_renyi_mask(n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """Uniform random bipartite graph with exactly ``n_links`` links (the SET/static baseline)."""
    all_pairs = torch.ones(n_in, n_out, dtype=torch.bool)
    return random_links(all_pairs, n_links, context.generator)


def init_topology(name: str, n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """Build the initial adjacency ``(n_in, n_out)`` with the named initialiser."""
    mask = TOPOLOGY_INITS.lookup(name)(n_in, n_out, n_links, context)
    if mask.shape != (n_in, n_out) or int(mask.sum()) != n_links:
        raise RuntimeError(f"topology init {name!r} returned {int(mask.sum())} links of shape "
                           f"{tuple(mask.shape)}, expected {n_links} of {(n_in, n_out)}")
    return mask
