"""CH regrowth for layers too large for a dense score matrix: the top-n non-links, scored row by row.

A 65,536 x 65,536 layer has 4.3e9 candidate pairs: a float32 score matrix alone is 17 GB.
:func:`top_n_links` scores the layer one row at a time per thread and keeps only the best
candidates seen so far, so its memory is the links plus the ``n`` chosen ones. It chooses exactly
what the dense route chooses on CPU::

    select_top_n(link_scores(mask, rule), ~mask, n, generator, positive_only)

(same scores to the last bit, same tie keys, same generator draw), so either route can serve a
layer and switching between them changes nothing. It runs on CPU (numba); links on CUDA are moved
to CPU and the result back.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from cht.topology import numba_kernels
from cht.topology.rules import get_rule
from cht.topology.selection import draw_tie_seed


class TopLinks(NamedTuple):
    """The chosen non-links, ascending by flat position ``i * n_out + j``, and the positive count.

    ``n_positive`` is the number of non-links scoring > 0 in the whole layer: with
    ``positive_only`` and ``n > n_positive``, the shortage ``n - n_positive`` is the caller's to fill.
    """

    src: torch.Tensor
    dst: torch.Tensor
    n_positive: int


def top_n_links(
    n_in: int,
    n_out: int,
    src: torch.Tensor,
    dst: torch.Tensor,
    n: int,
    rule: str = "CH3-L3",
    generator: torch.Generator | None = None,
    positive_only: bool = True,
    *,
    dtype: torch.dtype = torch.float32,
    block_rows: int | None = None,
) -> TopLinks:
    """The ``n`` non-links of a layer with the highest CH scores, without a dense score matrix.

    Args:
        n_in: neurons on the input side of the layer.
        n_out: neurons on the output side of the layer.
        src: int64 tensor, link ``e`` joining input ``src[e]`` to output ``dst[e]`` (any order, each
            link once): the current (post-removal) graph.
        dst: int64 tensor of the same length as ``src``: the output end of each link.
        n: how many non-links to choose. Fewer come back when the layer has fewer candidates, or
            with ``positive_only`` fewer positively scored ones.
        rule: one of :func:`cht.topology.available_rules` (exact path rules and L3n).
        generator: breaks ties at the cut-off as :func:`cht.topology.select_top_n` does (one draw).
        positive_only: choose only non-links scoring > 0.
        dtype: float32 (default, as :func:`cht.topology.link_scores`) or float64 scores.
        block_rows: rows per work unit handed to a thread (default: automatic); never changes the
            result.

    Returns:
        :class:`TopLinks` (``src``, ``dst`` int64 on the device of ``src``, and ``n_positive``).
    """
    spec = get_rule(rule)
    _check_arguments(n_in, n_out, src, dst, n, dtype, block_rows)
    if not numba_kernels.AVAILABLE:
        raise ValueError("top_n_links needs the numba package; install it, or score densely with link_scores")
    seed = draw_tie_seed(generator)
    src_cpu, dst_cpu = (t.detach().to("cpu", torch.int64).numpy() for t in (src, dst))
    layer = numba_kernels.layer_from_links(n_in, n_out, src_cpu, dst_cpu)
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    positions, n_positive = numba_kernels.top_n(layer, spec, compute_dtype, int(n), seed, positive_only,
                                                block_rows)
    positions = torch.from_numpy(positions).to(src.device)
    return TopLinks(positions // max(n_out, 1), positions % max(n_out, 1), n_positive)


def _check_arguments(n_in: int, n_out: int, src: torch.Tensor, dst: torch.Tensor, n: int,
                     dtype: torch.dtype, block_rows: int | None) -> None:
    for name, value in (("n_in", n_in), ("n_out", n_out), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name}={value!r} must be a non-negative integer")
    for name, tensor in (("src", src), ("dst", dst)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 1 or tensor.is_floating_point() \
                or tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"{name} must be a 1-D integer tensor of link endpoints (int64), "
                             f"got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    if src.shape != dst.shape:
        raise ValueError(f"src has {src.numel()} links but dst has {dst.numel()}; they must pair up")
    for name, tensor, size in (("src", src, n_in), ("dst", dst, n_out)):
        if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= size):
            raise ValueError(f"{name} holds neurons outside 0..{size - 1}; "
                             f"{'n_in' if name == 'src' else 'n_out'} is {size}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r} must be a floating torch dtype such as torch.float32")
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, numbers.Integral)
                                   or block_rows < 1):
        raise ValueError(f"block_rows={block_rows!r} must be a positive integer (or None for automatic)")
