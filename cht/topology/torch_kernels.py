"""Portable scorers in plain torch ops: the same code runs on CPU and CUDA.

The path kernels enumerate L3 paths ``i - u - k - j`` (or the wedges inside them) as flat index tensors
and accumulate with ``index_add_``, so the work is proportional to the number of paths, never to
``(n_in + n_out)**2``. Input rows are processed in chunks holding at most ``chunk_paths`` paths (a
single row is never split), which bounds the transient memory. They expect ``n_out <= n_in`` (the caller
transposes): the dense per-pair tables they keep are ``n_out x n_out`` and, per chunk, ``rows x n_in``;
neither exceeds the layer or the chunk budget.

The one exception, :func:`dense_node_scores`, computes the node-based rules by dense products instead:
its work ignores the density, which makes it the fast one on dense layers, where paths abound.

On CUDA the float sums use atomic adds, so their last bits may differ from run to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from cht.topology.graph import Bipartite
from cht.topology.rules import factor_table, intermediate_factor


def paths_per_input(graph: Bipartite) -> torch.Tensor:
    """Number of L3 paths ``i - u - k - j`` (four distinct nodes) starting at each input ``i``, int64.

    Paths ending at outputs already linked to ``i`` are included: they are real paths, and the
    kernels walk them before discarding the scores of links.
    """
    in_degree, out_degree = graph.in_degree.long(), graph.out_degree.long()
    input_of_edge = _owners(graph.in_ptr)
    # Of the walks u - k - j leaving u, drop those through k = i (deg i of them) and those back to
    # j = u through some k != i (deg u - 1 of them).
    walks = _walks_from_outputs(graph)[graph.out_of]
    per_edge = walks - in_degree[input_of_edge] - (out_degree[graph.out_of] - 1)
    per_input = torch.zeros(graph.n_in, dtype=torch.int64, device=in_degree.device)
    return per_input.index_add_(0, input_of_edge, per_edge)


def _walks_from_outputs(graph: Bipartite) -> torch.Tensor:
    """Walks ``u - k - j`` leaving each output ``u``: the summed degrees of its inputs, int64."""
    walks = torch.zeros(graph.n_out, dtype=torch.int64, device=graph.in_ptr.device)
    return walks.index_add_(0, _owners(graph.out_ptr), graph.in_degree.long()[graph.in_of])


def row_chunks(graph: Bipartite, chunk_paths: int) -> Iterator[tuple[int, int]]:
    """Consecutive input-row ranges walking at most ``chunk_paths`` paths each (one row at least).

    The kernels walk every ``i - u - k - j``, including the few walks that are not paths (``k = i``
    or ``j = u``), whose contributions are zero or land on links. A chunk also keeps a ``rows x n_in``
    table of common-neighbour counts, so its rows are capped at ``max(n_out, chunk_paths / n_in)``:
    the table stays within the layer size or the chunk budget. Rows are also capped so that flat
    positions in the chunk's ``rows x n_out`` block fit in int32.
    """
    max_rows = max(graph.n_out, chunk_paths // max(graph.n_in, 1), 1)
    max_rows = min(max_rows, (2**31 - 1) // max(graph.n_out, 1))
    walks = torch.zeros(graph.n_in, dtype=torch.int64, device=graph.in_ptr.device)
    walks.index_add_(0, _owners(graph.in_ptr), _walks_from_outputs(graph)[graph.out_of])
    return _ranges(walks, chunk_paths, max_size=max_rows)


def output_pair_factors(graph: Bipartite, factor: str, dtype: torch.dtype, chunk_paths: int) -> torch.Tensor:
    """``h(d_u, |N(u) ∩ N(j)|)`` for every output pair, dense ``(n_out, n_out)`` (0 where no common input).

    Common-input counts come from the wedges ``u - k - j`` (sum of squared input degrees), not from a
    dense product.
    """
    n_out = graph.n_out
    counts = torch.zeros(n_out * n_out, dtype=dtype, device=graph.in_ptr.device)
    one = torch.ones(1, dtype=dtype, device=counts.device)
    in_degree = graph.in_degree.long()
    for start, stop in _ranges(in_degree * in_degree, chunk_paths):
        first, last = int(graph.in_ptr[start]), int(graph.in_ptr[stop])
        # Each link (k, u) of these inputs fans out to the outputs j of k.
        k, u = _owners(graph.in_ptr[start:stop + 1]) + start, graph.out_of[first:last]
        slot, position = _fan_out(graph.in_ptr, k)
        keys = (u * n_out).index_select(0, slot).add_(graph.out_of.index_select(0, position))
        counts.index_add_(0, keys, one.expand(keys.numel()))
    return pair_factors_from_counts(graph, factor, counts.view(n_out, n_out), dtype)


def pair_factors_from_counts(graph: Bipartite, factor: str, counts: torch.Tensor,
                             dtype: torch.dtype) -> torch.Tensor:
    """``h(d_u, counts[u, j])`` of ``dtype`` from dense common-input counts ``(n_out, n_out)``, 0 where none."""
    factors = intermediate_factor(factor, graph.out_degree.to(dtype)[:, None], counts)
    return torch.where(counts > 0, factors, torch.zeros((), dtype=dtype, device=counts.device))


def exact_path_scores(graph: Bipartite, factor: str, dtype: torch.dtype, chunk_paths: int) -> torch.Tensor:
    """``sum over paths (u, k) of h(d_u, c_u) * h(d_k, c_k)`` for every pair, links included.

    Output-side factors are a dense table (one entry per output pair); input-side factors depend on the
    row ``i`` and are computed per chunk from the wedges ``i - u - k`` of its rows.
    """
    n_in, n_out = graph.n_in, graph.n_out
    pair_factors = output_pair_factors(graph, factor, dtype, chunk_paths).view(-1)
    k_offsets, k_factors = factor_table(factor, graph.in_degree, dtype)
    scores = torch.zeros(n_in, n_out, dtype=dtype, device=graph.in_ptr.device)
    for start, stop in row_chunks(graph, chunk_paths):
        wedges = _input_wedges(graph, start, stop)
        common = torch.bincount(wedges.key, minlength=(stop - start) * n_in)[wedges.key]
        k_factor = k_factors[k_offsets[wedges.k] + common]
        # Each wedge i - u - k fans out to the outputs j of k: one path per position.
        slot, position = _fan_out(graph.in_ptr, wedges.k)
        j = graph.out_of.index_select(0, position)
        values = pair_factors.index_select(0, (wedges.u * n_out).index_select(0, slot).add_(j))
        values *= k_factor.index_select(0, slot)
        targets = (wedges.row * n_out).index_select(0, slot).add_(j)
        scores[start:stop].view(-1).index_add_(0, targets, values)
    return scores


def node_scores(graph: Bipartite, factor: str, dtype: torch.dtype, chunk_paths: int) -> torch.Tensor:
    """L3n: ``sum_{k in N(j), c_k > 0} h(d_k, c_k)^2 + sum_{u in N(i), c_u > 0} h(d_u, c_u)^2``, links included.

    Each community node counts once per pair: distinct input pairs ``(i, k)`` and output pairs
    ``(u, j)`` with a common neighbour are enumerated, then spread over ``N(k)`` and ``N(i)``.
    """
    n_in, n_out = graph.n_in, graph.n_out
    device = graph.in_ptr.device
    output_weights = output_pair_factors(graph, factor, dtype, chunk_paths).square_()
    u_of_pair, j_of_pair = output_weights.nonzero().unbind(1)
    pair_weights = output_weights[u_of_pair, j_of_pair]
    pair_ptr = torch.zeros(n_out + 1, dtype=torch.int64, device=device)
    pair_ptr[1:] = torch.cumsum(torch.bincount(u_of_pair, minlength=n_out), 0)
    k_offsets, k_factors = factor_table(factor, graph.in_degree, dtype)
    scores = torch.zeros(n_in, n_out, dtype=dtype, device=device)
    for start, stop in row_chunks(graph, chunk_paths):
        block = scores[start:stop].view(-1)
        common = torch.bincount(_input_wedges(graph, start, stop).key, minlength=(stop - start) * n_in)
        row, k = common.view(stop - start, n_in).nonzero().unbind(1)
        k_weights = k_factors[k_offsets[k] + common.view(stop - start, n_in)[row, k]].square_()
        slot, position = _fan_out(graph.in_ptr, k)
        targets = (row * n_out).index_select(0, slot).add_(graph.out_of.index_select(0, position))
        block.index_add_(0, targets, k_weights.index_select(0, slot))
        edge_row, edge_u = _edges_of_rows(graph, start, stop)
        slot, pairs = _fan_out(pair_ptr, edge_u)
        targets = (edge_row * n_out).index_select(0, slot).add_(j_of_pair.index_select(0, pairs))
        block.index_add_(0, targets, pair_weights.index_select(0, pairs))
    return scores


def dense_node_scores(mask: torch.Tensor, factor: str, dtype: torch.dtype) -> torch.Tensor:
    """L3n by dense products, links included: the same sums as :func:`node_scores`, from
    ``C_in = A Aᵀ`` and ``C_out = Aᵀ A`` (common-neighbour counts, exact in floating point) as
    ``W_in A + A W_out`` with ``W_in[i, k] = h(d_k, C_in[i, k])²`` and ``W_out[u, j] = h(d_u, C_out[u, j])²``
    (0 where no neighbour is shared; the diagonals count ``c = d``, whose factor is 0).

    ``2 · n_in · n_out · (n_in + n_out)`` multiply-adds whatever the density: far less than walking the
    paths of a dense layer (a 784 × 784 layer at 50% density has about 5·10¹⁰ of them), far more on a
    sparse one. Memory: ``n_in² + n_out²`` more numbers than the scores.
    """
    adjacency = mask.to(dtype)
    in_degree, out_degree = adjacency.sum(1), adjacency.sum(0)
    common_in = adjacency @ adjacency.T
    weights = intermediate_factor(factor, in_degree[None, :], common_in).square_()
    scores = weights.masked_fill_(common_in == 0, 0) @ adjacency
    del common_in, weights
    common_out = adjacency.T @ adjacency
    weights = intermediate_factor(factor, out_degree[:, None], common_out).square_()
    return scores.addmm_(adjacency, weights.masked_fill_(common_out == 0, 0))


def dense_product_work(mask: torch.Tensor) -> tuple[int, int]:
    """(multiply-adds of :func:`dense_node_scores`, walks ``i - u - k - j`` a path kernel takes) for ``mask``.

    The walks (the L3 paths and the few that revisit a node) number ``sum_u d_u · sum_{k in N(u)} d_k``:
    a matrix-vector product of the degrees, cheap next to either kernel."""
    n_in, n_out = mask.shape
    adjacency = mask.to(torch.float32)  # counts below 2**24 are exact; larger ones need only be close
    onward = adjacency.T @ adjacency.sum(1)  # per output u: the summed degrees of its inputs
    walks = float(adjacency.sum(0).double() @ onward.double())
    return 2 * n_in * n_out * (n_in + n_out), int(walks)


class _Wedges(NamedTuple):
    """Wedges ``i - u - k`` of a row range; ``row = i - start``, ``key = row * n_in + k``.

    Wedges back to ``k = i`` are kept: they count ``d_i`` common neighbours of ``i`` with itself, a
    count whose factor is 0, so the walks through them add nothing (and end on links anyway).
    """

    row: torch.Tensor
    u: torch.Tensor
    k: torch.Tensor
    key: torch.Tensor


def _input_wedges(graph: Bipartite, start: int, stop: int) -> _Wedges:
    edge_row, edge_u = _edges_of_rows(graph, start, stop)
    slot, position = _fan_out(graph.out_ptr, edge_u)
    k = graph.in_of.index_select(0, position)
    row, u = edge_row.index_select(0, slot), edge_u.index_select(0, slot)
    return _Wedges(row, u, k, row.long() * graph.n_in + k)


def _edges_of_rows(graph: Bipartite, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row - start, output) of every link of inputs ``start <= row < stop``."""
    first, last = int(graph.in_ptr[start]), int(graph.in_ptr[stop])
    return _owners(graph.in_ptr[start:stop + 1]), graph.out_of[first:last]


def _fan_out(ptr: torch.Tensor, owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every CSR position ``ptr[o] .. ptr[o+1]-1`` of every owner ``o`` in ``owners``, in turn.

    Returns ``(slot, position)``: ``position[t]`` belongs to owner ``owners[slot[t]]``. Indices are
    int32 while they fit, to halve the memory traffic of the per-path arrays.
    """
    starts = ptr.index_select(0, owners)
    counts = ptr.index_select(0, owners + 1) - starts
    first = torch.cumsum(counts, 0) - counts
    total = int(first[-1] + counts[-1]) if owners.numel() else 0
    index_dtype = ptr.dtype if total < 2**31 else torch.int64
    slot = _slots(first.to(index_dtype), total)
    position = (starts - first).to(index_dtype).index_select(0, slot)
    return slot, position.add_(torch.arange(total, dtype=index_dtype, device=ptr.device))


def _slots(first: torch.Tensor, total: int) -> torch.Tensor:
    """Owner of each of ``total`` consecutive positions, owner ``o`` starting at ``first[o]``.

    Same result as ``repeat_interleave`` of the counts, whose CPU kernel stalls for milliseconds per
    call on busy machines; marks at owner starts and a cumulative sum cost three cheap passes.
    """
    marks = torch.zeros(total + 1, dtype=first.dtype, device=first.device)
    marks.index_add_(0, first[1:], torch.ones_like(first[1:]))
    return torch.cumsum(marks[:total], 0, dtype=first.dtype)


def _owners(ptr: torch.Tensor) -> torch.Tensor:
    """Owner index of every entry of a CSR with pointers ``ptr`` (a slice of pointers is fine)."""
    return _slots(ptr[:-1] - ptr[0], int(ptr[-1] - ptr[0]))


def _ranges(work: torch.Tensor, budget: int, max_size: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive index ranges whose summed ``work`` stays within ``budget`` (one index at least)."""
    cumulative = torch.cumsum(work, 0).cpu()
    start, done = 0, 0
    while start < work.numel():
        stop = max(int(torch.searchsorted(cumulative, done + budget, right=True)), start + 1)
        if max_size is not None:
            stop = min(stop, start + max_size)
        yield start, stop
        done = int(cumulative[stop - 1])
        start = stop
