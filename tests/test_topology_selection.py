"""Selection of regrown links: counts, ties, reproducibility, ICLR semantics, sampling frequencies."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats

from cht.topology import sample_proportional, select_iclr_threshold, select_top_n, tie_keys
from cht.topology.selection import draw_tie_seed

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_problem(shape: tuple[int, int], seed: int,
                   levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative scores (few distinct ``levels`` to force ties, if given) and a random candidate mask."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(shape, generator=generator, dtype=torch.float64)
    if levels is not None:
        scores = torch.floor(scores * levels)
    candidates = torch.rand(shape, generator=generator) < 0.6
    return scores, candidates


def reference_top_n(scores: torch.Tensor, candidates: torch.Tensor, n: int, positive_only: bool) -> set[int]:
    """Highest scores first, ties by ascending flat index (plain Python sort)."""
    flat_scores, flat_candidates = scores.flatten().tolist(), candidates.flatten().tolist()
    eligible = [p for p, ok in enumerate(flat_candidates) if ok and (flat_scores[p] > 0 or not positive_only)]
    return set(sorted(eligible, key=lambda p: (-flat_scores[p], p))[:n])


def chosen_positions(mask: torch.Tensor) -> set[int]:
    return set(mask.flatten().nonzero().flatten().tolist())


# ---------------------------------------------------------------- select_top_n

@pytest.mark.parametrize("positive_only", [False, True])
@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("n", [0, 1, 7, 40, 10**6])
def test_top_n_matches_sorted_reference_with_flat_index_tie_break(n: int, levels: int | None,
                                                                   positive_only: bool) -> None:
    scores, candidates = random_problem((9, 13), seed=n + 3, levels=levels)
    chosen = select_top_n(scores, candidates, n, positive_only=positive_only)
    assert chosen.dtype == torch.bool and chosen.shape == scores.shape
    assert chosen_positions(chosen) == reference_top_n(scores, candidates, n, positive_only)


def test_top_n_with_generator_breaks_ties_reproducibly_and_randomly() -> None:
    scores = torch.zeros(10, 10, dtype=torch.float64)
    scores[0, :3] = 2.0  # always chosen
    candidates = torch.ones(10, 10, dtype=torch.bool)

    def pick(seed: int) -> set[int]:
        return chosen_positions(select_top_n(scores, candidates, 8, torch.Generator().manual_seed(seed)))

    picks = [pick(seed) for seed in range(30)]
    assert picks[0] == pick(0)
    assert all(len(p) == 8 and {0, 1, 2} <= p for p in picks)
    assert len({frozenset(p) for p in picks}) > 20
    assert len(set().union(*picks)) > 50  # tied positions from all over the layer get picked


def splitmix64_reference(position: int, seed: int) -> int:
    """Output number ``position`` of splitmix64 seeded with ``seed``, as a signed 64-bit integer."""
    mask = 2**64 - 1
    z = (seed + (position + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return z - 2**64 if z >= 2**63 else z


@pytest.mark.parametrize("seed", [0, 1, -1, 2**63 - 2, -2**63, 123456789123456789])
def test_tie_keys_are_splitmix64_outputs(seed: int) -> None:
    positions = [0, 1, 2, 977, 2**31 - 1, 2**31, 2**32 + 5, 65536**2 - 1, 2**62 + 3]
    got = tie_keys(torch.tensor(positions, dtype=torch.int64), seed).tolist()
    assert got == [splitmix64_reference(p, seed) for p in positions]
    assert torch.equal(tie_keys(torch.tensor(positions), None), torch.tensor(positions))


def reference_top_n_keyed(scores: torch.Tensor, candidates: torch.Tensor, n: int, positive_only: bool,
                          seed: int) -> set[int]:
    """Highest scores first, ties by ascending splitmix64 key of the flat position."""
    flat_scores, flat_candidates = scores.flatten().tolist(), candidates.flatten().tolist()
    eligible = [p for p, ok in enumerate(flat_candidates) if ok and (flat_scores[p] > 0 or not positive_only)]
    return set(sorted(eligible, key=lambda p: (-flat_scores[p], splitmix64_reference(p, seed)))[:n])


@pytest.mark.parametrize("positive_only", [False, True])
@pytest.mark.parametrize("n", [1, 7, 40, 10**6])
def test_top_n_with_generator_matches_keyed_reference(n: int, positive_only: bool) -> None:
    scores, candidates = random_problem((9, 13), seed=n + 11, levels=3)
    seed = draw_tie_seed(torch.Generator().manual_seed(n))
    chosen = select_top_n(scores, candidates, n, torch.Generator().manual_seed(n), positive_only=positive_only)
    assert chosen_positions(chosen) == reference_top_n_keyed(scores, candidates, n, positive_only, seed)


def test_top_n_draws_exactly_once_from_the_generator() -> None:
    scores, candidates = random_problem((6, 7), seed=2, levels=2)
    for n in (0, 3, 10**6):
        used = torch.Generator().manual_seed(5)
        select_top_n(scores, candidates, n, used)
        reference = torch.Generator().manual_seed(5)
        draw_tie_seed(reference)
        assert torch.equal(used.get_state(), reference.get_state())


def test_top_n_tie_picks_are_uniform_over_tied_positions() -> None:
    """All 60 positions tie; 6 picks per call over 1000 seeds: every position is picked about 100 times."""
    scores = torch.ones(6, 10, dtype=torch.float64)
    candidates = torch.ones(6, 10, dtype=torch.bool)
    counts = torch.zeros(60)
    for seed in range(1000):
        counts += select_top_n(scores, candidates, 6, torch.Generator().manual_seed(seed)).flatten().double()
    assert int(counts.sum()) == 6000
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_top_n_ties_straddling_the_cut_take_exactly_n() -> None:
    scores = torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0]])
    candidates = torch.ones(1, 5, dtype=torch.bool)
    assert chosen_positions(select_top_n(scores, candidates, 2)) == {0, 1}
    assert len(chosen_positions(select_top_n(scores, candidates, 3, torch.Generator().manual_seed(1)))) == 3


def test_top_n_never_picks_non_candidates_even_with_higher_scores() -> None:
    scores, candidates = random_problem((12, 12), seed=9)
    scores[~candidates] += 10.0
    chosen = select_top_n(scores, candidates, 30)
    assert int(chosen.sum()) == 30 and not bool((chosen & ~candidates).any())


@pytest.mark.parametrize("select", [
    lambda s, c: select_top_n(s, c, 20, torch.Generator().manual_seed(3)),
    lambda s, c: select_iclr_threshold(s, c, 20),
    lambda s, c: sample_proportional(s, c, 20, torch.Generator().manual_seed(3)),
])
def test_non_contiguous_inputs_give_the_same_choice(select) -> None:
    scores, candidates = random_problem((14, 9), seed=8, levels=6)
    transposed = select(scores.T, candidates.T)
    assert not scores.T.is_contiguous()
    assert torch.equal(transposed, select(scores.T.contiguous(), candidates.T.contiguous()))


# ---------------------------------------------------------------- select_iclr_threshold

def reference_iclr(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> set[int]:
    flat_scores, flat_candidates = scores.flatten().tolist(), candidates.flatten().tolist()
    values = sorted((flat_scores[p] for p, ok in enumerate(flat_candidates) if ok), reverse=True)
    if n == 0 or not values:
        return set()
    cutoff = values[min(n, len(values)) - 1]
    return {p for p, ok in enumerate(flat_candidates)
            if ok and (flat_scores[p] > 0 if cutoff == 0 else flat_scores[p] >= cutoff)}


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("n", [0, 1, 10, 50, 10**6])
def test_iclr_threshold_matches_reference(n: int, levels: int | None) -> None:
    scores, candidates = random_problem((11, 8), seed=n, levels=levels)
    assert chosen_positions(select_iclr_threshold(scores, candidates, n)) == reference_iclr(scores, candidates, n)


def test_iclr_threshold_ties_add_links_and_zero_cutoff_keeps_positive_only() -> None:
    candidates = torch.ones(1, 5, dtype=torch.bool)
    assert chosen_positions(select_iclr_threshold(torch.tensor([[5.0, 3.0, 3.0, 3.0, 1.0]]), candidates, 2)) \
        == {0, 1, 2, 3}
    assert chosen_positions(select_iclr_threshold(torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.5]]), candidates, 4)) \
        == {0, 4}


# ---------------------------------------------------------------- sample_proportional

def test_proportional_sampling_counts_candidates_and_reproducibility() -> None:
    scores, candidates = random_problem((10, 10), seed=4)
    first = sample_proportional(scores, candidates, 17, torch.Generator().manual_seed(5))
    again = sample_proportional(scores, candidates, 17, torch.Generator().manual_seed(5))
    other = sample_proportional(scores, candidates, 17, torch.Generator().manual_seed(6))
    assert int(first.sum()) == 17 and not bool((first & ~candidates).any())
    assert torch.equal(first, again) and not torch.equal(first, other)
    everything = sample_proportional(scores, candidates, 10**6, torch.Generator().manual_seed(5))
    assert torch.equal(everything, candidates)


def test_proportional_sampling_takes_all_positives_then_fills_uniformly() -> None:
    scores = torch.zeros(4, 5, dtype=torch.float64)
    scores[0, 0], scores[2, 3], scores[3, 4] = 1.0, 0.5, 2.0
    candidates = torch.ones(4, 5, dtype=torch.bool)
    candidates[1] = False
    fills = []
    for seed in range(200):
        chosen = sample_proportional(scores, candidates, 5, torch.Generator().manual_seed(seed))
        positions = chosen_positions(chosen)
        assert len(positions) == 5 and {0, 13, 19} <= positions
        assert not bool(chosen[1].any())
        fills.extend(positions - {0, 13, 19})
    counts = torch.bincount(torch.tensor(fills), minlength=20)
    zero_candidates = [p for p in range(20) if p not in (0, 13, 19) and p // 5 != 1]
    assert stats.chisquare(counts[zero_candidates].numpy()).pvalue > 1e-3


def test_single_draw_frequencies_are_proportional_to_scores() -> None:
    weights = [1.0, 2.0, 3.0, 4.0, 0.0]
    scores = torch.tensor([weights])
    candidates = torch.ones(1, 5, dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.zeros(5)
    for _ in range(draws):
        counts += sample_proportional(scores, candidates, 1, generator)[0].float()
    assert counts[4] == 0
    expected = [draws * w / sum(weights) for w in weights[:4]]
    assert stats.chisquare(counts[:4].numpy(), expected).pvalue > 1e-3


def test_pair_frequencies_follow_successive_sampling_without_replacement() -> None:
    weights = [1.0, 2.0, 3.0, 6.0]
    total = sum(weights)
    exact = {
        (a, b): weights[a] / total * weights[b] / (total - weights[a])
        + weights[b] / total * weights[a] / (total - weights[b])
        for a, b in itertools.combinations(range(4), 2)
    }
    scores = torch.tensor([weights])
    candidates = torch.ones(1, 4, dtype=torch.bool)
    generator = torch.Generator().manual_seed(1)
    draws = 3000
    observed = dict.fromkeys(exact, 0)
    for _ in range(draws):
        observed[tuple(sorted(chosen_positions(sample_proportional(scores, candidates, 2, generator))))] += 1
    pairs = list(exact)
    result = stats.chisquare([observed[p] for p in pairs], [draws * exact[p] for p in pairs])
    assert result.pvalue > 1e-3


def test_negative_scores_are_rejected_by_proportional_sampling() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        sample_proportional(torch.tensor([[1.0, -0.5]]), torch.ones(1, 2, dtype=torch.bool), 1)


# ---------------------------------------------------------------- argument checks

SELECTORS = [
    lambda s, c, n: select_top_n(s, c, n),
    lambda s, c, n: select_iclr_threshold(s, c, n),
    lambda s, c, n: sample_proportional(s, c, n),
]


@pytest.mark.parametrize("select", SELECTORS)
@pytest.mark.parametrize(
    "scores, candidates, n, message",
    [
        (torch.zeros(3, 4), torch.ones(4, 3, dtype=torch.bool), 1, "shape"),
        (torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool), -1, "non-negative"),
        (torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.bool), 1.5, "non-negative integer"),
        (torch.zeros(3, 4), torch.ones(3, 4), 1, "bool"),
        (torch.zeros(3, 4, dtype=torch.int64), torch.ones(3, 4, dtype=torch.bool), 1, "floating"),
        (torch.full((3, 4), float("nan")), torch.ones(3, 4, dtype=torch.bool), 1, "NaN"),
    ],
)
def test_bad_arguments_raise_clear_errors(select, scores, candidates, n, message) -> None:
    with pytest.raises(ValueError, match=message):
        select(scores, candidates, n)


# ---------------------------------------------------------------- CUDA (runs where a GPU is present)

@CUDA
def test_selection_on_cuda_matches_cpu() -> None:
    scores, candidates = random_problem((30, 20), seed=2, levels=5)
    expected = select_top_n(scores, candidates, 25)
    assert torch.equal(select_top_n(scores.cuda(), candidates.cuda(), 25).cpu(), expected)
    assert torch.equal(select_iclr_threshold(scores.cuda(), candidates.cuda(), 25).cpu(),
                       select_iclr_threshold(scores, candidates, 25))
    cuda_generator = torch.Generator(device="cuda").manual_seed(0)
    cpu_generator = torch.Generator().manual_seed(0)
    assert int(select_top_n(scores.cuda(), candidates.cuda(), 25, cuda_generator).sum()) == 25
    assert int(sample_proportional(scores.cuda(), candidates.cuda(), 25, cpu_generator).sum()) == 25
