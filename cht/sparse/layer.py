"""A linear layer whose connectivity is a boolean mask.

Storage and computation sit behind :class:`SparseBackend`, so a true-sparse kernel can replace the
masked dense product without touching the DST engine or the models. The layer keeps two invariants:
weights off the mask are exactly zero, and gradients reaching the optimiser are masked. The dense
gradient is still available on request (RigL-style regrowth needs it).
"""

from __future__ import annotations

import math
from typing import Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F


class SparseBackend(Protocol):
    """How a :class:`SparseLinear` computes ``x @ (W ⊙ M)ᵀ + b``."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor: ...


class MaskedDenseBackend:
    """Dense product with a weight that is zero off the mask (kept so by the layer)."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)


class SparseLinear(nn.Module):
    """Linear layer with a fixed-shape weight ``(out, in)`` and a boolean ``mask`` of the same shape.

    The graph view used by the topology code is :attr:`adjacency`, shape ``(in, out)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 backend: SparseBackend | None = None) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"SparseLinear needs positive sizes, got in={in_features}, out={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("mask", torch.ones(out_features, in_features, dtype=torch.bool))
        self.backend: SparseBackend = backend or MaskedDenseBackend()
        self.capture_dense_grad = False
        self.dense_grad: torch.Tensor | None = None
        self.weight.register_hook(self._mask_gradient)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _mask_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        if self.capture_dense_grad:
            self.dense_grad = grad.detach().clone()
        return grad * self.mask

    @property
    def adjacency(self) -> torch.Tensor:
        """Bipartite adjacency ``(in, out)``: entry ``[i, j]`` links input ``i`` to output ``j``."""
        return self.mask.t()

    @property
    def n_links(self) -> int:
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.n_links / self.mask.numel()

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (layer convention ``(out, in)``) and zero the weights it drops."""
        if mask.shape != self.mask.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match layer {tuple(self.mask.shape)}")
        self.mask.copy_(mask.to(device=self.mask.device, dtype=torch.bool))
        self.weight.mul_(self.mask)

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the weights off the mask (called after every optimiser step)."""
        self.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend.linear(x, self.weight, self.mask, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density:.4f}, bias={self.bias is not None}")


def sparse_layers(model: nn.Module) -> list[SparseLinear]:
    """The model's sparse layers in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, SparseLinear)]


def iter_sparse_named(model: nn.Module) -> Iterator[tuple[str, SparseLinear]]:
    """``(name, layer)`` pairs of the model's sparse layers, in order."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, SparseLinear))
