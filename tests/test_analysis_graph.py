"""Layered-graph construction, active-neuron counting and planted test networks."""

import json
import re

import networkx as nx
import numpy as np
import pytest
import torch

from cht.analysis import active_neurons, layered_graph, network_metrics
from cht.analysis.graph import active_neurons_of_links
from cht.analysis.synthetic import group_of_neurons, stochastic_block_masks
from cht.sparse import links as L


def reference_active_counts(masks: list[np.ndarray]) -> list[int]:
    """Slow, obvious count: rows with a link in every mask, then columns of the last mask."""
    counts = [sum(1 for row in mask if any(row)) for mask in masks]
    last = masks[-1]
    counts.append(sum(1 for column in range(last.shape[1]) if any(last[:, column])))
    return counts


def random_masks(sizes: list[int], density: float, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(a, b, generator=generator) < density for a, b in zip(sizes[:-1], sizes[1:])]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("density", [0.0, 0.02, 0.2, 1.0])
def test_active_neurons_matches_reference(seed: int, density: float) -> None:
    sizes = [int(s) for s in np.random.default_rng(seed).integers(1, 30, size=seed + 2)]
    masks = random_masks(sizes, density, seed)
    activity = active_neurons(masks)
    expected = reference_active_counts([mask.numpy() for mask in masks])
    assert activity.per_layer == expected
    assert activity.sizes == sizes
    assert activity.anp == pytest.approx(sum(expected) / sum(sizes))
    assert activity.anp_per_layer == pytest.approx([c / s for c, s in zip(expected, sizes)])
    # The same count from link sets (positions o * n_in + i, layer convention (out, in)).
    link_sets = [L.from_mask(mask.t()) for mask in masks]
    assert active_neurons_of_links(link_sets, [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]) == activity


def test_active_neurons_of_links_needs_one_link_set_per_shape() -> None:
    with pytest.raises(ValueError, match="one link set per shape"):
        active_neurons_of_links([torch.arange(3)], [(3, 2), (2, 3)])
    with pytest.raises(ValueError, match="one link set per shape"):
        active_neurons_of_links([], [])


def test_active_neurons_accepts_numpy() -> None:
    masks = random_masks([7, 9, 5], 0.15, seed=3)
    assert active_neurons([m.numpy() for m in masks]) == active_neurons(masks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_masks_give_cpu_results() -> None:
    masks = random_masks([20, 30, 10], 0.05, seed=1)
    on_device = [m.cuda() for m in masks]
    assert active_neurons(on_device) == active_neurons(masks)
    assert (layered_graph(on_device).adjacency != layered_graph(masks).adjacency).nnz == 0
    weights = [torch.randn(m.shape) for m in masks]
    # Reductions on the GPU may differ from the CPU's in the last bits: compare floats to 1e-6.
    on_gpu = json.loads(json.dumps(network_metrics(on_device, [w.cuda() for w in weights], embedding=True)))
    on_cpu = json.loads(json.dumps(network_metrics(masks, weights, embedding=True)))
    assert_close(on_gpu, on_cpu)


def assert_close(got: object, expected: object, where: str = "metrics") -> None:
    """Recursive equality of JSON-like values, floats to 1e-6 relative (NaN equals NaN)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected)):
            assert_close(a, b, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12, nan_ok=True), where
    else:
        assert got == expected, where


def reference_adjacency(masks: list[np.ndarray]) -> np.ndarray:
    """networkx graph built link by link, nodes listed layer after layer."""
    graph = nx.Graph()
    sizes = [masks[0].shape[0]] + [m.shape[1] for m in masks]
    nodes = [(layer, i) for layer, size in enumerate(sizes) for i in range(size)]
    graph.add_nodes_from(nodes)
    for layer, mask in enumerate(masks):
        for i in range(mask.shape[0]):
            for j in range(mask.shape[1]):
                if mask[i, j]:
                    graph.add_edge((layer, i), (layer + 1, j))
    return nx.to_numpy_array(graph, nodelist=nodes)


@pytest.mark.parametrize("seed", range(3))
def test_layered_graph_matches_networkx(seed: int) -> None:
    masks = random_masks([6, 8, 5, 4][: seed + 2], 0.3, seed)
    graph = layered_graph(masks)
    np.testing.assert_array_equal(graph.adjacency.toarray(), reference_adjacency([m.numpy() for m in masks]))
    np.testing.assert_array_equal(graph.layer, np.repeat(np.arange(len(graph.sizes)), graph.sizes))
    np.testing.assert_array_equal(graph.degree, graph.adjacency.toarray().sum(axis=1))
    assert graph.adjacency.indices.dtype == np.int32


@pytest.mark.parametrize(
    ("masks", "error", "fragment"),
    [
        ([], ValueError, "empty"),
        (torch.ones(3, 4, dtype=torch.bool), TypeError, "wrap a single mask"),
        ([torch.ones(3, 4)], TypeError, "masks[0] has dtype torch.float32"),
        ([torch.ones(3, 4, dtype=torch.bool), torch.ones(5, 2, dtype=torch.bool)], ValueError,
         "masks[1] has 5"),
        ([torch.ones(4, dtype=torch.bool)], ValueError, "masks[0] has shape (4,)"),
        ([torch.ones(0, 4, dtype=torch.bool)], ValueError, "at least one neuron"),
        ([[True, False]], TypeError, "masks[0] is a list"),
    ],
)
def test_bad_masks_raise_clear_errors(masks, error, fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        active_neurons(masks)


def test_group_of_neurons_makes_contiguous_near_equal_blocks() -> None:
    groups = group_of_neurons(10, 3)
    assert groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert group_of_neurons(5, 1).tolist() == [0] * 5


def test_stochastic_block_masks_respect_probabilities() -> None:
    masks = stochastic_block_masks([200, 300, 200], p_in=0.3, p_out=0.02, n_groups=2, seed=4)
    assert [tuple(m.shape) for m in masks] == [(200, 300), (300, 200)]
    for mask in masks:
        same = torch.from_numpy(group_of_neurons(mask.shape[0], 2)[:, None]
                                == group_of_neurons(mask.shape[1], 2)[None, :])
        assert mask[same].float().mean().item() == pytest.approx(0.3, abs=0.01)
        assert mask[~same].float().mean().item() == pytest.approx(0.02, abs=0.005)
    repeat = stochastic_block_masks([200, 300, 200], p_in=0.3, p_out=0.02, n_groups=2, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(masks, repeat))


@pytest.mark.parametrize(("kwargs", "fragment"), [({"sizes": [5]}, "sizes"), ({"p_in": 1.5}, "p_in"),
                                                  ({"p_out": -0.1}, "p_out"), ({"n_groups": 0}, "n_groups")])
def test_stochastic_block_masks_reject_bad_arguments(kwargs: dict, fragment: str) -> None:
    arguments = {"sizes": [4, 4], "p_in": 0.5, "p_out": 0.1} | kwargs
    with pytest.raises(ValueError, match=fragment):
        stochastic_block_masks(**arguments)
