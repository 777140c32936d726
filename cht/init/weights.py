"""Weight initialisation drawn after the links are fixed, so every link gets a real value.

An initialiser maps a layer's shape ``(out, in)``, its links (sorted flat positions, see
:mod:`cht.sparse.links`) and a generator to one value per link: memory follows the links, and the
draw is the same whichever storage backend the layer uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cht.registry import Registry

WeightInit = Callable[[tuple[int, int], torch.Tensor, torch.Generator], torch.Tensor]
WEIGHT_INITS: Registry[WeightInit] = Registry("weight init")
register_weight_init = WEIGHT_INITS.register


def _normal(count: int, std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(count, generator=generator, device=generator.device) * std


@register_weight_init("kaiming")
def kaiming(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform as torch's ``nn.Linear`` default: ``U(±1/sqrt(fan_in))``, ignoring sparsity."""
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(links.numel(), generator=generator, device=generator.device) * 2 - 1) * bound


@register_weight_init("xavier")
def xavier(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Glorot-normal: std ``sqrt(2 / (fan_in + fan_out))``."""
    fan_out, fan_in = shape
    return _normal(links.numel(), math.sqrt(2.0 / (fan_in + fan_out)), generator)


@register_weight_init("swi")
def sparse_weight_init(shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SWI: ``N(0, 2 / (density · fan_in))``, Kaiming scaled by the expected in-degree (CHT step 2)."""
    fan_out, fan_in = shape
    if links.numel() == 0:
        return torch.zeros(0)
    density = links.numel() / (fan_out * fan_in)
    return _normal(links.numel(), math.sqrt(2.0 / (density * fan_in)), generator)


def init_weights(name: str, shape: tuple[int, int], links: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Values (float32, one per link) drawn by the named rule for a layer of ``shape`` ``(out, in)``."""
    values = WEIGHT_INITS.lookup(name)(shape, links, generator)
    if values.shape != links.shape:
        raise RuntimeError(f"weight init {name!r} returned {tuple(values.shape)} values for {links.numel()} links")
    return values.to(torch.float32)
