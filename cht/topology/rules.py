"""The Cannistraci-Hebb L3 rule family, defined once as a per-intermediate-node factor.

On an L3 path ``i - u - k - j`` of a bipartite layer, each intermediate node ``z`` (``u`` or ``k``) has
degree ``d``, ``c`` internal links (to the other side's intermediates of the pair, i.e. common neighbours
with the far seed) and ``e = d - c - 1`` external links (the ``-1`` is its link to the near seed).
Every path rule multiplies one factor per intermediate: the geometric mean over the two intermediates
of the reference table is the product of square roots.

| rule | per-path term | factor h(d, c) |
|---|---|---|
| RA-L3 | 1 / GM(d) | d^(-1/2) |
| CH1-L3 | GM(c) / GM(d) | (c / d)^(1/2) |
| CH2-L3 | GM(1 + c) / GM(1 + e) | ((1 + c) / (d - c))^(1/2) |
| CH3-L3 | 1 / GM(1 + e) | (d - c)^(-1/2) |

The node-based "L3n" variants count each community node once with the weight h(d, c)², summed over
both sides (see :func:`cht.topology.torch_kernels.node_scores`).

``c = d`` cannot happen on a path of a candidate pair (the near seed is not a common neighbour), only
on pairs that are already links, whose scores are discarded; those factors are defined as 0 rather
than infinite so that discarded sums stay finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rule:
    """One scoring rule: the path rule whose factor it uses and whether it is node based (L3n)."""

    name: str
    factor: str
    node_based: bool


_RULES = {
    rule.name: rule
    for rule in (
        Rule("CH3-L3", "CH3", node_based=False),
        Rule("CH2-L3", "CH2", node_based=False),
        Rule("CH1-L3", "CH1", node_based=False),
        Rule("RA-L3", "RA", node_based=False),
        Rule("CH3-L3n", "CH3", node_based=True),
        Rule("CH2-L3n", "CH2", node_based=True),
    )
}


def available_rules() -> tuple[str, ...]:
    """Names accepted by :func:`cht.topology.link_scores`."""
    return tuple(_RULES)


def get_rule(name: str) -> Rule:
    """Look a rule up by name; unknown names raise a ValueError listing the valid ones."""
    try:
        return _RULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"rule={name!r} is not a known link-prediction rule; choose one of {', '.join(_RULES)}"
        ) from None


def intermediate_factor(factor: str, degree: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
    """h(d, c) of the module table, elementwise, in the floating dtype of ``degree``.

    ``degree`` and ``common`` broadcast against each other; entries with ``c >= d`` (only met on
    existing links) give 0.
    """
    degree, common = torch.broadcast_tensors(degree, common.to(degree.dtype))
    outside = degree - common  # 1 + external degree
    valid = outside > 0
    safe_outside = torch.where(valid, outside, torch.ones_like(outside))
    if factor == "CH3":
        value = safe_outside.rsqrt()
    elif factor == "CH2":
        value = ((1 + common) / safe_outside).sqrt()
    elif factor == "CH1":
        value = (common / degree.clamp(min=1)).sqrt()
    elif factor == "RA":
        value = degree.clamp(min=1).rsqrt()
    else:
        raise ValueError(f"factor={factor!r} is not one of CH3, CH2, CH1, RA")
    return torch.where(valid, value, torch.zeros_like(value))


def factor_table(factor: str, degree: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """h(d_z, c) for every node z and every count 0 <= c <= d_z, flattened: (offsets, values).

    The factor of node ``z`` with ``c`` common neighbours is ``values[offsets[z] + c]``; the table holds
    ``|E| + n`` numbers, so kernels can look factors up instead of recomputing them per path.
    """
    sizes = degree.long() + 1
    offsets = torch.zeros(degree.numel() + 1, dtype=torch.int64, device=degree.device)
    offsets[1:] = torch.cumsum(sizes, 0)
    owner = torch.repeat_interleave(torch.arange(degree.numel(), device=degree.device), sizes)
    common = torch.arange(int(offsets[-1]), device=degree.device) - offsets[owner]
    return offsets, intermediate_factor(factor, degree[owner].to(dtype), common)
