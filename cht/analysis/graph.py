"""A stack of sparse layers seen as one layered graph.

Neuron layer ``0`` holds the inputs of ``masks[0]``; neuron layer ``l + 1`` holds the outputs of
``masks[l]`` (which are the inputs of ``masks[l + 1]``). Nodes are numbered layer after layer, so
node ``offsets[l] + i`` is neuron ``i`` of neuron layer ``l``. Links only join consecutive layers:
the graph is bipartite (even against odd layers) and has no triangles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse import csgraph

MaskLike = torch.Tensor | np.ndarray


def check_masks(masks: Sequence[MaskLike]) -> list[torch.Tensor]:
    """Validate consecutive ``(n_in, n_out)`` boolean masks and return them as torch tensors.

    numpy arrays are wrapped without copying; tensors keep their device.
    """
    if isinstance(masks, (torch.Tensor, np.ndarray)):
        raise TypeError("masks must be a list of 2-D boolean masks, one per sparse layer; "
                        "wrap a single mask as [mask]")
    tensors: list[torch.Tensor] = []
    for index, mask in enumerate(masks):
        tensor = torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"masks[{index}] is a {type(mask).__name__}; pass a torch.Tensor or numpy array")
        if tensor.dtype != torch.bool:
            raise TypeError(f"masks[{index}] has dtype {tensor.dtype}; "
                            "pass a boolean mask (e.g. weight != 0)")
        if tensor.dim() != 2 or min(tensor.shape) == 0:
            raise ValueError(f"masks[{index}] has shape {tuple(tensor.shape)}; each mask must be 2-D "
                             "(n_in, n_out) with at least one neuron on each side")
        if tensors:
            previous = tensors[-1]
            if tensor.shape[0] != previous.shape[1]:
                raise ValueError(f"masks[{index}] has {tensor.shape[0]} inputs but masks[{index - 1}] has "
                                 f"{previous.shape[1]} outputs; consecutive masks must share a neuron layer")
            if tensor.device != previous.device:
                raise ValueError(f"masks[{index}] is on {tensor.device} but masks[{index - 1}] on "
                                 f"{previous.device}; put all masks on one device")
        tensors.append(tensor)
    if not tensors:
        raise ValueError("masks is empty: pass at least one (n_in, n_out) boolean mask")
    return tensors


def layer_sizes(masks: Sequence[torch.Tensor]) -> list[int]:
    """Number of neurons in each neuron layer (``len(masks) + 1`` entries)."""
    return [int(masks[0].shape[0])] + [int(mask.shape[1]) for mask in masks]


@dataclass(frozen=True)
class ActiveNeurons:
    """Active neurons per neuron layer, and the active-neuron proportion (ANP) over all neurons."""

    per_layer: list[int]
    sizes: list[int]
    anp: float

    @property
    def anp_per_layer(self) -> list[float]:
        return [active / size for active, size in zip(self.per_layer, self.sizes)]


def active_neurons(masks: Sequence[MaskLike]) -> ActiveNeurons:
    """Count active neurons, cheaply enough to call at every evolution step.

    A neuron is active when it has at least one outgoing link; the outputs of the last sparse layer
    (which feed a dense head) are active when they have at least one incoming link. Input pixels
    count as neurons. Runs on the masks' device with a single host synchronisation.
    """
    tensors = check_masks(masks)
    counts = [mask.any(dim=1).sum() for mask in tensors] + [tensors[-1].any(dim=0).sum()]
    per_layer = [int(count) for count in torch.stack(counts).tolist()]
    sizes = layer_sizes(tensors)
    return ActiveNeurons(per_layer=per_layer, sizes=sizes, anp=sum(per_layer) / sum(sizes))


def active_neurons_of_links(links: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]]) -> ActiveNeurons:
    """:func:`active_neurons` of layers given as link sets (sorted positions ``o * n_in + i`` in layer
    convention ``(out, in)``, see :mod:`cht.sparse.links`): memory follows the links, not the positions."""
    if not links or len(links) != len(shapes):
        raise ValueError(f"need one link set per shape, got {len(links)} link sets and {len(shapes)} shapes")
    counts = [torch.unique(index % n_in).numel() for index, (_, n_in) in zip(links, shapes)]
    counts.append(torch.unique(torch.div(links[-1], shapes[-1][1], rounding_mode="floor")).numel())
    sizes = [shapes[0][1]] + [n_out for n_out, _ in shapes]
    return ActiveNeurons(per_layer=counts, sizes=sizes, anp=sum(counts) / sum(sizes))


@dataclass(frozen=True)
class LayeredGraph:
    """Symmetric CSR adjacency of the whole layered network plus each node's neuron layer."""

    adjacency: sp.csr_array
    layer: np.ndarray
    sizes: list[int]

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.adjacency.indptr)

    @property
    def n_nodes(self) -> int:
        return int(self.layer.size)


def layered_graph(masks: Sequence[MaskLike]) -> LayeredGraph:
    """Build the layered graph (unweighted, int32 indices as scikit-learn requires)."""
    tensors = check_masks(masks)
    sizes = layer_sizes(tensors)
    offsets = np.cumsum([0] + sizes)
    sources, targets = [], []
    for index, mask in enumerate(tensors):
        links = mask.nonzero().cpu().numpy()
        sources.append(links[:, 0] + offsets[index])
        targets.append(links[:, 1] + offsets[index + 1])
    source = np.concatenate(sources).astype(np.int32)
    target = np.concatenate(targets).astype(np.int32)
    n_nodes = int(offsets[-1])
    rows = np.concatenate([source, target])
    cols = np.concatenate([target, source])
    adjacency = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n_nodes, n_nodes))
    adjacency.sort_indices()
    layer = np.repeat(np.arange(len(sizes)), sizes)
    return LayeredGraph(adjacency=adjacency, layer=layer, sizes=sizes)


def largest_component(adjacency: sp.sparray) -> np.ndarray:
    """Node indices of the largest connected component (ties: the one holding the lowest index)."""
    if adjacency.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    _, labels = csgraph.connected_components(adjacency, directed=False)
    return np.flatnonzero(labels == np.bincount(labels).argmax())
