"""Sparse layers that speak in links, their storages (masked, sparse; stacked in :mod:`cht.sparse.stacked`), and exact
per-layer link counts."""

from cht.sparse import links
from cht.sparse.density import link_counts
from cht.sparse.layer import STORAGES, SparseLinear, iter_sparse_named, sparse_layers
from cht.sparse.optim import after_optimizer_step, align_optimizer_state

__all__ = [
    "STORAGES",
    "SparseLinear",
    "after_optimizer_step",
    "align_optimizer_state",
    "iter_sparse_named",
    "link_counts",
    "links",
    "sparse_layers",
]
