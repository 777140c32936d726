"""Network-science measures of a trained sparse network (paper §4: ANP, γ, modularity, paths, clustering).

Which nodes enter which measure:

* ``anp`` / ``anp_per_layer`` count every neuron (inputs included); see :func:`active_neurons`.
* ``degree_distributions`` count every neuron of a layer side, isolated ones (degree 0) included.
* Everything else (``gamma``, communities, components, path length, clustering) works on the
  *linked subgraph*: the neurons with at least one link. Isolated neurons carry no topology;
  counting them as singleton components or communities would only measure how many were dropped,
  which ``anp`` already reports.

Libraries: ``powerlaw`` (Clauset–Shalizi–Newman fit and likelihood-ratio test), networkx (Louvain
communities, modularity, square clustering), scipy.sparse.csgraph (components, breadth-first
shortest paths in C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse import csgraph

from cht.analysis.embedding import angular_separation_index, hyperbolic_embedding
from cht.analysis.graph import MaskLike, active_neurons, check_masks, largest_component, layered_graph
from cht.analysis.power_law import fit_power_law

PATH_CHUNK = 256
"""Breadth-first searches run per call to scipy, bounding memory to ``PATH_CHUNK × n`` distances."""


def detect_communities(graph: nx.Graph, seed: int = 0) -> tuple[list[set[int]], float]:
    """Louvain partition (networkx, resolution 1, fixed seed), largest community first, and its modularity.

    Links count as unweighted (edge attributes are ignored). Louvain's top level is the best
    partition it finds; with a fixed seed the result is reproducible. A graph without links has no
    community structure: ``([], nan)``.
    """
    if graph.number_of_edges() == 0:
        return [], math.nan
    communities = nx.community.louvain_communities(graph, weight=None, seed=seed)
    modularity = float(nx.community.modularity(graph, communities, weight=None))
    return sorted(communities, key=lambda members: (-len(members), min(members))), modularity


def community_labels(communities: Sequence[set[int]], linked: np.ndarray, n_nodes: int) -> np.ndarray:
    """Community index of every node, -1 for nodes outside ``linked``.

    ``communities`` index the linked subgraph: its node ``k`` is node ``linked[k]`` of the network.
    """
    labels = np.full(n_nodes, -1)
    for label, members in enumerate(communities):
        labels[linked[list(members)]] = label
    return labels


def characteristic_path_length(adjacency: sp.sparray, path_sources: int | None = 8192,
                               seed: int = 0) -> tuple[float, bool]:
    """Mean shortest-path length between distinct nodes of the largest connected component.

    Exact (breadth-first search from every node) when the component has at most ``path_sources``
    nodes or ``path_sources`` is None; otherwise the mean over all targets of BFS from
    ``path_sources`` sources drawn without replacement with ``seed`` (an unbiased estimate).
    Returns ``(length, exact)``; the length is NaN when the component has fewer than two nodes.
    """
    if path_sources is not None and path_sources < 1:
        raise ValueError(f"path_sources must be a positive int or None, got {path_sources}")
    nodes = largest_component(adjacency)
    n_nodes = nodes.size
    if n_nodes < 2:
        return math.nan, True
    component = adjacency[nodes][:, nodes]
    exact = path_sources is None or n_nodes <= path_sources
    sources = (np.arange(n_nodes) if exact
               else np.sort(np.random.default_rng(seed).choice(n_nodes, size=path_sources, replace=False)))
    total = 0.0
    for start in range(0, sources.size, PATH_CHUNK):
        chunk = sources[start:start + PATH_CHUNK]
        total += csgraph.shortest_path(component, directed=False, unweighted=True, indices=chunk).sum()
    return total / (sources.size * (n_nodes - 1)), exact


def _summary(values: np.ndarray) -> dict[str, Any]:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": int(values.min()),
            "max": int(values.max()), "histogram": np.bincount(values).tolist()}


def _weight_statistics(masks: list[torch.Tensor],
                       weights: Sequence[MaskLike]) -> dict[str, list[float] | list[int]]:
    if len(weights) != len(masks):
        raise ValueError(f"weights has {len(weights)} entries but masks has {len(masks)}; pass one per mask")
    means, stds, zeros = [], [], []
    for index, (mask, weight) in enumerate(zip(masks, weights)):
        values = torch.as_tensor(weight)
        if values.shape != mask.shape:
            raise ValueError(f"weights[{index}] has shape {tuple(values.shape)} but masks[{index}] has "
                             f"{tuple(mask.shape)}; pass weights as (n_in, n_out), e.g. layer.dense_weight().t()")
        linked = values.detach().to(mask.device)[mask].abs().double()
        means.append(float(linked.mean()) if linked.numel() else math.nan)
        stds.append(float(linked.std(correction=0)) if linked.numel() else math.nan)
        zeros.append(int((linked == 0).sum()))
    return {"weight_abs_mean_per_layer": means, "weight_abs_std_per_layer": stds,
            "zero_weight_links_per_layer": zeros}


def network_metrics(masks: Sequence[MaskLike], weights: Sequence[MaskLike] | None = None, *,
                    embedding: bool = False, seed: int = 0,
                    path_sources: int | None = 8192) -> dict[str, Any]:
    """Topology of consecutive sparse layers as a JSON-serialisable dict (NaN marks undefined values).

    ``masks[l]`` is ``(n_in, n_out)`` boolean. Keys:

    * ``anp``, ``anp_per_layer``, ``active_per_layer``: see :func:`active_neurons`;
    * ``degree_distributions``: per mask, out-degrees of its inputs and in-degrees of its outputs
      (mean, std, min, max, ``histogram[k]`` = neurons of degree k);
    * ``gamma`` (+ ``gamma_reason`` when NaN, and the fit details): :func:`fit_power_law` of the
      total degree of every linked neuron;
    * ``modularity``, ``n_communities``: :func:`detect_communities` (Louvain, ``seed``);
    * ``n_components``, ``largest_component_size``, ``char_path_length`` (largest component; see
      :func:`characteristic_path_length` for ``path_sources``), ``char_path_length_exact``;
    * ``square_clustering``: mean over linked neurons of the square clustering coefficient
      (Lind et al. 2005, networkx), the share of possible 4-cycles through a node that exist; the
      ordinary (triangle) clustering is always 0 in a layered graph.

    Optional ``weights[l]`` (same shape as ``masks[l]``, e.g. ``layer.dense_weight().t()``) add per-layer
    mean and std of ``|w|`` over the links and the count of links whose weight is exactly 0.
    ``embedding=True`` adds ``embedding_beta`` and the angular separation index of layers and of
    communities in the coalescent hyperbolic embedding (:func:`hyperbolic_embedding`).
    """
    tensors = check_masks(masks)
    activity = active_neurons(tensors)
    graph = layered_graph(tensors)
    linked = np.flatnonzero(graph.degree > 0)
    sub_adjacency = graph.adjacency[linked][:, linked]
    n_components = int(csgraph.connected_components(sub_adjacency, directed=False)[0])

    power_law = fit_power_law(graph.degree)
    nx_graph = nx.from_scipy_sparse_array(sub_adjacency)
    communities, modularity = detect_communities(nx_graph, seed=seed)
    path_length, exact = characteristic_path_length(sub_adjacency, path_sources, seed)
    clustering = float(np.mean(list(nx.square_clustering(nx_graph).values()))) if linked.size else math.nan

    result: dict[str, Any] = {
        "layer_sizes": graph.sizes,
        "n_links_per_layer": [int(mask.sum()) for mask in tensors],
        "density_per_layer": [float(mask.sum()) / mask.numel() for mask in tensors],
        "active_per_layer": activity.per_layer,
        "anp": activity.anp,
        "anp_per_layer": activity.anp_per_layer,
        "degree_distributions": [
            {"layer": index,
             "out_degree": _summary(mask.sum(dim=1).cpu().numpy()),
             "in_degree": _summary(mask.sum(dim=0).cpu().numpy())}
            for index, mask in enumerate(tensors)],
        "n_linked_nodes": int(linked.size),
        "gamma": power_law.gamma,
        "gamma_reason": power_law.reason,
        "gamma_mle": power_law.gamma_mle,
        "gamma_xmin": power_law.xmin,
        "gamma_n_tail": power_law.n_tail,
        "gamma_loglikelihood_ratio_vs_exponential": power_law.loglikelihood_ratio,
        "gamma_p_value_vs_exponential": power_law.p_value,
        "modularity": modularity,
        "n_communities": len(communities),
        "n_components": n_components,
        "largest_component_size": int(largest_component(sub_adjacency).size),
        "char_path_length": float(path_length),
        "char_path_length_exact": exact,
        "square_clustering": clustering,
    }
    if weights is not None:
        result |= _weight_statistics(tensors, weights)
    if embedding:
        coordinates = hyperbolic_embedding(tensors, seed=seed)
        community = community_labels(communities, linked, graph.n_nodes)
        result |= {
            "embedding_beta": coordinates.beta,
            "embedding_asi_layers": angular_separation_index(coordinates.angle, graph.layer, seed=seed),
            "embedding_asi_communities": angular_separation_index(coordinates.angle, community, seed=seed),
        }
    return result


def run_topology(masks_path: str | Path, *, embedding: bool = False, seed: int = 0,
                 path_sources: int | None = 8192) -> dict[str, Any]:
    """:func:`network_metrics` of a run's ``masks.pt`` (empty for a dense model, which has no sparse layers)."""
    from cht.io import load_tensors

    masks = load_tensors(masks_path)
    return network_metrics(masks, embedding=embedding, seed=seed, path_sources=path_sources) if masks else {}
