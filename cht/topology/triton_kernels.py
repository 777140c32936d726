"""Fused GPU scorers (Triton): the row-by-row walk of :mod:`cht.topology.numba_kernels`, one program per row.

The torch kernels materialise several indices per L3 path, so on CUDA they are bound by memory
traffic and kernel launches. Here program ``i`` walks the paths ``i - u - k - j`` of input row ``i``
straight from the CSR adjacency, one tile at a time: a tile holds up to ``BLOCK_K`` inputs ``k`` of
one output ``u`` (the wedges ``i - u - k``) times up to ``BLOCK_D`` outputs ``j`` of each ``k``.
For each tile it

1. counts the common outputs ``c_k = |N(i) ∩ N(k)|`` as the ``j in N(k)`` linked to ``i``, read off
   row ``i`` of the mask (so no per-row scratch table is needed);
2. adds ``h(d_k, c_k) * h(d_u, c_uj)`` to ``scores[i, j]`` for every path ending on a non-link, with
   ``h(d_u, c_uj)`` read from the dense output-pair table.

``BLOCK_D`` covers the degree of nearly every input met on a wedge (:func:`launch_sizes`); a wider
input (a hub) is walked alone, in chunks of ``BLOCK_K * BLOCK_D`` outputs, counting first and adding
second. Rare hubs thus cost no padding for the other inputs.

Only program ``i`` writes row ``i``: no two programs touch the same score. Its adds are atomic
because paths through different ``k`` of one tile can end on the same ``j``; the float sums then
run in varying order, so their last bits may differ between runs (as with the torch kernels).

Node-based (L3n) rules reuse the walk: an input ``k`` of the community counts once, on the wedge
through its smallest common output with ``i``, with weight ``h(d_k, c_k)^2`` spread over ``N(k)``;
then the squared output-pair table rows of ``N(i)`` are summed into row ``i``.

Kernels expect ``n_out <= n_in`` (the caller transposes), so the output-pair table never exceeds the
layer. On CPU tensors they run only under Triton's interpreter: slow, but it checks the kernels without a
GPU. Triton reads ``TRITON_INTERPRET=1`` when it is imported, so set it before importing this package.
"""

from __future__ import annotations

import contextlib

import torch

from cht.topology.graph import Bipartite
from cht.topology.rules import Rule, factor_table
from cht.topology.torch_kernels import pair_factors_from_counts

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with the CUDA builds of torch on Linux
    triton = None

AVAILABLE = triton is not None
# INTERPRETED (set below the kernels): TRITON_INTERPRET=1 was set when triton was imported, so the
# kernels run in Triton's CPU interpreter, on tensors of any device.

# A tile has BLOCK_K x BLOCK_D paths. About 1024 paths per 4 warps (8 per thread) keeps registers near
# 90 per thread on sm_90, so that several programs share each multiprocessor and hide the latency of
# their gathers and atomic adds.
TILE_PATHS, PATHS_PER_THREAD, MIN_BLOCK_K, MIN_BLOCK_D, MAX_BLOCK_D, MAX_BLOCK_J = 1024, 8, 2, 16, 1024, 1024
MIN_WARPS, MAX_WARPS = 4, 16


def scores(graph: Bipartite, links: torch.Tensor, rule: Rule, dtype: torch.dtype) -> torch.Tensor:
    """Scores of every pair (links included) of ``dtype`` (float32 or float64) on the graph's device.

    ``links`` is the bool mask ``(n_in, n_out)`` the graph was built from.
    """
    result = torch.zeros(graph.n_in, graph.n_out, dtype=dtype, device=links.device)
    if graph.out_of.numel() == 0:
        return result
    # Triton launches on the current CUDA device: make it the mask's.
    with torch.cuda.device(links.device) if links.device.type == "cuda" else contextlib.nullcontext():
        sizes = launch_sizes(graph)
        pair_values = _output_pair_factors(graph, rule.factor, dtype, sizes)
        if rule.node_based:
            pair_values.square_()
        k_offsets, k_factors = factor_table(rule.factor, graph.in_degree, dtype)
        _row_scores[(graph.n_in,)](
            graph.in_ptr, graph.out_of, graph.out_ptr, graph.in_of, links.contiguous().view(torch.uint8),
            k_offsets, k_factors, pair_values, result, graph.n_out,
            NODE_BASED=rule.node_based, BLOCK_J=min(MAX_BLOCK_J, triton.next_power_of_2(graph.n_out)), **sizes,
        )
    return result


def launch_sizes(graph: Bipartite) -> dict[str, int]:
    """BLOCK_K, BLOCK_D and num_warps shared by both kernels, from the degrees of a graph with links.

    BLOCK_D is the power of two that minimises the estimated cost of the wedge ends: an input ``k``
    ends ``sum of d_u over u in N(k)`` wedges, each costing BLOCK_D lanes when ``d_k <= BLOCK_D`` and
    two passes over ``d_k`` rounded up to whole chunks of BLOCK_K * BLOCK_D lanes otherwise. Uniform
    degrees thus get one BLOCK_D covering them all, rare hubs the chunked walk. BLOCK_K fills the
    tile up to TILE_PATHS, or up to the widest output when that is narrower.
    """
    in_degree, out_degree = graph.in_degree.long(), graph.out_degree.long()
    input_of_link = torch.repeat_interleave(torch.arange(graph.n_in, device=in_degree.device), in_degree,
                                            output_size=graph.out_of.numel())
    wedge_ends = torch.zeros_like(in_degree).index_add_(0, input_of_link, out_degree[graph.out_of])
    on_host = torch.cat((in_degree, wedge_ends, out_degree.max().view(1))).cpu()
    in_degree, wedge_ends, widest_output = on_host[:graph.n_in], on_host[graph.n_in:-1], int(on_host[-1])
    best_cost, sizes = None, {}
    block_d = MIN_BLOCK_D
    while block_d <= MAX_BLOCK_D:
        block_k = max(MIN_BLOCK_K, min(TILE_PATHS // block_d, triton.next_power_of_2(widest_output)))
        chunk = block_k * block_d
        lanes = torch.where(in_degree <= block_d, block_d, 2 * chunk * ((in_degree + chunk - 1) // chunk))
        cost = int((wedge_ends * lanes).sum())
        if best_cost is None or cost < best_cost:
            best_cost, sizes = cost, {"BLOCK_K": block_k, "BLOCK_D": block_d}
        if block_d >= int(in_degree.max()):  # wider tiles only add padding
            break
        block_d *= 2
    warps = sizes["BLOCK_K"] * sizes["BLOCK_D"] // (32 * PATHS_PER_THREAD)
    return {**sizes, "num_warps": min(MAX_WARPS, max(MIN_WARPS, warps))}


def _output_pair_factors(graph: Bipartite, factor: str, dtype: torch.dtype, sizes: dict[str, int]) -> torch.Tensor:
    """``h(d_u, |N(u) ∩ N(j)|)`` for every output pair, dense ``(n_out, n_out)``, 0 where no common input."""
    counts = torch.zeros(graph.n_out, graph.n_out, dtype=torch.int32, device=graph.out_of.device)
    _pair_counts[(graph.n_out,)](graph.in_ptr, graph.out_of, graph.out_ptr, graph.in_of, counts, graph.n_out, **sizes)
    return pair_factors_from_counts(graph, factor, counts, dtype)


# ---------------------------------------------------------------- kernels
# Indices keep the graph's dtype (int32 unless the layer has 2**31 positions), except the row offsets.

if AVAILABLE:

    @triton.jit
    def _row_scores(
        in_ptr, out_of, out_ptr, in_of,  # CSR of the mask by input (in_ptr, out_of) and by output
        links,  # uint8 (n_in, n_out): the mask, to count common outputs and skip paths ending on links
        k_offsets, k_factors,  # h(d_k, c) of input k at k_factors[k_offsets[k] + c]
        pair_values,  # (n_out, n_out): h(d_u, c_uj) for path rules, its square for node-based rules
        result,  # (n_in, n_out), zero on entry
        n_out,
        NODE_BASED: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_J: tl.constexpr,
    ):
        row = tl.program_id(0)
        link_row = links + row.to(tl.int64) * n_out
        score_row = result + row.to(tl.int64) * n_out
        first = tl.load(in_ptr + row)
        last = tl.load(in_ptr + row + 1)
        for edge in range(first, last):
            u = tl.load(out_of + edge)
            wedges_last = tl.load(out_ptr + u + 1)
            for wedge in range(tl.load(out_ptr + u), wedges_last, BLOCK_K):
                slots = wedge + tl.arange(0, BLOCK_K)
                k = tl.load(in_of + slots, mask=slots < wedges_last, other=row)  # k == i walks no path
                on_wedge = k != row
                k_first = tl.load(in_ptr + k, mask=on_wedge, other=0)
                k_last = tl.load(in_ptr + k + 1, mask=on_wedge, other=0)
                narrow = k_last - k_first <= BLOCK_D
                _tile_paths(u, k, on_wedge & narrow, k_first, tl.where(narrow, k_last, k_first), link_row, score_row,
                            out_of, k_offsets, k_factors, pair_values, n_out, NODE_BASED, BLOCK_K, BLOCK_D)
                if tl.max(k_last - k_first, axis=0) > BLOCK_D:  # rare: hubs, one at a time
                    for slot in range(wedge, tl.minimum(wedge + BLOCK_K, wedges_last)):
                        _wide_input_paths(row, u, tl.load(in_of + slot), in_ptr, link_row, score_row, out_of,
                                          k_offsets, k_factors, pair_values, n_out, NODE_BASED, BLOCK_D,
                                          BLOCK_K * BLOCK_D)
        if NODE_BASED:  # output side: the (squared) pair rows of the outputs of i
            for column in range(0, n_out, BLOCK_J):
                columns = column + tl.arange(0, BLOCK_J)
                inside = columns < n_out
                total = tl.zeros([BLOCK_J], dtype=result.dtype.element_ty)
                for edge in range(first, last):
                    total += tl.load(pair_values + tl.load(out_of + edge) * n_out + columns, mask=inside, other=0)
                tl.atomic_add(score_row + columns, total, mask=inside, sem="relaxed")

    @triton.jit
    def _tile_paths(u, k, on_wedge, k_first, k_last, link_row, score_row, out_of, k_offsets, k_factors,
                    pair_values, n_out, NODE_BASED: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        """The paths through a tile of inputs ``k`` of ``u``, each with at most BLOCK_D outputs: one pass."""
        positions = k_first[:, None] + tl.arange(0, BLOCK_D)[None, :]
        on_path = positions < k_last[:, None]
        j = tl.load(out_of + positions, mask=on_path, other=0)
        linked = tl.load(link_row + j, mask=on_path, other=0) != 0
        common = tl.sum(linked.to(tl.int32), axis=1)
        factor = tl.load(k_factors + tl.load(k_offsets + k, mask=on_wedge, other=0) + common, mask=on_wedge, other=0)
        if NODE_BASED:  # each community input once (on the wedge through its smallest common output)
            on_wedge = on_wedge & (tl.min(tl.where(linked, j, n_out), axis=1) == u)
            value = tl.broadcast_to((factor * factor)[:, None], [BLOCK_K, BLOCK_D])
        else:
            value = factor[:, None] * tl.load(pair_values + u * n_out + j, mask=on_path, other=0)
        tl.atomic_add(score_row + j, value, mask=on_path & on_wedge[:, None] & ~linked, sem="relaxed")

    @triton.jit
    def _wide_input_paths(row, u, k, in_ptr, link_row, score_row, out_of, k_offsets, k_factors, pair_values,
                          n_out, NODE_BASED: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
        """The paths through ``k``, if it is wider than BLOCK_D, in chunks of outputs: count common ones, then add."""
        k_first = tl.load(in_ptr + k)
        k_last = tl.load(in_ptr + k + 1)
        if (k != row) & (k_last - k_first > BLOCK_D):
            lanes = tl.arange(0, CHUNK)
            common = tl.zeros([CHUNK], dtype=tl.int32)  # per lane, summed after the walk
            smallest_common = tl.zeros([CHUNK], dtype=out_of.dtype.element_ty) + n_out
            for start in range(k_first, k_last, CHUNK):
                j = tl.load(out_of + start + lanes, mask=start + lanes < k_last, other=0)
                linked = tl.load(link_row + j, mask=start + lanes < k_last, other=0) != 0
                common += linked.to(tl.int32)
                if NODE_BASED:
                    smallest_common = tl.minimum(smallest_common, tl.where(linked, j, n_out))
            factor = tl.load(k_factors + tl.load(k_offsets + k) + tl.sum(common, axis=0))
            if NODE_BASED:  # each community input once (on the wedge through its smallest common output)
                factor = tl.where(tl.min(smallest_common, axis=0) == u, factor * factor, 0)
            if factor != 0:
                for start in range(k_first, k_last, CHUNK):
                    on_path = start + lanes < k_last
                    j = tl.load(out_of + start + lanes, mask=on_path, other=0)
                    on_path = on_path & (tl.load(link_row + j, mask=on_path, other=1) == 0)
                    if NODE_BASED:
                        value = tl.zeros([CHUNK], dtype=factor.dtype) + factor
                    else:
                        value = factor * tl.load(pair_values + u * n_out + j, mask=on_path, other=0)
                    tl.atomic_add(score_row + j, value, mask=on_path, sem="relaxed")

    @triton.jit
    def _pair_counts(
        in_ptr, out_of, out_ptr, in_of,
        counts,  # int32 (n_out, n_out), zero on entry: counts[u, j] = |N(u) ∩ N(j)| on exit
        n_out,
        BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        u = tl.program_id(0)
        count_row = counts + u.to(tl.int64) * n_out
        wedges_last = tl.load(out_ptr + u + 1)
        ones = tl.full([BLOCK_K, BLOCK_D], 1, dtype=tl.int32)
        for wedge in range(tl.load(out_ptr + u), wedges_last, BLOCK_K):
            slots = wedge + tl.arange(0, BLOCK_K)
            on_wedge = slots < wedges_last
            k = tl.load(in_of + slots, mask=on_wedge, other=0)
            k_first = tl.load(in_ptr + k, mask=on_wedge, other=0)
            k_last = tl.load(in_ptr + k + 1, mask=on_wedge, other=0)
            for step in range(0, tl.max(k_last - k_first, axis=0), BLOCK_D):
                positions = k_first[:, None] + step + tl.arange(0, BLOCK_D)[None, :]
                on_path = positions < k_last[:, None]
                j = tl.load(out_of + positions, mask=on_path, other=0)
                tl.atomic_add(count_row + j, ones, mask=on_path, sem="relaxed")

INTERPRETED = AVAILABLE and type(_row_scores).__name__ == "InterpretedFunction"
