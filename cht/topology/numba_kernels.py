"""Compiled CPU kernels (numba): CH scores row by row, and a top-n selection that never holds them all.

**Orientation.** A layer is walked with the larger side as rows (inputs when ``n_in >= n_out``) and
the smaller one as columns. Row ``i`` is scored in one pass over its L3 paths ``i - u - k - j``
(``u``, ``j`` columns, ``k`` rows) into a dense row accumulator. The exact rules of
:func:`link_scores` look the factor of each column pair ``(u, j)`` up by their common-neighbour
count, read from an ``n_cols x n_cols`` table (uint8 for sparse layers: a quarter of a float table,
so its random reads stay in cache; never larger than the layer); :func:`top_n` counts them on the fly
instead, so its memory is ``O(n_rows + n_cols)`` per thread plus the links it keeps. Both perform
the same floating-point operations in the same order for every score, so the blocked selection sees
bit-identical scores. The node-based rules (L3n) count on the fly in both.

**Speed.** Node indices are unsigned (uint32, pointers uint64): numba then drops the negative-index
wrap-around of every gather and scatter, which halves the time of the path loops.

**Threads.** Workers are Python threads running ``nogil`` kernels that take row chunks from a shared
atomic counter (dynamic scheduling: rows of uneven cost, and cores shared with other jobs, stay
balanced). Their number is ``torch.get_num_threads()`` at call time. numba's own threading layer is
never started: its OpenMP flavour shares torch's OpenMP runtime and resets torch's thread count on
first use.

Without numba, ``AVAILABLE`` is false and callers use the torch kernels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cht.topology.rules import Rule, factor_table
from cht.topology.selection import SPLITMIX_GAMMA, SPLITMIX_MULTIPLIERS, SPLITMIX_SHIFTS

try:
    import numba
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a declared dependency; this keeps imports working
    numba = None

AVAILABLE = numba is not None
# Rows (or columns) per chunk handed to a worker thread: small enough to balance, large enough that
# taking a chunk costs nothing.
MAX_CHUNK = 64
# Below this many inner-loop steps (about a millisecond) a call runs on the calling thread alone:
# starting helpers would cost more than they save, the more so on a loaded machine.
MIN_PARALLEL_WORK = 2**20
MAX_NODES = 2**32 - 2  # uint32 node indices, one value left as "no node"


@dataclass(frozen=True)
class Layer:
    """Both CSR directions of a layer in kernel orientation (rows: the larger side).

    ``row_nbrs[row_ptr[r]:row_ptr[r+1]]`` are the columns linked to row ``r`` and
    ``col_nbrs[col_ptr[c]:col_ptr[c+1]]`` the rows linked to column ``c``, both ascending.
    ``transposed`` is true when rows are the layer's outputs.
    """

    n_rows: int
    n_cols: int
    row_ptr: np.ndarray
    row_nbrs: np.ndarray
    col_ptr: np.ndarray
    col_nbrs: np.ndarray
    transposed: bool

    @property
    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.row_ptr, self.row_nbrs, self.col_ptr, self.col_nbrs

    @property
    def wedges(self) -> int:
        """Walks ``u - k - j`` from every column: the work of the column-pair table."""
        degree = np.diff(self.row_ptr.view(np.int64))
        return int(np.dot(degree, degree))

    @property
    def paths(self) -> int:
        """About the number of L3 paths, the work of scoring every row."""
        return self.wedges * len(self.row_nbrs) // max(self.n_cols, 1)

    def position_strides(self) -> tuple[np.uint64, np.uint64]:
        """Multipliers of (row, column) giving the flat position ``i * n_out + j`` of the layer."""
        if self.transposed:
            return np.uint64(1), np.uint64(self.n_rows)
        return np.uint64(self.n_cols), np.uint64(1)


def layer_from_mask(mask: torch.Tensor) -> Layer:
    """The CSR pair of a CPU bool mask (n_in, n_out), read in its memory order (any strides)."""
    _check_sizes(*mask.shape)
    bits = mask.numpy()
    if not bits.flags.c_contiguous and bits.T.flags.c_contiguous:
        ptr, nbrs = _scan_rows(bits.T)
        return _orient(mask.shape[0], mask.shape[1], _transpose_csr(mask.shape[0], ptr, nbrs), (ptr, nbrs))
    ptr, nbrs = _scan_rows(np.ascontiguousarray(bits))
    return _orient(mask.shape[0], mask.shape[1], (ptr, nbrs), _transpose_csr(mask.shape[1], ptr, nbrs))


def layer_from_links(n_in: int, n_out: int, src: np.ndarray, dst: np.ndarray) -> Layer:
    """The CSR pair of the links ``src[e] -> dst[e]`` (int arrays, any order, no duplicates)."""
    _check_sizes(n_in, n_out)
    by_output = _bucket(n_out, dst, src.astype(np.uint32))
    in_csr = _transpose_csr(n_in, *by_output)  # ascending outputs per input
    duplicated = _first_duplicate(*in_csr)
    if duplicated >= 0:
        raise ValueError(f"links: input {duplicated} is linked twice to the same output; pass each link once")
    return _orient(n_in, n_out, in_csr, _transpose_csr(n_out, *in_csr))


def link_scores(mask: torch.Tensor, rule: Rule, dtype: torch.dtype) -> torch.Tensor:
    """Scores of every pair of a CPU mask, links 0, as a float32/float64 tensor shaped like ``mask``.

    The result is row-major in kernel orientation: a transposed view when ``n_out > n_in``.
    """
    layer = layer_from_mask(mask)
    values = np.float64 if dtype == torch.float64 else np.float32
    k_offsets, k_factors, u_offsets, u_factors = _factor_tables(layer, rule, values)
    out = np.zeros((layer.n_rows, layer.n_cols), dtype=values)
    if rule.node_based:
        _run(_node_rows_worker, layer.n_rows, *layer.csr, k_offsets, k_factors, u_offsets, u_factors, out,
             work=layer.paths)
    else:
        pair_counts = np.zeros((layer.n_cols, layer.n_cols), dtype=_count_dtype(layer))
        _run(_pair_counts_worker, layer.n_cols, *layer.csr, pair_counts, work=layer.wedges)
        _run(_exact_rows_worker, layer.n_rows, *layer.csr, k_offsets, k_factors, u_offsets, u_factors, pair_counts,
             out, work=layer.paths)
    scores = torch.from_numpy(out)
    return scores.T if layer.transposed else scores


def top_n(layer: Layer, rule: Rule, dtype: torch.dtype, n: int, seed: int | None, positive_only: bool,
          block_rows: int | None = None) -> tuple[np.ndarray, int]:
    """The ``n`` best non-links by (score desc, tie key asc), scoring rows and keeping only candidates.

    Returns their flat positions ``i * n_out + j`` (ascending) and the number of candidates scoring
    > 0. Tie keys are :func:`cht.topology.selection.tie_keys` of the flat positions, as in
    :func:`cht.topology.select_top_n`.
    """
    values = np.float64 if dtype == torch.float64 else np.float32
    candidates = layer.n_rows * layer.n_cols - len(layer.row_nbrs)
    if candidates == 0:
        return np.zeros(0, dtype=np.int64), 0
    keep = max(1, min(n, candidates))  # keeps one even for n = 0, to count the positives alike
    row_stride, col_stride = layer.position_strides()
    capacity = min(candidates, max(2 * keep, keep + 4096))
    parts = _run(_top_rows_worker, layer.n_rows, *layer.csr, *_factor_tables(layer, rule, values),
                 rule.node_based, row_stride, col_stride, seed is not None, np.uint64((seed or 0) % 2**64),
                 positive_only, np.zeros(0, values), keep, capacity, chunk=block_rows,
                 work=layer.paths + layer.n_rows * layer.n_cols)
    scores, keys, positions = (np.concatenate([part[index] for part in parts]) for index in range(3))
    kept = _compact(scores, keys, positions, len(scores), keep)[0] if n > 0 else 0
    return np.sort(positions[:kept]), sum(int(part[3]) for part in parts)


def _check_sizes(n_in: int, n_out: int) -> None:
    if max(n_in, n_out) > MAX_NODES:
        raise ValueError(f"layer {n_in}x{n_out}: the numba kernels index at most {MAX_NODES} neurons per side")


def _orient(n_in: int, n_out: int, in_csr: tuple, out_csr: tuple) -> Layer:
    if n_in >= n_out:
        return Layer(n_in, n_out, *in_csr, *out_csr, transposed=False)
    return Layer(n_out, n_in, *out_csr, *in_csr, transposed=True)


def _count_dtype(layer: Layer) -> type:
    """The smallest unsigned dtype holding every column-pair count (at most the largest column degree):
    a uint8 table is a quarter of a float32 one, and its random reads stay in cache."""
    largest = int(np.diff(layer.col_ptr.view(np.int64)).max(initial=0))
    return next(dtype for dtype in (np.uint8, np.uint16, np.uint32) if largest <= np.iinfo(dtype).max)


def _factor_tables(layer: Layer, rule: Rule, values: type) -> tuple[np.ndarray, ...]:
    """(offsets, factors) of the row nodes, then of the column nodes: node ``z`` with ``c`` common
    neighbours has the factor ``factors[offsets[z] + c]`` (as :func:`factor_table`).

    Nodes of equal degree share one run of the table, built by :func:`factor_table` over the distinct
    degrees only: a few tiny torch ops, which never wake torch's thread pool (whose spinning threads
    would compete with the kernels' own).
    """
    tables = []
    for ptr in (layer.row_ptr, layer.col_ptr):
        distinct, of_node = np.unique(np.diff(ptr.view(np.int64)), return_inverse=True)
        offsets, factors = factor_table(rule.factor, torch.from_numpy(distinct),
                                        torch.float64 if values is np.float64 else torch.float32)
        tables += [offsets.numpy().view(np.uint64)[of_node], factors.numpy()]
    return tuple(tables)


def _scan_rows(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of a C-contiguous bool matrix: (uint64 pointers, uint32 column indices)."""
    counts = np.zeros(bits.shape[0] + 1, dtype=np.uint64)
    view = bits.view(np.uint8)
    _run(_count_rows_worker, bits.shape[0], view, counts, work=bits.size)
    ptr = np.cumsum(counts, dtype=np.uint64)
    nbrs = np.empty(int(ptr[-1]), dtype=np.uint32)
    _run(_fill_rows_worker, bits.shape[0], view, ptr, nbrs, work=bits.size)
    return ptr, nbrs


def _run(worker: Callable[..., Any], n_items: int, *args: Any, work: int, chunk: int | None = None) -> list[Any]:
    """Run ``worker(counter, chunk, *args)`` on torch's thread count; each worker takes chunks of
    ``chunk`` items from ``counter`` until ``n_items`` are taken. ``work`` (inner-loop steps) below
    ``MIN_PARALLEL_WORK`` runs on the calling thread alone. Returns each worker's result."""
    threads = max(1, torch.get_num_threads()) if work >= MIN_PARALLEL_WORK else 1
    if chunk is None:
        chunk = max(1, min(MAX_CHUNK, n_items // (8 * threads)))
    threads = max(1, min(threads, -(-n_items // chunk)))
    counter = np.zeros(1, dtype=np.int64)
    if threads == 1:
        return [worker(counter, chunk, *args)]
    worker(np.full(1, n_items, dtype=np.int64), chunk, *args)  # compile (or load) before threads race for it
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def take_chunks(slot: int) -> None:
        try:
            results[slot] = worker(counter, chunk, *args)
        except BaseException as error:  # pragma: no cover - re-raised below
            errors.append(error)

    helpers = [threading.Thread(target=take_chunks, args=(slot,), daemon=True) for slot in range(1, threads)]
    for helper in helpers:
        helper.start()
    take_chunks(0)
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
    return results


if AVAILABLE:
    _GAMMA = np.uint64(SPLITMIX_GAMMA)
    _MULTIPLIER_1, _MULTIPLIER_2 = (np.uint64(m) for m in SPLITMIX_MULTIPLIERS)
    _SHIFT_1, _SHIFT_2, _SHIFT_3 = (np.uint64(s) for s in SPLITMIX_SHIFTS)
    _ONE = np.uint64(1)

    @intrinsic
    def _fetch_add(typingctx, counter, delta):
        """Atomically add ``delta`` to ``counter[0]`` and return its previous value."""
        if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
            return None

        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.atomic_rmw("add", array.data, args[1], "monotonic")

        return types.int64(counter, types.int64), codegen

    @numba.njit(cache=True, inline="always")
    def _next_chunk(counter, chunk, n):
        first = _fetch_add(counter, chunk)
        return first, min(first + chunk, n)

    @numba.njit(cache=True, inline="always")
    def _tie_key(position, seed):
        """The position-th output of splitmix64 seeded with ``seed``, as int64."""
        z = seed + (position + _ONE) * _GAMMA
        z = (z ^ (z >> _SHIFT_1)) * _MULTIPLIER_1
        z = (z ^ (z >> _SHIFT_2)) * _MULTIPLIER_2
        return np.int64(z ^ (z >> _SHIFT_3))

    # ------------------------------------------------------------------ graphs

    @numba.njit(nogil=True, cache=True)
    def _count_rows_worker(counter, chunk, bits, counts):
        n_rows, n_cols = bits.shape
        while True:
            first, last = _next_chunk(counter, chunk, n_rows)
            if first >= n_rows:
                return 0
            for r in range(first, last):
                row = bits[r]
                total = 0
                for c in range(n_cols):
                    total += row[c]
                counts[r + 1] = total

    @numba.njit(nogil=True, cache=True)
    def _fill_rows_worker(counter, chunk, bits, ptr, nbrs):
        n_rows, n_cols = bits.shape
        while True:
            first, last = _next_chunk(counter, chunk, n_rows)
            if first >= n_rows:
                return 0
            for r in range(first, last):
                row = bits[r]
                at = ptr[r]
                for c in range(n_cols):
                    if row[c]:
                        nbrs[at] = c
                        at += _ONE

    @numba.njit(nogil=True, cache=True)
    def _bucket(n_buckets, owners, members):
        """CSR grouping ``members`` by ``owners`` (stable): (uint64 pointers, uint32 members)."""
        ptr = np.zeros(n_buckets + 1, dtype=np.uint64)
        for e in range(owners.shape[0]):
            ptr[owners[e] + 1] += _ONE
        for b in range(n_buckets):
            ptr[b + 1] += ptr[b]
        fill = ptr[:-1].copy()
        grouped = np.empty(owners.shape[0], dtype=np.uint32)
        for e in range(owners.shape[0]):
            owner = owners[e]
            grouped[fill[owner]] = members[e]
            fill[owner] += _ONE
        return ptr, grouped

    @numba.njit(nogil=True, cache=True)
    def _transpose_csr(n_cols, ptr, nbrs):
        """The CSR of the transposed matrix; rows come out ascending within each column."""
        owners = np.empty(nbrs.shape[0], dtype=np.uint32)
        for r in range(ptr.shape[0] - 1):
            for t in range(ptr[r], ptr[r + 1]):
                owners[t] = r
        return _bucket(n_cols, nbrs, owners)

    @numba.njit(nogil=True, cache=True)
    def _first_duplicate(ptr, nbrs):
        for r in range(ptr.shape[0] - 1):
            for t in range(ptr[r] + _ONE, ptr[r + 1]):
                if nbrs[t] == nbrs[t - _ONE]:
                    return r
        return -1

    # ------------------------------------------------------------------ one row

    @numba.njit(nogil=True, cache=True, inline="always")
    def _count_common_rows(i, row_ptr, row_nbrs, col_ptr, col_nbrs, common):
        """common[k] = number of columns shared by rows i and k (k != i; row i collects junk)."""
        for t in range(row_ptr[i], row_ptr[i + 1]):
            u = row_nbrs[t]
            for s in range(col_ptr[u], col_ptr[u + 1]):
                common[col_nbrs[s]] += 1

    @numba.njit(nogil=True, cache=True, inline="always")
    def _clear_common_rows(i, row_ptr, row_nbrs, col_ptr, col_nbrs, common):
        for t in range(row_ptr[i], row_ptr[i + 1]):
            u = row_nbrs[t]
            for s in range(col_ptr[u], col_ptr[u + 1]):
                common[col_nbrs[s]] = 0

    @numba.njit(nogil=True, cache=True, inline="always")
    def _count_pairs(i, u, row_ptr, row_nbrs, col_ptr, col_nbrs, count, step):
        """count[j] += step for every wedge u - k - j with k != i: the common rows of columns u and j
        (exact for every j not linked to i)."""
        for s in range(col_ptr[u], col_ptr[u + 1]):
            k = col_nbrs[s]
            if k != i:
                for r in range(row_ptr[k], row_ptr[k + 1]):
                    count[row_nbrs[r]] += step

    @numba.njit(nogil=True, cache=True, inline="always")
    def _exact_row(i, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets, u_factors,
                   pair_counts, common, count, acc):
        """acc[j] += h(d_k, c_ik) * h(d_u, c_uj) over the paths i - u - k - j, in path order.

        With a ``pair_counts`` table (n_cols x n_cols) the column-pair counts c_uj are read from it;
        with an empty one they are counted on the fly into ``count``: same factors, same operations.
        """
        _count_common_rows(i, row_ptr, row_nbrs, col_ptr, col_nbrs, common)
        tabled = pair_counts.shape[0] > 0
        for t in range(row_ptr[i], row_ptr[i + 1]):
            u = row_nbrs[t]
            base = u_offsets[u]
            if tabled:
                pairs = pair_counts[u]
                for s in range(col_ptr[u], col_ptr[u + 1]):
                    k = col_nbrs[s]
                    if k != i:
                        k_factor = k_factors[k_offsets[k] + common[k]]
                        for r in range(row_ptr[k], row_ptr[k + 1]):
                            j = row_nbrs[r]
                            acc[j] += k_factor * u_factors[base + pairs[j]]
            else:
                _count_pairs(i, u, row_ptr, row_nbrs, col_ptr, col_nbrs, count, 1)
                for s in range(col_ptr[u], col_ptr[u + 1]):
                    k = col_nbrs[s]
                    if k != i:
                        k_factor = k_factors[k_offsets[k] + common[k]]
                        for r in range(row_ptr[k], row_ptr[k + 1]):
                            j = row_nbrs[r]
                            acc[j] += k_factor * u_factors[base + count[j]]
                _count_pairs(i, u, row_ptr, row_nbrs, col_ptr, col_nbrs, count, -1)
        _clear_common_rows(i, row_ptr, row_nbrs, col_ptr, col_nbrs, common)

    @numba.njit(nogil=True, cache=True, inline="always")
    def _node_row(i, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets, u_factors,
                  common, community, count, acc):
        """L3n: each row k sharing columns with i adds h(d_k, c_ik)^2 to its columns; each column u of i
        adds h(d_u, c_uj)^2 to every column j sharing rows with it."""
        size = 0
        for t in range(row_ptr[i], row_ptr[i + 1]):
            u = row_nbrs[t]
            for s in range(col_ptr[u], col_ptr[u + 1]):
                k = col_nbrs[s]
                if k != i:
                    if common[k] == 0:
                        community[size] = k
                        size += 1
                    common[k] += 1
        for m in range(size):
            k = community[m]
            factor = k_factors[k_offsets[k] + common[k]]
            weight = factor * factor
            common[k] = 0
            for r in range(row_ptr[k], row_ptr[k + 1]):
                acc[row_nbrs[r]] += weight
        for t in range(row_ptr[i], row_ptr[i + 1]):
            u = row_nbrs[t]
            _count_pairs(i, u, row_ptr, row_nbrs, col_ptr, col_nbrs, count, 1)
            base = u_offsets[u]
            for s in range(col_ptr[u], col_ptr[u + 1]):
                k = col_nbrs[s]
                if k != i:
                    for r in range(row_ptr[k], row_ptr[k + 1]):
                        j = row_nbrs[r]
                        if count[j] != 0:
                            factor = u_factors[base + count[j]]
                            acc[j] += factor * factor
                            count[j] = 0

    @numba.njit(nogil=True, cache=True, inline="always")
    def _score_row(i, node_based, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets,
                   u_factors, pair_counts, common, community, count, acc):
        if node_based:
            _node_row(i, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets, u_factors,
                      common, community, count, acc)
        else:
            _exact_row(i, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets, u_factors,
                       pair_counts, common, count, acc)

    # ------------------------------------------------------------------ dense scores

    @numba.njit(nogil=True, cache=True)
    def _pair_counts_worker(counter, chunk, row_ptr, row_nbrs, col_ptr, col_nbrs, pair_counts):
        """pair_counts[u, j] = |N(u) ∩ N(j)|, the rows shared by columns u and j."""
        n_cols = pair_counts.shape[0]
        no_row = np.uint32(row_ptr.shape[0])  # excludes no row from the counts
        while True:
            first, last = _next_chunk(counter, chunk, n_cols)
            if first >= n_cols:
                return 0
            for u in range(first, last):
                _count_pairs(no_row, u, row_ptr, row_nbrs, col_ptr, col_nbrs, pair_counts[u], 1)

    @numba.njit(nogil=True, cache=True)
    def _exact_rows_worker(counter, chunk, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets,
                           u_factors, pair_counts, out):
        n_rows = out.shape[0]
        common = np.zeros(n_rows, dtype=np.uint32)
        unused = np.zeros(0, dtype=np.uint32)
        while True:
            first, last = _next_chunk(counter, chunk, n_rows)
            if first >= n_rows:
                return 0
            for i in range(first, last):
                row = out[i]
                _exact_row(np.uint32(i), row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors,
                           u_offsets, u_factors, pair_counts, common, unused, row)
                for t in range(row_ptr[i], row_ptr[i + 1]):
                    row[row_nbrs[t]] = 0

    @numba.njit(nogil=True, cache=True)
    def _node_rows_worker(counter, chunk, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors,
                          u_offsets, u_factors, out):
        n_rows, n_cols = out.shape
        common = np.zeros(n_rows, dtype=np.uint32)
        community = np.empty(n_rows, dtype=np.uint32)
        count = np.zeros(n_cols, dtype=np.uint32)
        while True:
            first, last = _next_chunk(counter, chunk, n_rows)
            if first >= n_rows:
                return 0
            for i in range(first, last):
                row = out[i]
                _node_row(np.uint32(i), row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets,
                          u_factors, common, community, count, row)
                for t in range(row_ptr[i], row_ptr[i + 1]):
                    row[row_nbrs[t]] = 0

    # ------------------------------------------------------------------ blocked top-n

    @numba.njit(nogil=True, cache=True)
    def _compact(scores, keys, positions, size, keep):
        """Move the ``keep`` best of the first ``size`` entries (score desc, key asc) to the front.

        Returns (kept, score, key) of the worst kept entry: later entries must beat it to enter.
        """
        if size <= keep:
            return size, -1.0, np.iinfo(np.int64).max
        score_cut = np.partition(scores[:size], size - keep)[size - keep]
        above = 0
        for e in range(size):
            if scores[e] > score_cut:
                above += 1
        tied_keys = keys[:size][scores[:size] == score_cut]
        key_cut = np.partition(tied_keys, keep - above - 1)[keep - above - 1]
        kept = 0
        for e in range(size):
            if scores[e] > score_cut or (scores[e] == score_cut and keys[e] <= key_cut):
                scores[kept], keys[kept], positions[kept] = scores[e], keys[e], positions[e]
                kept += 1
        return kept, float(score_cut), key_cut

    @numba.njit(nogil=True, cache=True)
    def _top_rows_worker(counter, chunk, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors, u_offsets,
                         u_factors, node_based, row_stride, col_stride, use_seed, seed, positive_only, like,
                         keep, capacity):
        """Score rows one at a time and keep the ``keep`` best candidates seen by this worker.

        Returns (scores, keys, positions, positive candidates) of what it kept.
        """
        n_rows = row_ptr.shape[0] - 1
        n_cols = col_ptr.shape[0] - 1
        acc = np.zeros(n_cols, dtype=like.dtype)
        count = np.zeros(n_cols, dtype=np.uint32)
        common = np.zeros(n_rows, dtype=np.uint32)
        community = np.empty(n_rows, dtype=np.uint32)
        no_table = np.zeros((0, 0), dtype=np.uint32)
        scores = np.empty(capacity, dtype=like.dtype)
        keys = np.empty(capacity, dtype=np.int64)
        positions = np.empty(capacity, dtype=np.int64)
        size, score_cut, key_cut = 0, -1.0, np.iinfo(np.int64).max
        n_positive = 0
        while True:
            first, last = _next_chunk(counter, chunk, n_rows)
            if first >= n_rows:
                break
            for i in range(first, last):
                _score_row(np.uint32(i), node_based, row_ptr, row_nbrs, col_ptr, col_nbrs, k_offsets, k_factors,
                           u_offsets, u_factors, no_table, common, community, count, acc)
                for t in range(row_ptr[i], row_ptr[i + 1]):
                    acc[row_nbrs[t]] = -1  # a link, not a candidate
                row_position = np.uint64(i) * row_stride
                for j in range(n_cols):
                    score = acc[j]
                    acc[j] = 0
                    if score > 0:
                        n_positive += 1
                    elif score < 0 or positive_only:
                        continue
                    if score < score_cut:
                        continue
                    position = row_position + np.uint64(j) * col_stride
                    key = _tie_key(position, seed) if use_seed else np.int64(position)
                    if score == score_cut and key >= key_cut:
                        continue
                    scores[size], keys[size], positions[size] = score, key, np.int64(position)
                    size += 1
                    if size == capacity:
                        size, score_cut, key_cut = _compact(scores, keys, positions, size, keep)
        size = _compact(scores, keys, positions, size, keep)[0]
        return scores[:size], keys[:size], positions[:size], n_positive
