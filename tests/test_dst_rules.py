"""Removal and regrowth rules against slow, obvious reference implementations."""

import math

import pytest
import torch

from cht import topology
from cht.dst import (CHRegrowth, GradientRegrowth, MagnitudeTopKRemoval, MESTRemoval, RandomRegrowth,
                     RegrowthContext, RelativeImportanceRemoval, SoftCHRegrowth, SoftRemoval)
from cht.dst.removal import RemovalContext
from cht.init.topology import InitContext, erdos_renyi_mask
from cht.sparse import SparseLinear


def random_layer(n_in: int, n_out: int, n_links: int, seed: int, with_gradient: bool = False) -> SparseLinear:
    generator = torch.Generator().manual_seed(seed)
    layer = SparseLinear(n_in, n_out)
    layer.set_mask(erdos_renyi_mask(n_in, n_out, n_links, InitContext(0, generator)).t())
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * layer.mask)
    if with_gradient:
        layer.dense_grad = torch.randn(layer.weight.shape, generator=generator)
    return layer


def links_of(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(position) for position in mask.nonzero().tolist()}


def lowest(layer: SparseLinear, score, count: int) -> set[tuple[int, int]]:
    """Reference: sort the layer's links by a per-link score computed one at a time; take the lowest."""
    links = sorted(links_of(layer.mask), key=score)
    return set(links[:count])


def context(seed: int = 0, progress: float = 0.0) -> RemovalContext:
    return RemovalContext(progress=progress, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
# Removal


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_magnitude_top_k_removal_matches_reference(seed: int, fraction: float) -> None:
    layer = random_layer(12, 9, 40, seed)
    weight = layer.weight.detach()
    removed = MagnitudeTopKRemoval()(layer, fraction, context())
    assert links_of(removed) == lowest(layer, lambda l: abs(weight[l].item()), round(fraction * 40))
    assert links_of(MagnitudeTopKRemoval().lowest(layer, 7)) == lowest(layer, lambda l: abs(weight[l].item()), 7)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("factor", [0.0, 0.01, 10.0])
def test_mest_removal_matches_reference(seed: int, factor: float) -> None:
    layer = random_layer(10, 14, 50, seed, with_gradient=True)
    weight, gradient = layer.weight.detach(), layer.dense_grad
    removed = MESTRemoval(gradient_factor=factor)(layer, 0.3, context())
    expected = lowest(layer, lambda l: abs(weight[l].item()) + factor * abs(gradient[l].item()), 15)
    assert links_of(removed) == expected


def test_mest_and_gradient_rules_explain_a_missing_gradient() -> None:
    layer = random_layer(5, 5, 10, 0)
    with pytest.raises(RuntimeError, match="needs_dense_grad"):
        MESTRemoval()(layer, 0.3, context())
    regrowth_context = RegrowthContext(mask=layer.mask, progress=0.0, generator=torch.Generator())
    with pytest.raises(RuntimeError, match="capture_gradients"):
        GradientRegrowth()(layer, ~layer.mask, 3, regrowth_context)


@pytest.mark.parametrize("seed", range(3))
def test_relative_importance_removal_matches_reference(seed: int) -> None:
    layer = random_layer(8, 11, 30, seed)
    weight = layer.weight.detach()

    def importance(link: tuple[int, int]) -> float:
        out, inp = link
        into_input = sum(abs(weight[o, inp].item()) for o in range(weight.shape[0]))
        from_output = sum(abs(weight[out, i].item()) for i in range(weight.shape[1]))
        w = abs(weight[link].item())
        return w / (into_input + 1e-5) + w / (from_output + 1e-5)

    removed = RelativeImportanceRemoval()(layer, 0.5, context())
    assert links_of(removed) == lowest(layer, importance, 15)


def test_soft_removal_keeps_links_with_probability_proportional_to_magnitude_power() -> None:
    """Keep 1 of 2 links with |w| = 1 and 2: P(keep the larger) = 2^T / (1 + 2^T), T = 1 → 3."""
    layer = SparseLinear(2, 1)
    layer.set_mask(torch.ones(1, 2, dtype=torch.bool))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
    rule = SoftRemoval(MagnitudeTopKRemoval(), start_temperature=1.0, end_temperature=3.0)
    generator = torch.Generator().manual_seed(0)
    draws = 3000
    for progress, temperature in [(0.0, 1.0), (1.0, 3.0)]:
        assert rule.temperature(progress) == temperature
        kept_larger = sum(bool(rule(layer, 0.5, RemovalContext(progress, generator))[0, 0])
                          for _ in range(draws))
        expected = 2 ** temperature / (1 + 2 ** temperature)
        sigma = math.sqrt(expected * (1 - expected) / draws)
        assert abs(kept_larger / draws - expected) < 4 * sigma


def test_soft_removal_removes_the_right_count_and_only_links() -> None:
    layer = random_layer(20, 15, 90, 1)
    removed = SoftRemoval(RelativeImportanceRemoval())(layer, 0.3, context(progress=0.5))
    assert int(removed.sum()) == 27 and not bool((removed & ~layer.mask).any())


# ---------------------------------------------------------------------------------------------------
# Regrowth


def regrowth_context(mask: torch.Tensor, seed: int = 0) -> RegrowthContext:
    return RegrowthContext(mask=mask, progress=0.5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(3))
def test_gradient_regrowth_grows_where_the_gradient_is_largest(seed: int) -> None:
    layer = random_layer(9, 13, 40, seed, with_gradient=True)
    survivors = layer.mask & (torch.rand(layer.mask.shape, generator=torch.Generator().manual_seed(seed)) < 0.7)
    candidates = ~survivors
    grown = GradientRegrowth()(layer, candidates, 12, regrowth_context(survivors))
    ranked = sorted(links_of(candidates), key=lambda l: -abs(layer.dense_grad[l].item()))
    assert links_of(grown) == set(ranked[:12])


def test_random_regrowth_is_uniform_over_candidates() -> None:
    layer = random_layer(4, 4, 6, 0)
    candidates = ~layer.mask
    counts = torch.zeros(layer.mask.shape)
    for seed in range(2000):
        counts += RandomRegrowth()(layer, candidates, 2, regrowth_context(layer.mask, seed)).float()
    share = counts[candidates] / 2000
    expected = 2 / int(candidates.sum())
    assert torch.all(counts[~candidates] == 0)
    assert torch.all((share - expected).abs() < 4 * math.sqrt(expected * (1 - expected) / 2000))


class FakeScorer:
    """Stands in for topology.link_scores: fixed scores in (n_in, n_out) convention, shape recorded."""

    def __init__(self, scores_in_out: torch.Tensor) -> None:
        self.scores = scores_in_out
        self.rules: list[str] = []

    def __call__(self, mask: torch.Tensor, rule: str = "CH3-L3") -> torch.Tensor:
        assert mask.shape == self.scores.shape, "link_scores must receive the (n_in, n_out) adjacency"
        self.rules.append(rule)
        return self.scores.masked_fill(mask, 0.0)


def ch_layer_and_scores(seed: int, positive: int):
    """A 6-input, 8-output layer and scores (n_in, n_out) with ``positive`` distinct positive values."""
    layer = random_layer(6, 8, 16, seed)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.zeros(6, 8)
    free = (~layer.adjacency).nonzero()
    picked = free[torch.randperm(len(free), generator=generator)[:positive]]
    scores[picked[:, 0], picked[:, 1]] = torch.randperm(positive, generator=generator).float() + 1
    return layer, scores


@pytest.mark.parametrize("seed", range(3))
def test_ch_top_n_takes_the_best_scores_in_layer_orientation(seed: int, monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(seed, positive=20)
    scorer = FakeScorer(scores)
    monkeypatch.setattr(topology, "link_scores", scorer)
    context_ = regrowth_context(layer.mask, seed)
    grown = CHRegrowth("CH3-L3")(layer, ~layer.mask, 7, context_)
    best = sorted(links_of(~layer.adjacency), key=lambda l: -scores[l].item())[:7]
    assert links_of(grown.t()) == set(best)
    assert scorer.rules == ["CH3-L3"] and context_.stats["fallback"] == 0
    assert {"scoring", "selection"} <= set(context_.timings)


def test_ch_shortage_grows_all_positives_then_fills_between_active_neurons(monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(0, positive=4)
    survivors = layer.mask.clone()
    survivors[:, 0] = False  # input 0 loses its links: the fill must not revive it
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    context_ = regrowth_context(survivors, 1)
    candidates = ~survivors
    grown = CHRegrowth("CH3-L3")(layer, candidates, 10, context_)
    positive = (scores.t() > 0) & candidates
    assert int(grown.sum()) == 10 and context_.stats["fallback"] == 10 - int(positive.sum())
    assert torch.all(grown[positive])
    fill = grown & ~positive
    active_out, active_in = survivors.any(dim=1), survivors.any(dim=0)
    assert torch.all(active_out[fill.nonzero()[:, 0]]) and torch.all(active_in[fill.nonzero()[:, 1]])
    assert not bool((grown & ~candidates).any())


def test_ch_fill_reaches_inactive_neurons_only_when_it_must(monkeypatch) -> None:
    survivors = torch.zeros(3, 4, dtype=torch.bool)
    survivors[0, 0] = True
    layer = SparseLinear(4, 3)
    layer.set_mask(survivors)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(torch.zeros(4, 3)))
    grown = CHRegrowth("CH3-L3")(layer, ~survivors, 5, regrowth_context(survivors))
    assert int(grown.sum()) == 5 and not bool(grown[0, 0])


def test_iclr_selection_keeps_ties_and_only_positive_scores(monkeypatch) -> None:
    layer = random_layer(4, 5, 6, 2)
    scores = torch.zeros(4, 5)
    free = (~layer.adjacency).nonzero()
    scores[free[0, 0], free[0, 1]] = 3.0
    for i, j in free[1:4].tolist():
        scores[i, j] = 1.0  # three-way tie at the 2nd best score
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    grown = CHRegrowth("CH3-L3", selection="iclr")(layer, ~layer.mask, 2, regrowth_context(layer.mask))
    assert int(grown.sum()) == 4
    grown = CHRegrowth("CH3-L3", selection="iclr")(layer, ~layer.mask, 6, regrowth_context(layer.mask))
    assert links_of(grown.t()) == links_of(scores > 0)


def test_soft_ch_regrowth_samples_in_proportion_to_scores(monkeypatch) -> None:
    layer = SparseLinear(2, 2)
    layer.set_mask(torch.tensor([[True, False], [False, False]]))
    scores = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # (n_in, n_out): links (in 0→out 1), (in 1→out 0)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    rule = SoftCHRegrowth("CH3-L3n")
    draws, favoured = 2000, 0
    generator = torch.Generator().manual_seed(0)
    for _ in range(draws):
        context_ = RegrowthContext(mask=layer.mask, progress=0.0, generator=generator)
        grown = rule(layer, ~layer.mask, 1, context_)
        assert int(grown.sum()) == 1 and context_.stats["fallback"] == 0
        favoured += bool(grown[1, 0])
    sigma = math.sqrt(0.75 * 0.25 / draws)
    assert abs(favoured / draws - 0.75) < 4 * sigma


def test_soft_ch_regrowth_fills_a_shortage(monkeypatch) -> None:
    layer, scores = ch_layer_and_scores(3, positive=2)
    monkeypatch.setattr(topology, "link_scores", FakeScorer(scores))
    context_ = regrowth_context(layer.mask)
    grown = SoftCHRegrowth("CH3-L3n")(layer, ~layer.mask, 6, context_)
    assert int(grown.sum()) == 6 and context_.stats["fallback"] == 4
    assert torch.all(grown[scores.t() > 0])


def test_ch_rules_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="rule"):
        CHRegrowth("CH9-L7")
    with pytest.raises(ValueError, match="selection"):
        CHRegrowth("CH3-L3", selection="best")


def test_real_ch3_scores_drive_the_rule() -> None:
    """With the real scorer: the grown links are the candidates of highest CH3-L3 score."""
    layer = random_layer(10, 12, 30, 4)
    grown = CHRegrowth("CH3-L3")(layer, ~layer.mask, 5, regrowth_context(layer.mask))
    scores = topology.link_scores(layer.adjacency, rule="CH3-L3").t()
    assert int(grown.sum()) == 5
    assert scores[grown].min() >= scores[~layer.mask & ~grown].max()

