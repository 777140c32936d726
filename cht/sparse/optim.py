"""Optimiser state and sparse layers: the few places where the two must agree.

How state follows links through removal and regrowth is the layer's business
(:meth:`cht.sparse.SparseLinear.set_links`); what remains here is the per-step invariant and loading a
checkpoint written by the other storage.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cht.sparse.layer import SparseLinear


@torch.no_grad()
def after_optimizer_step(layers: Iterable[SparseLinear]) -> None:
    """Keep weights off the links at zero (a no-op on the sparse storage, which stores no such weights)."""
    for layer in layers:
        layer.after_step()


@torch.no_grad()
def align_optimizer_state(optimizer: torch.optim.Optimizer, layers: Iterable[SparseLinear]) -> None:
    """Reshape state loaded from a checkpoint of the other storage to each layer's current layout."""
    for layer in layers:
        state = optimizer.state.get(layer.parameter, {})
        for key, value in list(state.items()):
            state[key] = layer.state_in_layout(value, layer.storage)
