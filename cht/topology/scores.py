"""Link-prediction scores of every non-link of a sparse layer: the public entry point.

A layer is the bipartite graph of its boolean mask ``A`` (n_in, n_out). The rules, their exact
definitions and the node-based L3n variants are described in :mod:`cht.topology.rules`.

The score of a pair is symmetric under swapping the two sides of the layer (``scores(A).T ==
scores(A.T)``), so the kernels always run with the smaller side as outputs: their dense per-pair
tables then never exceed the size of the layer.
"""

from __future__ import annotations

import torch

from cht.topology import numba_kernels, torch_kernels, triton_kernels
from cht.topology.graph import Bipartite
from cht.topology.rules import get_rule

SCORERS = ("auto", "torch", "numba", "triton", "matmul")
# A walk of the path kernels costs about as much as 20 multiply-adds of a dense product (CH3-L3n at 784 x 784
# breaks even between 5% and 10% density on a CPU): "auto" scores a node-based rule by dense products when
# the layer has more walks than this fraction of their multiply-adds.
MATMUL_MIN_WALKS_PER_MULTIPLY_ADD = 0.05
# Triton supports NVIDIA GPUs of compute capability 8.0 and newer; "auto" uses plain torch on older ones.
TRITON_MIN_CAPABILITY = (8, 0)


def link_scores(
    mask: torch.Tensor,
    rule: str = "CH3-L3",
    *,
    dtype: torch.dtype = torch.float32,
    scorer: str = "auto",
    chunk_paths: int | None = None,
) -> torch.Tensor:
    """Score every non-link of a layer with a CH L3 rule; existing links score exactly 0.

    Args:
        mask: bool tensor (n_in, n_out), ``mask[i, j]`` true when input ``i`` links to output ``j``.
        rule: one of :func:`cht.topology.available_rules`.
        dtype: floating dtype of the result. float64 is exact to rounding; float32 (default) keeps
            tables and sums in float32 (relative error about 1e-6) and runs about twice as fast on
            CPU; other floating dtypes are computed in float32 and cast.
        scorer: ``"numba"`` (CPU only; compiled, parallel), ``"triton"`` (CUDA only; fused kernels
            that walk the paths row by row, without per-path index arrays), ``"torch"`` (any device;
            the reference GPU path), ``"matmul"`` (node-based rules only, any device: dense
            products whose cost ignores density, for dense layers) or ``"auto"``: matmul for a
            node-based rule on a layer dense enough that it is cheaper than walking the paths (GraNet
            and CHTss start at 50% density), else numba for CPU tensors when numba is installed, triton
            for CUDA tensors when triton is installed and supports the GPU, torch otherwise. With
            ``TRITON_INTERPRET=1`` set before triton is imported, ``"triton"`` also runs on CPU tensors,
            in Triton's interpreter (slow: for checking the kernels without a GPU).
        chunk_paths: paths per work chunk of the torch kernels, bounding their transient memory
            (about 32 bytes per path); default :func:`default_chunk_paths`. The other scorers
            hold no per-path memory and ignore it.

    Returns:
        Tensor of shape ``mask.shape`` on ``mask.device`` with dtype ``dtype``. The numba scorer
        returns it row-major along the larger side of the layer: a transposed view when
        ``n_out > n_in`` (so ``link_scores(mask.t()).t()`` of a wide ``(n_out, n_in)`` mask is
        contiguous and costs no copy).

    The rules treat both sides of the layer alike, so a mask stored as (n_out, n_in) gives the same
    scores in that layout: ``link_scores(mask.T) == link_scores(mask).T``.
    """
    spec = get_rule(rule)
    _check_mask(mask)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r} must be a floating torch dtype such as torch.float32")
    if scorer == "matmul" and not spec.node_based:
        raise ValueError(f"scorer='matmul' computes node-based rules only; {rule} walks paths: use 'auto'")
    if scorer == "auto" and spec.node_based and _dense_products_cheaper(mask):
        scorer = "matmul"
    scorer = _resolve_scorer(scorer, mask.device)
    if chunk_paths is None:
        chunk_paths = default_chunk_paths(mask.device)
    elif not (isinstance(chunk_paths, int) and chunk_paths > 0):
        raise ValueError(f"chunk_paths={chunk_paths!r} must be a positive integer (or None for the default)")

    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if scorer == "matmul":
        return torch_kernels.dense_node_scores(mask, spec.factor, compute_dtype).masked_fill_(mask, 0).to(dtype)
    if scorer == "numba":
        return numba_kernels.link_scores(mask, spec, compute_dtype).to(dtype)
    transposed = mask.shape[1] > mask.shape[0]
    layer = mask.T if transposed else mask
    graph = Bipartite.from_mask(layer)
    if scorer == "triton":
        scores = triton_kernels.scores(graph, layer, spec, compute_dtype)
    elif spec.node_based:
        scores = torch_kernels.node_scores(graph, spec.factor, compute_dtype, chunk_paths)
    else:
        scores = torch_kernels.exact_path_scores(graph, spec.factor, compute_dtype, chunk_paths)
    scores.masked_fill_(layer, 0)
    if transposed:
        scores = scores.T.contiguous()
    return scores.to(dtype)


def default_chunk_paths(device: torch.device) -> int:
    """Paths per work chunk of the torch kernels (about 32 bytes of transient memory each).

    On CUDA, fewer and larger chunks save kernel launches: up to 2**27 paths (4 GiB), using at most a
    quarter of the free device memory. On CPU, 2**21 paths (64 MiB).
    """
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        return max(2**20, min(2**27, free_bytes // (4 * 32)))
    return 2**21


def count_l3_paths(mask: torch.Tensor) -> int:
    """Number of L3 paths ``i - u - k - j`` between inputs and outputs: the work of the exact rules."""
    _check_mask(mask)
    return int(torch_kernels.paths_per_input(Bipartite.from_mask(mask)).sum())


def _check_mask(mask: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a 2-D bool tensor (n_in, n_out), got {type(mask).__name__}")
    if mask.dtype != torch.bool or mask.dim() != 2:
        described = f"{mask.dtype} tensor of shape {tuple(mask.shape)}"
        raise ValueError(
            f"mask must be a 2-D bool tensor (n_in, n_out), got {described}; pass e.g. weight != 0"
        )


def _dense_products_cheaper(mask: torch.Tensor) -> bool:
    multiply_adds, walks = torch_kernels.dense_product_work(mask)
    return walks > MATMUL_MIN_WALKS_PER_MULTIPLY_ADD * multiply_adds


def _resolve_scorer(scorer: str, device: torch.device) -> str:
    if scorer not in SCORERS:
        raise ValueError(f"scorer={scorer!r} must be one of {', '.join(SCORERS)}")
    if scorer == "auto":
        if device.type == "cpu" and numba_kernels.AVAILABLE:
            return "numba"
        if device.type == "cuda" and triton_kernels.AVAILABLE and \
                torch.cuda.get_device_capability(device) >= TRITON_MIN_CAPABILITY:
            return "triton"
        return "torch"
    if scorer == "numba":
        if device.type != "cpu":
            raise ValueError(f"scorer='numba' runs on CPU tensors only (mask is on {device}); use 'torch'")
        if not numba_kernels.AVAILABLE:
            raise ValueError("scorer='numba' needs the numba package; install it or use scorer='torch'")
    if scorer == "triton":
        if not triton_kernels.AVAILABLE:
            raise ValueError("scorer='triton' needs the triton package; install it or use scorer='torch'")
        if device.type != "cuda" and not triton_kernels.INTERPRETED:
            raise ValueError(
                f"scorer='triton' runs on CUDA tensors (mask is on {device}); use 'numba' or 'torch', or set "
                "TRITON_INTERPRET=1 before importing cht to run the kernels in Triton's (slow) CPU interpreter"
            )
    return scorer
