"""Coalescent hyperbolic embedding and the angular separation index."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from cht.analysis import angular_separation_index, fit_power_law, hyperbolic_embedding, layered_graph
from cht.analysis.embedding import angular_mistakes, popularity_radii, repulsion_attraction_weights
from cht.analysis.graph import largest_component
from cht.analysis.synthetic import group_of_neurons, stochastic_block_masks

SIZES = [60, 60, 60, 60]


def planted_labels(sizes: list[int], n_groups: int = 2) -> np.ndarray:
    return np.concatenate([group_of_neurons(size, n_groups) for size in sizes])


@pytest.mark.parametrize("seed", [0, 1])
def test_embedding_separates_planted_communities(seed: int) -> None:
    planted = hyperbolic_embedding(stochastic_block_masks(SIZES, p_in=0.2, p_out=0.01, seed=seed))
    random = hyperbolic_embedding(stochastic_block_masks(SIZES, p_in=0.105, p_out=0.105, seed=seed))
    labels = planted_labels(SIZES)
    assert angular_separation_index(planted.angle, labels) > 0.8
    assert angular_separation_index(random.angle, labels) < 0.3


def reference_le_angles(masks: list[torch.Tensor], pre_weighting: str) -> np.ndarray:
    """Dense RA1 (with common neighbours, as in the authors' MATLAB code) + generalised eigenproblem."""
    adjacency = layered_graph(masks).adjacency.toarray()
    degree = adjacency.sum(axis=1)
    if pre_weighting == "RA1":
        common = adjacency @ adjacency
        distance = adjacency * (degree[None, :] + degree[:, None] + np.outer(degree, degree)) / (1 + common)
        kernel = np.where(adjacency > 0, np.exp(-(distance / distance[adjacency > 0].mean()) ** 2), 0.0)
    else:
        kernel = adjacency
    strength = np.diag(kernel.sum(axis=1))
    _, vectors = scipy.linalg.eigh(strength - kernel, strength)
    return np.mod(np.arctan2(vectors[:, 2], vectors[:, 1]), 2 * np.pi)


@pytest.mark.parametrize("pre_weighting", ["RA1", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_angles_solve_the_laplacian_eigenproblem(seed: int, pre_weighting: str) -> None:
    masks = stochastic_block_masks([15, 20, 15], p_in=0.3, p_out=0.3, seed=seed)
    assert largest_component(layered_graph(masks).adjacency).size == 50
    angles = hyperbolic_embedding(masks, seed=seed, pre_weighting=pre_weighting).angle
    expected = reference_le_angles(masks, pre_weighting)
    # Eigenvectors are defined up to sign: flipping x maps θ to π − θ, flipping y maps θ to −θ.
    candidates = [np.mod(np.arctan2(sy * np.sin(expected), sx * np.cos(expected)), 2 * np.pi)
                  for sx, sy in itertools.product([1, -1], repeat=2)]
    errors = [np.abs(np.angle(np.exp(1j * (angles - candidate)))).max() for candidate in candidates]
    assert min(errors) < 1e-5


def test_repulsion_attraction_weights_match_dense_formula() -> None:
    graph = layered_graph(stochastic_block_masks([8, 10, 6], p_in=0.4, p_out=0.4, seed=3))
    dense = graph.adjacency.toarray()
    degree = dense.sum(axis=1)
    expected = dense * (degree[:, None] + degree[None, :] + np.outer(degree, degree)) / (1 + dense @ dense)
    weights = graph.adjacency.copy()
    weights.data = repulsion_attraction_weights(graph.adjacency)
    np.testing.assert_allclose(weights.toarray(), expected)


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.6])
def test_popularity_radii_match_loop(beta: float) -> None:
    degree = np.array([3, 7, 7, 1, 4, 7, 2])
    order = sorted(range(degree.size), key=lambda node: (-degree[node], node))
    expected = np.empty(degree.size)
    for rank, node in enumerate(order, start=1):
        expected[node] = max(0.0, 2 * beta * math.log(rank) + 2 * (1 - beta) * math.log(degree.size))
    np.testing.assert_allclose(popularity_radii(degree, beta), expected)


def test_embedding_coordinates() -> None:
    main = stochastic_block_masks([40, 50, 40], p_in=0.15, p_out=0.15, seed=4)
    # Add a separate two-link component: inputs 40, 41 linked to one new hidden neuron.
    masks = [torch.zeros(42, 51, dtype=torch.bool), torch.zeros(51, 40, dtype=torch.bool)]
    masks[0][:40, :50], masks[1][:50] = main
    masks[0][40, 50] = masks[0][41, 50] = True
    embedding = hyperbolic_embedding(masks, seed=0)
    graph = layered_graph(masks)
    embedded = np.zeros(graph.n_nodes, dtype=bool)
    embedded[largest_component(graph.adjacency)] = True
    np.testing.assert_array_equal(embedding.embedded, embedded)
    assert np.isnan(embedding.radius[~embedded]).all()
    assert ((embedding.angle[embedded] >= 0) & (embedding.angle[embedded] < 2 * np.pi)).all()
    degree = graph.degree[embedded]
    assert embedding.beta == pytest.approx(1 / (fit_power_law(degree).gamma_mle - 1))
    np.testing.assert_allclose(embedding.radius[embedded], popularity_radii(degree, embedding.beta))
    np.testing.assert_array_equal(embedding.layer, graph.layer)
    repeat = hyperbolic_embedding(masks, seed=0)
    np.testing.assert_array_equal(repeat.angle, embedding.angle)


def test_equidistant_adjustment_keeps_the_order() -> None:
    masks = stochastic_block_masks([30, 40, 30], p_in=0.2, p_out=0.2, seed=5)
    original = hyperbolic_embedding(masks).angle
    spaced = hyperbolic_embedding(masks, equidistant=True).angle
    n_nodes = spaced.size
    np.testing.assert_array_equal(np.argsort(spaced), np.argsort(original, kind="stable"))
    np.testing.assert_allclose(np.sort(spaced), 2 * np.pi * np.arange(n_nodes) / n_nodes)


@pytest.mark.parametrize("size", [2, 3, 6])
def test_angles_stay_below_two_pi(size: int) -> None:
    # A diagonal mask plus one extra link gives a path whose embedding puts nodes on the negative x axis.
    masks = [torch.eye(size, dtype=torch.bool), torch.eye(size, dtype=torch.bool)]
    masks[0][0, 1] = True
    angles = hyperbolic_embedding(masks).angle
    embedded = angles[~np.isnan(angles)]
    assert embedded.size == 6
    assert ((embedded >= 0) & (embedded < 2 * np.pi)).all()


def test_tiny_network_is_not_embedded() -> None:
    masks = [torch.tensor([[True, False], [False, False]]), torch.tensor([[True], [False]])]
    embedding = hyperbolic_embedding(masks)
    assert not embedding.embedded.any() and math.isnan(embedding.beta)


def test_bad_pre_weighting_raises() -> None:
    with pytest.raises(ValueError, match="pre_weighting"):
        hyperbolic_embedding(stochastic_block_masks([5, 5], 0.5, 0.5), pre_weighting="EBC")


def reference_mistakes(codes: np.ndarray) -> int:
    """Every circular window of each group's size, counted one by one."""
    n_nodes = codes.size
    total = 0
    for group in set(codes.tolist()):
        size = int((codes == group).sum())
        best = max(sum(codes[(start + k) % n_nodes] == group for k in range(size))
                   for start in range(n_nodes))
        total += size - best
    return total


@pytest.mark.parametrize("seed", range(6))
def test_angular_mistakes_match_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_groups = seed % 4 + 2
    grouped = np.repeat(np.arange(n_groups), rng.integers(1, 8, n_groups))  # sizes 1..7, singletons too
    rows = np.stack([grouped] + [rng.permutation(grouped) for _ in range(6)])
    np.testing.assert_array_equal(angular_mistakes(rows), [reference_mistakes(codes) for codes in rows])
    assert angular_mistakes(grouped[None, :])[0] == 0


def test_separated_groups_score_one_and_random_scores_near_zero() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], [30, 50, 20])
    sectors = np.concatenate([rng.uniform(0, 2, 30), rng.uniform(2.5, 4, 50), rng.uniform(4.5, 6, 20)])
    assert angular_separation_index(sectors, labels) == 1.0
    # A sector may wrap around angle 0.
    assert angular_separation_index(np.mod(sectors + 5.0, 2 * np.pi), labels) == 1.0
    scores = [angular_separation_index(rng.uniform(0, 2 * np.pi, 100), labels, seed=s) for s in range(10)]
    assert 0.0 <= min(scores) and np.mean(scores) < 0.15


def test_separation_ignores_nan_angles_and_reports_undefined_cases() -> None:
    angles = np.array([0.1, 0.2, 3.0, 3.1, np.nan, np.nan])
    labels = np.array([0, 0, 1, 1, 0, 2])
    assert angular_separation_index(angles, labels) == 1.0
    assert math.isnan(angular_separation_index(angles, np.zeros(6)))
    assert math.isnan(angular_separation_index(np.array([0.1, 1.0, 2.0]), np.array([0, 1, 2])))
    assert math.isnan(angular_separation_index(np.full(3, np.nan), np.array([0, 1, 2])))


def test_separation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        angular_separation_index(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="n_permutations"):
        angular_separation_index(np.zeros(4), np.zeros(4), n_permutations=0)
