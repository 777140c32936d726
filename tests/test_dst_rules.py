"""Removal and regrowth rules against slow, obvious reference implementations, on both storages.

References work on dense ``(out, in)`` matrices and ``(out, in)`` pairs; rules speak in links (removal:
a boolean vector over the layer's links; regrowth: sorted positions ``o * n_in + i``).
"""

import math

import pytest
import torch

from cht import topology
from cht.dst import (CHRegrowth, GradientRegrowth, MagnitudeTopKRemoval, MESTRemoval, RandomRegrowth,
                     RegrowthContext, RelativeImportanceRemoval, SoftCHRegrowth, SoftRemoval)
from cht.dst.removal import RemovalContext
from cht.init.topology import InitContext, erdos_renyi_links
from cht.sparse import STORAGES, SparseLinear
from cht.sparse import links as L


@pytest.fixture(params=STORAGES)
def storage(request) -> str:
    return request.param


def layer_with(n_in: int, n_out: int, links: torch.Tensor, values: torch.Tensor, storage: str) -> SparseLinear:
    layer = SparseLinear(n_in, n_out, storage=storage)
    layer.set_links(links, values)
    return layer


def random_layer(n_in: int, n_out: int, n_links: int, seed: int, storage: str,
                 with_gradient: bool = False) -> SparseLinear:
    """Random links and weights; with a dense gradient captured from one backward pass when asked."""
    generator = torch.Generator().manual_seed(seed)
    links = erdos_renyi_links(n_in, n_out, n_links, InitContext(0, generator))
    layer = layer_with(n_in, n_out, links, torch.randn(n_links, generator=generator), storage)
    if with_gradient:
        layer.capture_gradient(True)
        inputs = torch.randn(6, n_in, generator=generator)
        (layer(inputs) * torch.randn(6, n_out, generator=generator)).sum().backward()
    return layer


def pairs(positions: torch.Tensor, n_in: int) -> set[tuple[int, int]]:
    """``(out, in)`` pairs of link positions."""
    return {(p // n_in, p % n_in) for p in positions.tolist()}


def removed_pairs(layer: SparseLinear, removed: torch.Tensor) -> set[tuple[int, int]]:
    assert removed.dtype == torch.bool and removed.shape == layer.links.shape
    return pairs(layer.links[removed], layer.in_features)


def mask_pairs(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(position) for position in mask.nonzero().tolist()}


def layer_mask(layer: SparseLinear) -> torch.Tensor:
    return layer.adjacency.t()


def lowest(layer: SparseLinear, score, count: int) -> set[tuple[int, int]]:
    """Reference: sort the layer's links by a per-link score computed one at a time; take the lowest."""
    links = sorted(mask_pairs(layer_mask(layer)), key=score)
    return set(links[:count])


def context(seed: int = 0, progress: float = 0.0) -> RemovalContext:
    return RemovalContext(progress=progress, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
# Removal


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_magnitude_top_k_removal_matches_reference(seed: int, fraction: float, storage: str) -> None:
    layer = random_layer(12, 9, 40, seed, storage)
    weight = layer.dense_weight()
    removed = MagnitudeTopKRemoval()(layer, fraction, context())
    assert removed_pairs(layer, removed) == lowest(layer, lambda l: abs(weight[l].item()), round(fraction * 40))
    assert removed_pairs(layer, MagnitudeTopKRemoval().lowest(layer, 7)) == \
        lowest(layer, lambda l: abs(weight[l].item()), 7)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.0, 0.01, 10.0])
def test_mest_removal_matches_reference(seed: int, factor: float, storage: str) -> None:
    layer = random_layer(10, 14, 50, seed, storage, with_gradient=True)
    weight, gradient = layer.dense_weight(), layer.dense_gradient()
    removed = MESTRemoval(gradient_factor=factor)(layer, 0.3, context())
    expected = lowest(layer, lambda l: abs(weight[l].item()) + factor * abs(gradient[l].item()), 15)
    assert removed_pairs(layer, removed) == expected


def test_mest_and_gradient_rules_explain_a_missing_gradient(storage: str) -> None:
    layer = random_layer(5, 5, 10, 0, storage)
    with pytest.raises(RuntimeError, match="needs_dense_grad"):
        MESTRemoval()(layer, 0.3, context())
    regrowth_context = RegrowthContext(survivors=layer.links, progress=0.0, generator=torch.Generator())
    with pytest.raises(RuntimeError, match="capture_gradients"):
        GradientRegrowth()(layer, 3, regrowth_context)


@pytest.mark.parametrize("seed", range(3))
def test_relative_importance_removal_matches_reference(seed: int, storage: str) -> None:
    layer = random_layer(8, 11, 30, seed, storage)
    weight = layer.dense_weight()

    def importance(link: tuple[int, int]) -> float:
        out, inp = link
        into_input = sum(abs(weight[o, inp].item()) for o in range(weight.shape[0]))
        from_output = sum(abs(weight[out, i].item()) for i in range(weight.shape[1]))
        w = abs(weight[link].item())
        return w / (into_input + 1e-5) + w / (from_output + 1e-5)

    removed = RelativeImportanceRemoval()(layer, 0.5, context())
    assert removed_pairs(layer, removed) == lowest(layer, importance, 15)


def test_soft_removal_keeps_links_with_probability_proportional_to_magnitude_power(storage: str) -> None:
    """Keep 1 of 2 links with |w| = 1 and 2: P(keep the larger) = 2^T / (1 + 2^T), T = 1 → 3."""
    layer = layer_with(2, 1, torch.tensor([0, 1]), torch.tensor([1.0, -2.0]), storage)
    rule = SoftRemoval(MagnitudeTopKRemoval(), start_temperature=1.0, end_temperature=3.0)
    generator = torch.Generator().manual_seed(0)
    draws = 3000
    for progress, temperature in [(0.0, 1.0), (1.0, 3.0)]:
        assert rule.temperature(progress) == temperature
        kept_larger = sum(bool(rule(layer, 0.5, RemovalContext(progress, generator))[0]) for _ in range(draws))
        expected = 2 ** temperature / (1 + 2 ** temperature)
        sigma = math.sqrt(expected * (1 - expected) / draws)
        assert abs(kept_larger / draws - expected) < 4 * sigma


def test_soft_removal_removes_the_right_count_of_links(storage: str) -> None:
    layer = random_layer(20, 15, 90, 1, storage)
    removed = SoftRemoval(RelativeImportanceRemoval())(layer, 0.3, context(progress=0.5))
    assert removed.shape == layer.links.shape and int(removed.sum()) == 27


# ---------------------------------------------------------------------------------------------------
# Regrowth


def regrowth_context(survivors: torch.Tensor, seed: int = 0) -> RegrowthContext:
    return RegrowthContext(survivors=survivors, progress=0.5, generator=torch.Generator().manual_seed(seed))


def free_pairs(layer: SparseLinear, survivors: torch.Tensor) -> set[tuple[int, int]]:
    """Every ``(out, in)`` pair that is not a survivor."""
    every = {(o, i) for o in range(layer.out_features) for i in range(layer.in_features)}
    return every - pairs(survivors, layer.in_features)


def check_grown(layer: SparseLinear, grown: torch.Tensor, survivors: torch.Tensor) -> set[tuple[int, int]]:
    """New links are sorted positions inside the layer, none of them a survivor; their pairs."""
    L.check_links(grown, layer.shape)
    assert not L.contains(survivors, grown).any()
    return pairs(grown, layer.in_features)


def some_survivors(layer: SparseLinear, seed: int, keep: float = 0.7) -> torch.Tensor:
    kept = torch.rand(layer.n_links, generator=torch.Generator().manual_seed(seed)) < keep
    return layer.links[kept]


@pytest.mark.parametrize("seed", range(3))
def test_gradient_regrowth_grows_where_the_gradient_is_largest(seed: int, storage: str) -> None:
    layer = random_layer(9, 13, 40, seed, storage, with_gradient=True)
    survivors = some_survivors(layer, seed)
    grown = GradientRegrowth()(layer, 12, regrowth_context(survivors))
    gradient = layer.dense_gradient()
    ranked = sorted(free_pairs(layer, survivors), key=lambda l: -abs(gradient[l].item()))
    assert check_grown(layer, grown, survivors) == set(ranked[:12])


def test_random_regrowth_is_uniform_over_free_positions(storage: str) -> None:
    layer = random_layer(4, 4, 6, 0, storage)
    survivors = some_survivors(layer, 0, keep=0.5)
    counts = torch.zeros(layer.out_features, layer.in_features)
    draws = 2000
    for seed in range(draws):
        grown = RandomRegrowth()(layer, 2, regrowth_context(survivors, seed))
        for pair in check_grown(layer, grown, survivors):
            counts[pair] += 1
    free = torch.zeros_like(counts, dtype=torch.bool)
    for pair in free_pairs(layer, survivors):
        free[pair] = True
    share = counts[free] / draws
    expected = 2 / int(free.sum())
    assert torch.all(counts[~free] == 0)
    assert torch.all((share - expected).abs() < 4 * math.sqrt(expected * (1 - expected) / draws))


def test_random_regrowth_fills_at_most_the_free_positions(storage: str) -> None:
    layer = random_layer(3, 2, 4, 1, storage)
    grown = RandomRegrowth()(layer, 10, regrowth_context(layer.links))
    assert check_grown(layer, grown, layer.links) == free_pairs(layer, layer.links)


class FakeScorer:
    """Stands in for topology.link_scores: fixed scores in (n_in, n_out) convention, shape recorded."""

    def __init__(self, scores_in_out: torch.Tensor) -> None:
        self.scores = scores_in_out
        self.rules: list[str] = []

    def __call__(self, mask: torch.Tensor, rule: str = "CH3-L3") -> torch.Tensor:
        assert mask.shape == self.scores.shape, "link_scores must receive the (n_in, n_out) adjacency"
        self.rules.append(rule)
        return self.scores.masked_fill(mask, 0.0)


def ch_layer_and_scores(seed: int, positive: int, storage: str):
    """A 6-input, 8-output layer and scores (n_in, n_out) with ``positive`` distinct positive values."""
    layer = random_layer(6, 8, 16, seed, storage)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.zeros(6, 8)
    free = (~layer.adjacency).nonzero()
    picked = free[torch.randperm(len(free), generator=generator)[:positive]]
    scores[picked[:, 0], picked[:, 1]] = torch.randperm(positive, generator=generator).float() + 1
    return layer, scores


@pytest.mark.parametrize("seed", range(3))
def test_ch_top_n_takes_the_best_scores_in_layer_orientation(seed: int, storage: str, monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(seed, positive=20, storage=storage)
    scorer = FakeScorer(scores)
    monkeypatch.setattr(topology, "link_scores", scorer)
    context_ = regrowth_context(layer.links, seed)
    grown = CHRegrowth("CH3-L3")(layer, 7, context_)
    best = sorted(free_pairs(layer, layer.links), key=lambda l: -scores.t()[l].item())[:7]
    assert check_grown(layer, grown, layer.links) == set(best)
    assert scorer.rules == ["CH3-L3"] and context_.stats["fallback"] == 0
    assert {"scoring", "selection"} <= set(context_.timings)


def test_ch_shortage_grows_all_positives_then_fills_between_active_neurons(storage: str, monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(0, positive=4, storage=storage)
    _, inputs = L.rows_cols(layer.links, layer.in_features)
    survivors = layer.links[inputs != 0]  # input 0 loses its links: the fill must not revive it
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    context_ = regrowth_context(survivors, 1)
    grown = check_grown(layer, CHRegrowth("CH3-L3")(layer, 10, context_), survivors)
    positive = mask_pairs(scores.t() > 0) & free_pairs(layer, survivors)
    assert len(grown) == 10 and context_.stats["fallback"] == 10 - len(positive)
    assert positive <= grown
    active = pairs(survivors, layer.in_features)
    active_out, active_in = {o for o, _ in active}, {i for _, i in active}
    assert all(o in active_out and i in active_in for o, i in grown - positive)


def test_ch_fill_reaches_inactive_neurons_only_when_it_must(storage: str, monkeypatch) -> None:
    layer = layer_with(4, 3, torch.tensor([0]), torch.tensor([0.5]), storage)  # the single link out 0 ← in 0
    monkeypatch.setattr(topology, "link_scores", FakeScorer(torch.zeros(4, 3)))
    grown = CHRegrowth("CH3-L3")(layer, 5, regrowth_context(layer.links))
    assert len(check_grown(layer, grown, layer.links)) == 5


def test_iclr_selection_keeps_ties_and_only_positive_scores(storage: str, monkeypatch) -> None:
    layer = random_layer(4, 5, 6, 2, storage)
    scores = torch.zeros(4, 5)
    free = (~layer.adjacency).nonzero()
    scores[free[0, 0], free[0, 1]] = 3.0
    for i, j in free[1:4].tolist():
        scores[i, j] = 1.0  # three-way tie at the 2nd best score
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    grown = CHRegrowth("CH3-L3", selection="iclr")(layer, 2, regrowth_context(layer.links))
    assert len(check_grown(layer, grown, layer.links)) == 4
    grown = CHRegrowth("CH3-L3", selection="iclr")(layer, 6, regrowth_context(layer.links))
    assert check_grown(layer, grown, layer.links) == mask_pairs(scores.t() > 0)


def test_soft_ch_regrowth_samples_in_proportion_to_scores(storage: str, monkeypatch) -> None:
    layer = layer_with(2, 2, torch.tensor([0]), torch.tensor([1.0]), storage)  # out 0 ← in 0
    scores = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # (n_in, n_out): links (in 0→out 1), (in 1→out 0)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    rule = SoftCHRegrowth("CH3-L3n")
    draws, favoured = 2000, 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):
        context_ = RegrowthContext(survivors=layer.links, progress=0.0, generator=generator)
        grown = check_grown(layer, rule(layer, 1, context_), layer.links)
        assert len(grown) == 1 and context_.stats["fallback"] == 0
        favoured += (1, 0) in grown
    sigma = math.sqrt(0.75 * 0.25 / draws)
    assert abs(favoured / draws - 0.75) < 4 * sigma


def test_soft_ch_regrowth_fills_a_shortage(storage: str, monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(3, positive=2, storage=storage)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    context_ = regrowth_context(layer.links)
    grown = check_grown(layer, SoftCHRegrowth("CH3-L3n")(layer, 6, context_), layer.links)
    assert len(grown) == 6 and context_.stats["fallback"] == 4
    assert mask_pairs(scores.t() > 0) <= grown


def without_replacement_probability(weights: dict, chosen: tuple) -> float:
    """Slow reference: the probability that successive draws ∝ weight, without replacement, pick the set
    ``chosen`` (summed over every order of drawing it)."""
    import itertools

    total = 0.0
    for order in itertools.permutations(chosen):
        left, probability = sum(weights.values()), 1.0
        for pair in order:
            probability *= weights[pair] / left
            left -= weights[pair]
        total += probability
    return total


def test_score_floor_draws_every_free_position_in_proportion_to_its_raised_score(storage: str,
                                                                                   monkeypatch) -> None:
    """A shortage of positive scores under the later release's rule: all n links are drawn ∝ score + floor
    among every free position (the floor raised to 1 here so that its effect is measurable)."""
    from cht.dst import regrowth

    monkeypatch.setattr(regrowth, "RELEASE_SCORE_FLOOR", 1.0)
    layer = layer_with(2, 2, torch.tensor([0]), torch.tensor([1.0]), storage)  # out 0 ← in 0
    scores = torch.tensor([[0.0, 3.0], [0.0, 0.0]])  # (n_in, n_out): only in 0 → out 1 scores > 0
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    weights = {(1, 0): 4.0, (0, 1): 1.0, (1, 1): 1.0}  # (out, in): score + floor
    rule = SoftCHRegrowth("CH3-L3n", shortage="score_floor")
    draws, generator = 3000, torch.Generator().manual_seed(1)
    observed: dict[tuple, int] = {}
    for _ in range(draws):
        context_ = RegrowthContext(survivors=layer.links, progress=0.0, generator=generator)
        grown = check_grown(layer, rule(layer, 2, context_), layer.links)
        assert len(grown) == 2 and context_.stats["fallback"] == len(grown - {(1, 0)})
        key = tuple(sorted(grown))
        observed[key] = observed.get(key, 0) + 1
    for chosen in [((0, 1), (1, 0)), ((1, 0), (1, 1)), ((0, 1), (1, 1))]:
        expected = without_replacement_probability(weights, chosen)
        sigma = math.sqrt(expected * (1 - expected) / draws)
        assert abs(observed.get(chosen, 0) / draws - expected) < 4 * sigma, chosen


def test_score_floor_may_reach_neurons_without_links_where_the_fill_does_not(storage: str, monkeypatch) -> None:
    """Inputs 4, 5 and outputs 6, 7 have no links: the project's fill stays among linked neurons while the
    release's floor lets every free position compete."""
    n_in, n_out = 6, 8
    links = torch.tensor(sorted(o * n_in + i for o in range(6) for i in range(4) if (o + i) % 3 == 0))
    layer = layer_with(n_in, n_out, links, torch.ones(len(links)), storage)
    scores = torch.zeros(n_in, n_out)
    scores[1, 0] = scores[2, 0] = 2.0  # two positive candidates between linked neurons
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))

    def touches_isolated(grown: set) -> bool:
        return any(o >= 6 or i >= 4 for o, i in grown)

    reached = {"fill": 0, "score_floor": 0}
    for shortage in reached:
        for seed in range(10):
            context_ = regrowth_context(layer.links, seed)
            grown = check_grown(layer, SoftCHRegrowth("CH3-L3n", shortage=shortage)(layer, 8, context_), layer.links)
            assert len(grown) == 8 and context_.stats["fallback"] == len(grown - {(0, 1), (0, 2)})
            reached[shortage] += touches_isolated(grown)
    assert reached["fill"] == 0 and reached["score_floor"] > 0


@pytest.mark.parametrize("seed", range(3))
def test_score_floor_without_a_shortage_draws_as_the_fill_rule(seed: int, storage: str, monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(seed, positive=10, storage=storage)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    draws = [SoftCHRegrowth("CH3-L3n", shortage=shortage)(layer, 6, regrowth_context(layer.links, seed))
             for shortage in ("fill", "score_floor")]
    assert torch.equal(*draws)


def test_ch_rules_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="rule"):
        CHRegrowth("CH9-L7")
    with pytest.raises(ValueError, match="selection"):
        CHRegrowth("CH3-L3", selection="best")
    with pytest.raises(ValueError, match="shortage"):
        SoftCHRegrowth("CH3-L3n", shortage="uniform")


def test_real_ch3_scores_drive_the_rule(storage: str) -> None:
    """With the real scorer: the grown links are the candidates of highest CH3-L3 score."""
    layer = random_layer(10, 12, 30, 4, storage)
    grown = CHRegrowth("CH3-L3")(layer, 5, regrowth_context(layer.links))
    assert len(check_grown(layer, grown, layer.links)) == 5
    scores = topology.link_scores(layer.adjacency, rule="CH3-L3").t().reshape(-1)
    others = torch.ones_like(scores, dtype=torch.bool)
    others[layer.links] = others[grown] = False
    assert scores[grown].min() >= scores[others].max()
