"""Compiled CPU scorers (numba): the same sums as :mod:`cht.topology.torch_kernels`, row by row.

Each input row ``i`` is scored in one pass over its paths ``i - u - k - j`` into a dense row
accumulator, rows in parallel. No work chunks are needed: besides the output, memory is the
``n_out x n_out`` output-pair table (``n_out <= n_in``, the caller transposes) and one row buffer per
thread. Tables and row sums use the output dtype: float32 halves the cache footprint of the random
accesses (about twice as fast), float64 is exact to rounding.

Without numba, ``AVAILABLE`` is false and callers use the torch kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from cht.topology.graph import Bipartite
from cht.topology.rules import Rule, factor_table

try:
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps imports working
    numba = None

AVAILABLE = numba is not None


def scores(graph: Bipartite, rule: Rule, dtype: torch.dtype) -> torch.Tensor:
    """Scores of every pair (links included) as a CPU tensor of ``dtype`` (float32 or float64).

    numba's pool would otherwise use every core whatever torch was told: two trainings sharing a
    machine then spin against each other (seen: 20× slower epochs). Follow torch's thread count.
    """
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    adjacency = tuple(t.numpy() for t in (graph.in_ptr, graph.out_of, graph.out_ptr, graph.in_of))
    k_offsets, k_factors = (t.numpy() for t in factor_table(rule.factor, graph.in_degree, dtype))
    u_offsets, u_factors = (t.numpy() for t in factor_table(rule.factor, graph.out_degree, dtype))
    pair_factors = torch.zeros(graph.n_out, graph.n_out, dtype=dtype)
    _output_pair_factors(*adjacency, u_offsets, u_factors, pair_factors.numpy(), _n_blocks(graph.n_out))
    result = torch.empty(graph.n_in, graph.n_out, dtype=dtype)
    if rule.node_based:
        pair_weights = pair_factors.square_()
        u_of_pair, j_of_pair = pair_weights.nonzero().unbind(1)
        pair_ptr = np.zeros(graph.n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(u_of_pair.numpy(), minlength=graph.n_out), out=pair_ptr[1:])
        _node_rows(*adjacency, k_offsets, k_factors, pair_ptr, j_of_pair.numpy(),
                   pair_weights[u_of_pair, j_of_pair].numpy(), result.numpy(), _n_blocks(graph.n_in))
    else:
        _exact_rows(*adjacency, k_offsets, k_factors, pair_factors.numpy(), result.numpy(),
                    _n_blocks(graph.n_in))
    return result


def _n_blocks(n_rows: int) -> int:
    """Row blocks for the parallel loops: several per thread, to balance rows of uneven cost."""
    return max(1, min(n_rows, 8 * numba.get_num_threads()))


if AVAILABLE:

    @numba.njit(cache=True)
    def _block(index: int, n_blocks: int, n: int) -> tuple[int, int]:
        return index * n // n_blocks, (index + 1) * n // n_blocks

    @numba.njit(cache=True, parallel=True)
    def _output_pair_factors(in_ptr, out_of, out_ptr, in_of, u_offsets, u_factors, pair_factors, n_blocks):
        """pair_factors[u, j] = h(d_u, |N(u) ∩ N(j)|) where the count is positive (rows disjoint per u)."""
        n_out = pair_factors.shape[0]
        for block in numba.prange(n_blocks):
            common = np.zeros(n_out, dtype=np.int64)
            first, last = _block(block, n_blocks, n_out)
            for u in range(first, last):
                for s in range(out_ptr[u], out_ptr[u + 1]):
                    k = in_of[s]
                    for r in range(in_ptr[k], in_ptr[k + 1]):
                        common[out_of[r]] += 1
                for s in range(out_ptr[u], out_ptr[u + 1]):
                    k = in_of[s]
                    for r in range(in_ptr[k], in_ptr[k + 1]):
                        j = out_of[r]
                        if common[j] > 0:
                            pair_factors[u, j] = u_factors[u_offsets[u] + common[j]]
                            common[j] = 0

    @numba.njit(cache=True)
    def _count_common_inputs(i, in_ptr, out_of, out_ptr, in_of, common, step):
        """Add ``step`` to common[k] for every wedge i - u - k with k != i."""
        for t in range(in_ptr[i], in_ptr[i + 1]):
            u = out_of[t]
            for s in range(out_ptr[u], out_ptr[u + 1]):
                k = in_of[s]
                if k != i:
                    common[k] += step

    @numba.njit(cache=True)
    def _flush_row(i, acc, out):
        for j in range(acc.shape[0]):
            out[i, j] = acc[j]
            acc[j] = 0

    @numba.njit(cache=True, parallel=True)
    def _exact_rows(in_ptr, out_of, out_ptr, in_of, k_offsets, k_factors, pair_factors, out, n_blocks):
        """out[i, j] = sum over paths i - u - k - j of h(d_k, c_k) * pair_factors[u, j]."""
        n_in, n_out = out.shape
        for block in numba.prange(n_blocks):
            acc = np.zeros(n_out, dtype=out.dtype)
            common = np.zeros(n_in, dtype=np.int64)
            first, last = _block(block, n_blocks, n_in)
            for i in range(first, last):
                _count_common_inputs(i, in_ptr, out_of, out_ptr, in_of, common, 1)
                for t in range(in_ptr[i], in_ptr[i + 1]):
                    u = out_of[t]
                    u_pairs = pair_factors[u]
                    for s in range(out_ptr[u], out_ptr[u + 1]):
                        k = in_of[s]
                        if k != i:
                            k_factor = k_factors[k_offsets[k] + common[k]]
                            for r in range(in_ptr[k], in_ptr[k + 1]):
                                j = out_of[r]
                                acc[j] += k_factor * u_pairs[j]
                _count_common_inputs(i, in_ptr, out_of, out_ptr, in_of, common, -1)
                _flush_row(i, acc, out)

    @numba.njit(cache=True, parallel=True)
    def _node_rows(in_ptr, out_of, out_ptr, in_of, k_offsets, k_factors, pair_ptr, pair_j, pair_weights, out,
                   n_blocks):
        """L3n: each input k with common outputs adds h(d_k, c_k)^2 over N(k); each output pair (u, j)
        with common inputs adds its weight to every input of u."""
        n_in, n_out = out.shape
        for block in numba.prange(n_blocks):
            acc = np.zeros(n_out, dtype=out.dtype)
            common = np.zeros(n_in, dtype=np.int64)
            community = np.empty(n_in, dtype=np.int64)
            first, last = _block(block, n_blocks, n_in)
            for i in range(first, last):
                size = 0
                for t in range(in_ptr[i], in_ptr[i + 1]):
                    u = out_of[t]
                    for s in range(out_ptr[u], out_ptr[u + 1]):
                        k = in_of[s]
                        if k != i:
                            if common[k] == 0:
                                community[size] = k
                                size += 1
                            common[k] += 1
                for m in range(size):
                    k = community[m]
                    weight = k_factors[k_offsets[k] + common[k]] ** 2
                    common[k] = 0
                    for r in range(in_ptr[k], in_ptr[k + 1]):
                        acc[out_of[r]] += weight
                for t in range(in_ptr[i], in_ptr[i + 1]):
                    u = out_of[t]
                    for p in range(pair_ptr[u], pair_ptr[u + 1]):
                        acc[pair_j[p]] += pair_weights[p]
                _flush_row(i, acc, out)
