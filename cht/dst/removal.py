"""Removal rules: which existing links an evolution step drops.

A rule sees one layer (weight and mask in layer convention ``(out, in)``, optional dense gradient) and
the removal fraction of this step, and returns a boolean mask of the links to remove (a subset of the
layer's mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from cht.sparse.layer import SparseLinear


@dataclass
class RemovalContext:
    """Per-step information a rule may use: training progress in [0, 1] and randomness."""

    progress: float
    generator: torch.Generator


class RemovalRule(Protocol):
    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor: ...


def smallest_k(keys: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` eligible entries with the smallest keys."""
    chosen = torch.zeros(keys.numel(), dtype=torch.bool, device=keys.device)
    if k > 0:
        masked = keys.masked_fill(~eligible, float("inf")).flatten()
        chosen[torch.topk(masked, k, largest=False, sorted=False).indices] = True
    return chosen.view(keys.shape)


@dataclass(frozen=True)
class MagnitudeRemoval:
    """SET rule: drop ``fraction`` of the negative and ``fraction`` of the non-negative weights nearest zero.

    Splitting by sign keeps the balance of excitatory and inhibitory links (Mocanu et al. 2018).
    Zero weights count as non-negative, so links that never trained are the first to go.
    """

    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor:
        weight, mask = layer.weight.detach(), layer.mask
        negative = mask & (weight < 0)
        non_negative = mask & (weight >= 0)
        n_neg = round(fraction * int(negative.sum()))
        n_pos = round(fraction * int(non_negative.sum()))
        return smallest_k(-weight, negative, n_neg) | smallest_k(weight, non_negative, n_pos)
