"""Initial topologies: CSTI on hand-made correlations, its cache, BRF degrees and locality."""

import numpy as np
import pytest
import torch

from cht.init import TOPOLOGY_INITS, InitContext, bipartite_receptive_field, feature_correlation, init_topology
from cht.init.brf import ring_distance
from cht.init.csti import cache_path, strongest_links, tile_to_layer
from cht.sparse import links as L


def hand_made_inputs() -> torch.Tensor:
    """Five features over four samples with known correlations: corr(a, c) = 1, corr(b, e) = −1, d constant."""
    a = [1.0, -1.0, 1.0, -1.0]
    b = [1.0, 1.0, -1.0, -1.0]
    c = [3.0, -1.0, 3.0, -1.0]  # 2a + 1
    d = [5.0, 5.0, 5.0, 5.0]
    e = [-2.0, -2.0, 2.0, 2.0]  # −2b
    return torch.tensor([a, b, c, d, e]).t().reshape(4, 1, 1, 5)


def test_correlation_of_hand_made_features() -> None:
    expected = torch.zeros(5, 5, dtype=torch.float64)
    expected[0, 2] = expected[2, 0] = 1.0
    expected[1, 4] = expected[4, 1] = -1.0
    assert torch.allclose(feature_correlation(hand_made_inputs()), expected, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_correlation_matches_numpy_with_constant_features(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(5000, 1, 3, 4, generator=generator)
    inputs[:, 0, 1, 2] = 0.7  # a constant feature: NaN in numpy, 0 here
    inputs[:, 0, 0, 1] = inputs[:, 0, 2, 3] * 2 - 1
    with np.errstate(invalid="ignore"):  # the constant feature divides by a zero spread
        reference = np.corrcoef(inputs.reshape(5000, -1).double().numpy(), rowvar=False)
    reference = np.nan_to_num(reference, nan=0.0)
    np.fill_diagonal(reference, 0.0)
    assert np.allclose(feature_correlation(inputs).numpy(), reference, atol=1e-10)


def adjacency(n_in: int, n_out: int, links: torch.Tensor) -> torch.Tensor:
    """The ``(n_in, n_out)`` adjacency of link positions ``o * n_in + i``."""
    return L.to_mask(links, (n_out, n_in)).t()


def csti(n_in: int, n_out: int, n_links: int, extras: dict, seed: int = 0) -> torch.Tensor:
    """CSTI's initial adjacency ``(n_in, n_out)``, through ``init_topology`` as training builds it."""
    links = init_topology("csti", n_in, n_out, n_links, InitContext(0, torch.Generator().manual_seed(seed), extras))
    return adjacency(n_in, n_out, links)


def as_links(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in mask.nonzero().tolist()}


def test_csti_keeps_the_strongest_correlations() -> None:
    extras = {"train_inputs": hand_made_inputs()}
    assert as_links(csti(5, 5, 4, extras)) == {(0, 2), (2, 0), (1, 4), (4, 1)}
    # One more link than strong pairs: the extra one is any zero-correlation pair, chosen by the seed.
    masks = [csti(5, 5, 5, extras, seed) for seed in range(6)]
    assert all(int(m.sum()) == 5 and as_links(m) > {(0, 2), (2, 0), (1, 4), (4, 1)} for m in masks)
    assert len({frozenset(as_links(m)) for m in masks}) > 1


def test_csti_tiles_the_correlation_for_wider_layers() -> None:
    extras = {"train_inputs": hand_made_inputs()}
    strong = {(0, 2), (2, 0), (1, 4), (4, 1)}
    first = csti(5, 10, 8, extras)
    assert as_links(first) == strong | {(i, j + 5) for i, j in strong}
    hidden = csti(10, 10, 16, extras)
    assert as_links(hidden) == {(i + di, j + dj) for i, j in strong for di in (0, 5) for dj in (0, 5)}
    with pytest.raises(ValueError, match="multiples of 5"):
        csti(5, 7, 4, extras)


def test_strongest_links_exact_count_and_random_ties() -> None:
    strength = torch.tensor([[3.0, 1.0, 1.0], [1.0, 2.0, 0.0]])
    picks = [strongest_links(strength, 3, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(int(p.sum()) == 3 and bool(p[0, 0]) and bool(p[1, 1]) and not bool(p[1, 2]) for p in picks)
    assert len({frozenset(as_links(p)) for p in picks}) == 3  # each tied 1.0 gets its turn
    assert torch.equal(tile_to_layer(torch.eye(2), 4, 2), torch.eye(2).repeat(2, 1))


def test_csti_caches_the_correlation_per_dataset_and_sample_count(tmp_path) -> None:
    inputs = torch.rand(300, 1, 2, 3, generator=torch.Generator().manual_seed(0))
    extras = {"train_inputs": inputs, "dataset": "toy", "data_root": str(tmp_path)}
    first = csti(6, 6, 10, extras)
    path = cache_path(tmp_path, "toy", 300)
    assert path == tmp_path / "cache" / "csti_toy_n300.pt" and path.exists()
    assert torch.allclose(torch.load(path), feature_correlation(inputs))
    # Same dataset and sample count: the cache answers, even for different tensors.
    other = torch.rand(300, 1, 2, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(csti(6, 6, 10, {**extras, "train_inputs": other}), first)
    # Another sample count is another cache entry.
    csti(6, 6, 10, {**extras, "train_inputs": other[:200]})
    assert cache_path(tmp_path, "toy", 200).exists()


def test_csti_needs_training_inputs() -> None:
    with pytest.raises(ValueError, match="train_inputs"):
        csti(5, 5, 4, {})


def test_registry_names() -> None:
    assert {"erdos_renyi", "csti", "brf"} <= set(TOPOLOGY_INITS)
    with pytest.raises(ValueError, match="unknown topology init"):
        init_topology("nope", 2, 2, 1, InitContext(0, torch.Generator()))


def test_init_topology_turns_adjacencies_into_sorted_layer_positions(monkeypatch) -> None:
    """An initialiser may return an ``(n_in, n_out)`` adjacency; training gets positions ``o * n_in + i``."""
    made = torch.zeros(3, 2, dtype=torch.bool)  # input 2 → output 0, input 0 → output 1, input 1 → output 1
    made[2, 0] = made[0, 1] = made[1, 1] = True
    monkeypatch.setitem(TOPOLOGY_INITS, "hand_made", lambda n_in, n_out, n_links, context: made)
    context = InitContext(0, torch.Generator())
    assert init_topology("hand_made", 3, 2, 3, context).tolist() == [0 * 3 + 2, 1 * 3 + 0, 1 * 3 + 1]
    with pytest.raises(RuntimeError, match="expected 4"):
        init_topology("hand_made", 3, 2, 4, context)
    with pytest.raises(RuntimeError, match="shape"):
        init_topology("hand_made", 2, 3, 3, context)
    monkeypatch.setitem(TOPOLOGY_INITS, "unsorted", lambda n_in, n_out, n_links, context: torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="sorted"):
        init_topology("unsorted", 3, 2, 2, context)


# ---------------------------------------------------------------------------------------------------
# BRF


@pytest.mark.parametrize("n_in,n_out,n_links", [(20, 50, 137), (50, 20, 137), (30, 30, 30), (8, 9, 72), (7, 5, 0)])
@pytest.mark.parametrize("randomness", [0.0, 0.3, 1.0])
def test_brf_degrees_are_balanced_and_the_count_exact(n_in, n_out, n_links, randomness) -> None:
    mask = bipartite_receptive_field(n_in, n_out, n_links, randomness, torch.Generator().manual_seed(0))
    assert mask.shape == (n_in, n_out) and int(mask.sum()) == n_links
    degrees = mask.sum(dim=1) if n_in <= n_out else mask.sum(dim=0)
    assert int(degrees.max() - degrees.min()) <= 1


def mean_link_distance(mask: torch.Tensor) -> float:
    distance = ring_distance(*mask.shape)
    return float(distance[mask].double().mean())


def test_brf_locality_follows_the_randomness() -> None:
    n_in, n_out, n_links = 100, 400, 2000
    generator = torch.Generator().manual_seed(1)
    distances = {r: mean_link_distance(bipartite_receptive_field(n_in, n_out, n_links, r, generator))
                 for r in (0.0, 0.1, 0.5, 1.0)}
    # r = 0: each input's 20 links are the 20 nearest outputs (distances 0, 1, 1, ..., 10).
    assert distances[0.0] == pytest.approx(sum([0] + [d for d in range(1, 10) for _ in (0, 1)] + [10]) / 20)
    assert distances[0.0] < distances[0.1] < distances[0.5] < distances[1.0]
    # r = 1 ignores distance: the mean ring distance of a uniform choice is about n_out / 4.
    assert distances[1.0] == pytest.approx(n_out / 4, rel=0.05)


def test_brf_links_concentrate_near_the_diagonal_for_small_r() -> None:
    mask = bipartite_receptive_field(200, 200, 2000, 0.1, torch.Generator().manual_seed(2))
    near = ring_distance(200, 200) <= 20
    assert float(mask[near].sum()) / 2000 > 0.8  # a band holding ~20% of the positions holds most links


def test_brf_is_reproducible_and_validated() -> None:
    make = lambda seed: bipartite_receptive_field(30, 40, 100, 0.5, torch.Generator().manual_seed(seed))
    assert torch.equal(make(0), make(0)) and not torch.equal(make(0), make(1))
    with pytest.raises(ValueError, match="randomness"):
        bipartite_receptive_field(3, 3, 2, 1.5, torch.Generator())
    context = InitContext(0, torch.Generator().manual_seed(0), {"brf_randomness": 0.0})
    assert torch.equal(adjacency(30, 40, init_topology("brf", 30, 40, 100, context)),
                       bipartite_receptive_field(30, 40, 100, 0.0, torch.Generator().manual_seed(0)))
