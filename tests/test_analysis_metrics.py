"""Network metrics against networkx and graphs with known answers."""

import json
import math

import networkx as nx
import numpy as np
import pytest
import torch

from cht.analysis import (active_neurons, characteristic_path_length, detect_communities, fit_power_law,
                          network_metrics)
from cht.analysis.synthetic import stochastic_block_masks

KARATE_OPTIMAL_MODULARITY = 0.4198
"""Proven maximum modularity of Zachary's karate club (Brandes et al., IEEE TKDE 2008)."""


def links_to_mask(shape: tuple[int, int], links: list[tuple[int, int]]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for i, j in links:
        mask[i, j] = True
    return mask


@pytest.fixture
def percolated() -> list[torch.Tensor]:
    """4 → 3 → 3 → 2 neurons, partly percolated.

    Main component: inputs 0, 1 → hidden h0, h1 → g0, g2 → output o0 (7 neurons).
    Second component: input 3 → h2, a dead end (h2 has no outgoing link, so it is inactive).
    Isolated: input 2, g1, output o1.
    """
    return [links_to_mask((4, 3), [(0, 0), (1, 0), (1, 1), (3, 2)]),
            links_to_mask((3, 3), [(0, 0), (1, 0), (1, 2)]),
            links_to_mask((3, 2), [(0, 0), (2, 0)])]


def to_networkx(masks: list[torch.Tensor]) -> nx.Graph:
    """Linked subgraph built link by link, as an independent reference."""
    graph = nx.Graph()
    for layer, mask in enumerate(masks):
        graph.add_edges_from(((layer, int(i)), (layer + 1, int(j))) for i, j in mask.nonzero().tolist())
    return graph


def test_active_neurons_of_percolated_network(percolated: list[torch.Tensor]) -> None:
    activity = active_neurons(percolated)
    assert activity.per_layer == [3, 2, 2, 1]
    assert activity.sizes == [4, 3, 3, 2]
    assert activity.anp == pytest.approx(8 / 12)
    assert activity.anp_per_layer == pytest.approx([3 / 4, 2 / 3, 2 / 3, 1 / 2])


def test_network_metrics_of_percolated_network(percolated: list[torch.Tensor]) -> None:
    metrics = network_metrics(percolated)
    assert metrics["anp"] == pytest.approx(8 / 12)
    assert metrics["active_per_layer"] == [3, 2, 2, 1]
    assert metrics["n_linked_nodes"] == 9
    assert metrics["n_components"] == 2
    assert metrics["largest_component_size"] == 7
    assert metrics["n_links_per_layer"] == [4, 3, 2]
    first, second, third = metrics["degree_distributions"]
    assert first["out_degree"]["histogram"] == [1, 2, 1]  # degrees 1, 2, 0, 1
    assert first["in_degree"]["histogram"] == [0, 2, 1]  # degrees 2, 1, 1
    assert second["out_degree"]["histogram"] == [1, 1, 1]  # degrees 1, 2, 0
    assert third["in_degree"] == {"mean": 1.0, "std": 1.0, "min": 0, "max": 2, "histogram": [1, 0, 1]}
    reference = to_networkx(percolated)
    main = reference.subgraph(max(nx.connected_components(reference), key=len))
    assert metrics["char_path_length"] == pytest.approx(nx.average_shortest_path_length(main))
    assert metrics["char_path_length_exact"] is True
    assert math.isnan(metrics["gamma"]) and "too few" in metrics["gamma_reason"]


def test_network_metrics_match_networkx_on_random_layers() -> None:
    masks = stochastic_block_masks([30, 40, 40], p_in=0.08, p_out=0.08, seed=2)
    metrics = network_metrics(masks, seed=5)
    reference = to_networkx(masks)
    assert metrics["n_linked_nodes"] == reference.number_of_nodes()
    assert metrics["n_components"] == nx.number_connected_components(reference)
    squares = nx.square_clustering(reference)
    assert metrics["square_clustering"] == pytest.approx(np.mean(list(squares.values())))
    main = reference.subgraph(max(nx.connected_components(reference), key=len))
    assert metrics["char_path_length"] == pytest.approx(nx.average_shortest_path_length(main))
    partition = nx.community.louvain_communities(reference, seed=5)
    assert metrics["modularity"] == pytest.approx(nx.community.modularity(reference, partition), abs=0.05)


def test_network_metrics_is_json_serialisable_and_deterministic() -> None:
    masks = stochastic_block_masks([40, 60, 60], p_in=0.1, p_out=0.02, seed=1)
    metrics = network_metrics(masks, embedding=True, seed=3)
    assert json.loads(json.dumps(metrics)) == json.loads(json.dumps(network_metrics(masks, embedding=True,
                                                                                    seed=3)))
    for key in ("embedding_asi_layers", "embedding_asi_communities"):
        assert 0.0 <= metrics[key] <= 1.0


def test_planted_communities_raise_modularity() -> None:
    planted = network_metrics(stochastic_block_masks([60, 80, 80], p_in=0.15, p_out=0.005, seed=0))
    random = network_metrics(stochastic_block_masks([60, 80, 80], p_in=0.08, p_out=0.08, seed=0))
    assert planted["modularity"] > 0.4
    assert planted["modularity"] > random["modularity"] + 0.15


def test_network_without_links_reports_undefined_values() -> None:
    metrics = network_metrics([torch.zeros(3, 4, dtype=torch.bool), torch.zeros(4, 2, dtype=torch.bool)],
                              embedding=True)
    assert metrics["anp"] == 0.0 and metrics["n_components"] == 0 and metrics["n_communities"] == 0
    for key in ("gamma", "modularity", "char_path_length", "square_clustering", "embedding_asi_layers"):
        assert math.isnan(metrics[key])
    assert metrics["gamma_reason"]


def test_weight_statistics() -> None:
    masks = stochastic_block_masks([10, 12, 8], p_in=0.4, p_out=0.4, seed=7)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(m.shape, generator=generator) * m for m in masks]
    row, column = masks[1].nonzero()[0].tolist()
    weights[1][row, column] = 0.0  # one link whose weight is exactly zero
    metrics = network_metrics(masks, weights=[w.numpy() for w in weights])
    for layer, (mask, weight) in enumerate(zip(masks, weights)):
        on_links = np.abs(weight.numpy()[mask.numpy()])
        assert metrics["weight_abs_mean_per_layer"][layer] == pytest.approx(on_links.mean())
        assert metrics["weight_abs_std_per_layer"][layer] == pytest.approx(on_links.std())
    assert metrics["zero_weight_links_per_layer"] == [0, 1]


def test_bad_weights_raise_clear_errors() -> None:
    masks = stochastic_block_masks([10, 12, 8], p_in=0.4, p_out=0.4, seed=7)
    with pytest.raises(ValueError, match="one per mask"):
        network_metrics(masks, weights=[torch.zeros(10, 12)])
    with pytest.raises(ValueError, match=r"weights\[1\] has shape \(8, 12\)"):
        network_metrics(masks, weights=[torch.zeros(10, 12), torch.zeros(8, 12)])


@pytest.mark.parametrize("seed", [0, 1])
def test_barabasi_albert_exponent_is_near_three(seed: int) -> None:
    graph = nx.barabasi_albert_graph(10_000, 3, seed=seed)
    fit = fit_power_law(np.array([degree for _, degree in graph.degree()]))
    assert fit.reason is None
    # Finite Barabási–Albert graphs of 10^4 nodes fit slightly below the asymptotic 3.
    assert fit.gamma == pytest.approx(3.0, abs=0.3)
    assert fit.loglikelihood_ratio > 0


@pytest.mark.parametrize(("n_nodes", "probability", "seed"),
                         [(2000, 0.002, 0), (3000, 0.01, 1), (1000, 0.05, 2)])
def test_erdos_renyi_is_rejected_as_power_law(n_nodes: int, probability: float, seed: int) -> None:
    graph = nx.gnp_random_graph(n_nodes, probability, seed=seed)
    fit = fit_power_law(np.array([degree for _, degree in graph.degree()]))
    assert math.isnan(fit.gamma)
    assert "exponential" in fit.reason
    assert math.isfinite(fit.gamma_mle)


def test_power_law_needs_enough_distinct_degrees() -> None:
    small_graph = nx.barabasi_albert_graph(30, 2, seed=0)
    small = fit_power_law(np.array([degree for _, degree in small_graph.degree()]))
    assert math.isnan(small.gamma) and "too few linked nodes" in small.reason
    assert math.isfinite(small.gamma_mle)
    regular = fit_power_law(np.full(500, 4))
    assert math.isnan(regular.gamma) and "distinct" in regular.reason
    with pytest.raises(ValueError, match="1-D"):
        fit_power_law(np.ones((3, 3)))


def test_karate_club_modularity_is_near_optimal() -> None:
    graph = nx.karate_club_graph()  # unweighted view: detect_communities ignores the interaction counts
    communities, modularity = detect_communities(graph, seed=0)
    assert sorted(node for members in communities for node in members) == list(graph.nodes)
    assert modularity == pytest.approx(nx.community.modularity(graph, communities, weight=None))
    assert 0.40 <= modularity <= KARATE_OPTIMAL_MODULARITY + 1e-4
    assert [len(members) for members in communities] == sorted((len(m) for m in communities), reverse=True)


def test_graph_without_links_has_no_communities() -> None:
    communities, modularity = detect_communities(nx.empty_graph(5))
    assert communities == [] and math.isnan(modularity)


@pytest.mark.parametrize("seed", range(4))
def test_characteristic_path_length_equals_networkx(seed: int) -> None:
    graph = nx.gnp_random_graph(60, 0.04, seed=seed)  # usually several components
    main = graph.subgraph(max(nx.connected_components(graph), key=len))
    length, exact = characteristic_path_length(nx.to_scipy_sparse_array(graph))
    assert exact is True
    assert length == pytest.approx(nx.average_shortest_path_length(main))


def test_sampled_path_length_estimates_the_exact_one() -> None:
    graph = nx.gnp_random_graph(400, 0.02, seed=0)
    adjacency = nx.to_scipy_sparse_array(graph)
    exact_length, _ = characteristic_path_length(adjacency, path_sources=None)
    sampled_length, exact = characteristic_path_length(adjacency, path_sources=100, seed=1)
    assert exact is False
    assert sampled_length == pytest.approx(exact_length, rel=0.03)
    assert characteristic_path_length(adjacency, path_sources=100, seed=1)[0] == sampled_length


def test_path_length_edge_cases() -> None:
    length, _ = characteristic_path_length(nx.to_scipy_sparse_array(nx.empty_graph(3)))
    assert math.isnan(length)
    with pytest.raises(ValueError, match="path_sources"):
        characteristic_path_length(nx.to_scipy_sparse_array(nx.path_graph(3)), path_sources=0)
