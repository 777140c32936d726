"""Coalescent embedding of a layered sparse network in the hyperbolic disk, and angular separation.

Follows Muscoloni, Thomas, Ciucci, Bianconi & Cannistraci, *Machine learning meets complex networks
via coalescent embedding in the hyperbolic space*, Nat. Commun. 8, 1615 (2017), variant RA1-LE:

1. Repulsion-attraction pre-weighting of each link, ``x_ij = (d_i + d_j + d_i d_j) / (1 + CN_ij)``.
   Adjacent nodes of a layered (bipartite) graph share no neighbour, so ``CN_ij = 0`` here.
2. Laplacian eigenmaps of the heat kernel ``exp(-(x_ij / mean x)^2)``: eigenvectors 2 and 3 of
   ``L f = λ D f`` (scikit-learn's ``spectral_embedding``, ARPACK, seeded start vector). The angle
   of each node is the polar angle of its two coordinates; optionally the angles are replaced by
   equidistant ones in the same order ("EA" adjustment).
3. Radial coordinate by the popularity-similarity rule with curvature ``ζ = 1``:
   ``r_i = max(0, 2 β ln i + 2 (1 − β) ln N)`` with ``i`` the rank by decreasing degree (ties by
   node index), ``N`` the embedded nodes and ``β = 1 / (γ − 1)`` from the maximum-likelihood
   exponent of the degree distribution (``β = 1`` when no exponent can be fitted).

Only the largest connected component is embedded (a spectral embedding of several components
places each in its own degenerate eigenspace); other nodes get NaN coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.manifold import spectral_embedding

from cht.analysis.graph import MaskLike, largest_component, layered_graph
from cht.analysis.power_law import fit_power_law

MIN_EMBEDDED_NODES = 4
"""ARPACK needs more nodes than the three eigenvectors it computes."""


@dataclass(frozen=True)
class HyperbolicEmbedding:
    """Polar coordinates per node (NaN outside the embedded component) and the β used for radii."""

    angle: np.ndarray
    radius: np.ndarray
    layer: np.ndarray
    beta: float

    @property
    def embedded(self) -> np.ndarray:
        return ~np.isnan(self.angle)


def repulsion_attraction_weights(adjacency: sp.csr_array) -> np.ndarray:
    """RA1 weight of every stored entry of a bipartite adjacency (CSR order)."""
    degree = np.diff(adjacency.indptr).astype(float)
    rows = np.repeat(np.arange(degree.size), np.diff(adjacency.indptr))
    d_i, d_j = degree[rows], degree[adjacency.indices]
    return d_i + d_j + d_i * d_j


def popularity_radii(degree: np.ndarray, beta: float) -> np.ndarray:
    """``max(0, 2 β ln rank + 2 (1 − β) ln N)`` with ranks by decreasing degree, ties by index."""
    n_nodes = degree.size
    rank = np.empty(n_nodes)
    rank[np.argsort(-degree, kind="stable")] = np.arange(1, n_nodes + 1)
    return np.maximum(0.0, 2 * beta * np.log(rank) + 2 * (1 - beta) * math.log(n_nodes))


def hyperbolic_embedding(masks: Sequence[MaskLike], seed: int = 0, *,
                         pre_weighting: Literal["RA1", "none"] = "RA1",
                         equidistant: bool = False) -> HyperbolicEmbedding:
    """Embed the layered network in the hyperbolic disk (coalescent embedding, RA1-LE).

    ``pre_weighting="none"`` runs Laplacian eigenmaps on the unweighted graph. ``equidistant``
    keeps the angular order but spaces the angles evenly. When the largest component has fewer
    than ``MIN_EMBEDDED_NODES`` nodes nothing is embedded (all NaN, ``beta`` NaN).
    """
    if pre_weighting not in ("RA1", "none"):
        raise ValueError(f"pre_weighting must be 'RA1' or 'none', got {pre_weighting!r}")
    graph = layered_graph(masks)
    angle = np.full(graph.n_nodes, np.nan)
    radius = np.full(graph.n_nodes, np.nan)
    nodes = largest_component(graph.adjacency)
    if nodes.size < MIN_EMBEDDED_NODES:
        return HyperbolicEmbedding(angle=angle, radius=radius, layer=graph.layer, beta=math.nan)

    component = graph.adjacency[nodes][:, nodes]
    weights = component.copy()
    weights.indices = weights.indices.astype(np.int32)
    weights.indptr = weights.indptr.astype(np.int32)
    if pre_weighting == "RA1":
        distance = repulsion_attraction_weights(component)
        weights.data = np.exp(-(distance / distance.mean()) ** 2)
    coordinates = spectral_embedding(weights, n_components=2, eigen_solver="arpack", random_state=seed,
                                     norm_laplacian=True, drop_first=True)
    theta = np.mod(np.arctan2(coordinates[:, 1], coordinates[:, 0]), 2 * np.pi)
    theta[theta >= 2 * np.pi] = 0.0  # the modulo of a tiny negative angle rounds up to 2π
    if equidistant:
        order = np.argsort(theta, kind="stable")
        theta[order] = 2 * np.pi * np.arange(nodes.size) / nodes.size
    degree = np.diff(component.indptr)
    gamma = fit_power_law(degree).gamma_mle
    beta = 1.0 / (gamma - 1.0) if math.isfinite(gamma) else 1.0
    angle[nodes] = theta
    radius[nodes] = popularity_radii(degree, beta)
    return HyperbolicEmbedding(angle=angle, radius=radius, layer=graph.layer, beta=beta)


def angular_mistakes(ordered_codes: np.ndarray) -> np.ndarray:
    """Mistakes per row of ``(n_rows, n)`` group codes (same group sizes in every row) in circular order.

    A group of ``k`` nodes makes ``k − w`` mistakes, ``w`` being the most members found in any
    circular window of ``k`` consecutive nodes; a row's mistakes sum over groups.
    """
    n_rows, n_nodes = ordered_codes.shape
    total = np.zeros(n_rows, dtype=np.int64)
    for code, size in enumerate(np.bincount(ordered_codes[0])):
        if size == 0:
            continue
        member = (ordered_codes == code).astype(np.int64)
        wrapped = np.concatenate([member, member[:, :size - 1]], axis=1)
        cumulative = np.concatenate([np.zeros((n_rows, 1), dtype=np.int64), wrapped.cumsum(axis=1)], axis=1)
        best_window = (cumulative[:, size:] - cumulative[:, :-size]).max(axis=1)
        total += size - best_window
    return total


def angular_separation_index(angles: np.ndarray, labels: np.ndarray, *, n_permutations: int = 100,
                             seed: int = 0) -> float:
    """How well groups (layers, communities) occupy separate angular sectors, in [0, 1].

    Nodes are ordered by angle around the circle. A group of ``k`` nodes makes as many mistakes as
    it has members outside its best circular window of ``k`` consecutive nodes; ``M`` sums the
    mistakes of all groups. The index is ``1 − M / E[M]`` clipped to [0, 1], where ``E[M]`` is the
    mean of ``M`` over ``n_permutations`` seeded random relabellings with the same group sizes:
    1 means every group fills one contiguous sector, 0 means no better than angles unrelated to the
    groups. Nodes with NaN angle are left out. NaN when fewer than two groups remain, or when every
    arrangement is perfectly separated (``E[M] = 0``, e.g. all groups singletons).
    """
    angles = np.asarray(angles, dtype=float)
    labels = np.asarray(labels)
    if angles.ndim != 1 or labels.shape != angles.shape:
        raise ValueError(f"angles and labels must be 1-D of equal length, got shapes {angles.shape} "
                         f"and {labels.shape}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    keep = ~np.isnan(angles)
    _, codes = np.unique(labels[keep], return_inverse=True)
    if codes.size == 0 or codes.max() < 1:
        return math.nan
    ordered = codes[np.argsort(angles[keep], kind="stable")]
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(ordered) for _ in range(n_permutations)])
    expected = angular_mistakes(shuffled).mean()
    if expected == 0:
        return math.nan
    observed = angular_mistakes(ordered[None, :])[0]
    return float(np.clip(1.0 - observed / expected, 0.0, 1.0))
