"""BRF: bipartite receptive field initialisation (CHTs follow-up paper).

Neurons of the smaller side sit evenly on a ring of the larger side's neurons; each links to nearby
neurons of the other side, with probability ∝ ``(1 + ring distance)^(−(1−r)/r)``. The randomness ``r``
moves the topology from a strict band around the diagonal (``r = 0``: nearest neurons only) to an
Erdős–Rényi graph with fixed degrees (``r = 1``: distance ignored). Degrees of the smaller side differ
by at most one and the link count is exact.
"""

from __future__ import annotations

import torch

from cht.init.selection import gumbel_keys
from cht.init.topology import InitContext, register_topology_init

DEFAULT_RANDOMNESS = 0.5


def ring_distance(rows: int, cols: int) -> torch.Tensor:
    """Distance ``(rows, cols)`` on a ring of ``cols`` positions from each row's centre to each column."""
    centres = ((torch.arange(rows, dtype=torch.float64) + 0.5) * cols / rows).floor().long()
    offset = (torch.arange(cols)[None, :] - centres[:, None]).abs()
    return torch.minimum(offset, cols - offset)


def bipartite_receptive_field(n_in: int, n_out: int, n_links: int, randomness: float,
                              generator: torch.Generator) -> torch.Tensor:
    """BRF adjacency ``(n_in, n_out)`` with exactly ``n_links`` links (CPU tensor)."""
    if not 0.0 <= randomness <= 1.0:
        raise ValueError(f"BRF randomness r must lie in [0, 1], got {randomness}")
    if not 0 <= n_links <= n_in * n_out:
        raise ValueError(f"cannot place {n_links} links in a {n_in}×{n_out} layer")
    transposed = n_in > n_out
    rows, cols = (n_out, n_in) if transposed else (n_in, n_out)
    base, extra = divmod(n_links, rows)
    degrees = torch.full((rows,), base, dtype=torch.long)
    degrees[torch.randperm(rows, generator=generator)[:extra]] += 1
    distance = ring_distance(rows, cols)
    if randomness == 0.0:
        keys = -distance.to(torch.float64)
    else:
        exponent = (1.0 - randomness) / randomness
        keys = gumbel_keys(-exponent * torch.log1p(distance.to(torch.float64)), generator)
    order = torch.argsort(keys, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(cols).expand(rows, cols).contiguous())
    adjacency = rank < degrees[:, None]
    return adjacency.t().contiguous() if transposed else adjacency


@register_topology_init("brf")
def brf_topology(n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """BRF with randomness ``context.extras['brf_randomness']`` (default 0.5: probability ∝ 1/(1+d))."""
    randomness = float(context.extras.get("brf_randomness", DEFAULT_RANDOMNESS))
    return bipartite_receptive_field(n_in, n_out, n_links, randomness, context.generator)


RELEASED_RANDOMNESS = 0.3
"""``--brf_r 0.3`` of the CHTs/CHTss commands (Cannistraci-Hebb-Training-Soft-Rule-, Readme.md at 1f91f31)."""


@register_topology_init("brf_r0.3")
def brf_released_topology(n_in: int, n_out: int, n_links: int, context: InitContext) -> torch.Tensor:
    """BRF with the released commands' randomness r = 0.3."""
    return bipartite_receptive_field(n_in, n_out, n_links, RELEASED_RANDOMNESS, context.generator)
