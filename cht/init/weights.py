"""Weight initialisation drawn after the mask is fixed, so every kept link gets a real value."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

WeightInit = Callable[[torch.Tensor, float, torch.Generator], None]
WEIGHT_INITS: dict[str, WeightInit] = {}


def register_weight_init(name: str) -> Callable[[WeightInit], WeightInit]:
    def decorate(fn: WeightInit) -> WeightInit:
        WEIGHT_INITS[name] = fn
        return fn
    return decorate


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
    try:
        fn = WEIGHT_INITS[name]
    except KeyError:
        raise ValueError(f"unknown weight init {name!r}; choose one of {sorted(WEIGHT_INITS)}") from None
    density = float(mask.float().mean()) if mask.numel() else 0.0
    fn(weight, density, generator)
    weight.mul_(mask)
