"""Weight initialisation drawn after the mask is fixed, so every kept link gets a real value."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cht.registry import Registry

WeightInit = Callable[[torch.Tensor, float, torch.Generator], None]
WEIGHT_INITS: Registry[WeightInit] = Registry("weight init")
register_weight_init = WEIGHT_INITS.register


@register_weight_init("kaiming")
def kaiming(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """Kaiming-uniform as torch's ``nn.Linear`` default (ignores sparsity)."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    weight.uniform_(-bound, bound, generator=generator)


@register_weight_init("xavier")
def xavier(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """Glorot-normal: std ``sqrt(2 / (fan_in + fan_out))``."""
    fan_out, fan_in = weight.shape
    weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


@register_weight_init("swi")
def sparse_weight_init(weight: torch.Tensor, density: float, generator: torch.Generator) -> None:
    """SWI: ``N(0, 2 / (density · fan_in))``, Kaiming scaled by the expected in-degree (CHT step 2)."""
    fan_in = weight.shape[1]
    if density <= 0:
        weight.zero_()
        return
    weight.normal_(0.0, math.sqrt(2.0 / (density * fan_in)), generator=generator)


@torch.no_grad()
def init_weights(name: str, weight: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``weight`` (layer convention ``(out, in)``) by the named rule, then zero it off ``mask``."""
    fill = WEIGHT_INITS.lookup(name)
    density = float(mask.float().mean()) if mask.numel() else 0.0
    fill(weight, density, generator)
    weight.mul_(mask)
