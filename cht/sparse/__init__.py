"""Sparse layers: a weight, a boolean mask, and the invariants that keep them consistent."""

from cht.sparse.density import link_counts
from cht.sparse.layer import MaskedDenseBackend, SparseBackend, SparseLinear, sparse_layers
from cht.sparse.optim import apply_masks, mask_optimizer_state

__all__ = [
    "MaskedDenseBackend",
    "SparseBackend",
    "SparseLinear",
    "apply_masks",
    "link_counts",
    "mask_optimizer_state",
    "sparse_layers",
]
