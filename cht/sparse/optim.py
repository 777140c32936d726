"""Keep optimiser state consistent with layer masks.

Momentum or Adam moments left at a removed link would move its weight off zero at the next step, so
after every topology change the state is masked, and after every optimiser step the weights are.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cht.sparse.layer import SparseLinear


@torch.no_grad()
def apply_masks(layers: Iterable[SparseLinear]) -> None:
    """Zero every weight off its mask."""
    for layer in layers:
        layer.apply_mask()


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer, layers: Iterable[SparseLinear]) -> None:
    """Zero every per-parameter state tensor (momentum, Adam moments) of each layer's weight off its mask."""
    for layer in layers:
        state = optimizer.state.get(layer.weight, {})
        for value in state.values():
            if torch.is_tensor(value) and value.shape == layer.mask.shape:
                value.mul_(layer.mask)
