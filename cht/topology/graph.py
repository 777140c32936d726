"""Adjacency lists of a bipartite layer mask, the form every path-based kernel walks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Layers with fewer positions than this index with int32, larger ones with int64.
INT32_POSITIONS = 2**31


@dataclass(frozen=True)
class Bipartite:
    """CSR adjacency of a mask ``A`` (n_in, n_out) in both directions, on the mask's device.

    ``out_of[in_ptr[i]:in_ptr[i+1]]`` are the outputs linked to input ``i`` (ascending);
    ``in_of[out_ptr[u]:out_ptr[u+1]]`` are the inputs linked to output ``u`` (ascending).
    Indices are int32 whenever every flat position ``i * n_out + j`` fits (halving the memory
    traffic of the kernels), int64 otherwise.
    """

    n_in: int
    n_out: int
    in_ptr: torch.Tensor
    out_of: torch.Tensor
    out_ptr: torch.Tensor
    in_of: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "Bipartite":
        n_in, n_out = mask.shape
        index_dtype = torch.int32 if n_in * n_out < INT32_POSITIONS else torch.int64
        rows, cols = mask.nonzero().to(index_dtype).unbind(1)
        by_output = torch.argsort(cols, stable=True)
        return cls(n_in, n_out, _pointers(rows, n_in), cols.contiguous(), _pointers(cols, n_out), rows[by_output])

    @property
    def index_dtype(self) -> torch.dtype:
        return self.out_of.dtype

    @property
    def in_degree(self) -> torch.Tensor:
        """Number of outputs linked to each input."""
        return self.in_ptr.diff()

    @property
    def out_degree(self) -> torch.Tensor:
        """Number of inputs linked to each output."""
        return self.out_ptr.diff()


def _pointers(owners: torch.Tensor, n: int) -> torch.Tensor:
    pointers = torch.zeros(n + 1, dtype=owners.dtype, device=owners.device)
    pointers[1:] = torch.cumsum(torch.bincount(owners, minlength=n), 0)
    return pointers
