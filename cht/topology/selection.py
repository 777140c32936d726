"""Which candidate links to grow, given their scores.

All helpers take ``scores`` (floating tensor), ``candidates`` (bool mask of the positions allowed to
grow, same shape and device) and a count ``n``, and return a bool mask of the chosen positions on the
device of ``scores``. Randomness comes only from the optional ``torch.Generator`` (on any device), so a
seeded generator makes every choice reproducible.

Ties in :func:`select_top_n` are ranked by :func:`tie_keys`: a pseudo-random key per flat position,
derived from one 64-bit seed drawn from the generator. A key depends on its position alone, so a
selection that sees the layer block by block (:func:`cht.topology.top_n_links`) ranks ties exactly
as the dense one does.
"""

from __future__ import annotations

import numbers

import torch

# splitmix64 (Steele, Lea and Flood, 2014): position p gets the p-th output of the generator seeded
# with the drawn seed. Every step is a bijection of 64-bit integers, so distinct positions get
# distinct keys, and the outputs pass statistical tests of uniformity.
SPLITMIX_GAMMA = 0x9E3779B97F4A7C15
SPLITMIX_MULTIPLIERS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
SPLITMIX_SHIFTS = (30, 27, 31)


def draw_tie_seed(generator: torch.Generator | None) -> int | None:
    """One 64-bit seed for :func:`tie_keys` drawn from ``generator`` (``None`` without one)."""
    if generator is None:
        return None
    return int(torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64, generator=generator,
                             device=generator.device))


def tie_keys(positions: torch.Tensor, seed: int | None) -> torch.Tensor:
    """int64 tie-break keys of flat positions (int64 tensor); the smaller key wins a tie.

    With a seed, the splitmix64 output number ``position`` of the stream seeded by ``seed``, read as a
    signed 64-bit integer; without one, the position itself (ties in row-major order).
    """
    if seed is None:
        return positions
    z = (positions + 1) * _as_int64(SPLITMIX_GAMMA) + _as_int64(seed)
    for shift, multiplier in zip(SPLITMIX_SHIFTS, SPLITMIX_MULTIPLIERS):
        z = (z ^ _shift_right(z, shift)) * _as_int64(multiplier)
    return z ^ _shift_right(z, SPLITMIX_SHIFTS[-1])


def _as_int64(value: int) -> int:
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def _shift_right(z: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> shift) & ((1 << (64 - shift)) - 1)


def select_top_n(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    positive_only: bool = False,
) -> torch.Tensor:
    """Exactly ``min(n, #eligible)`` eligible positions with the highest scores.

    Eligible are the candidates (with ``positive_only``, only those scoring > 0). Scores tied at the
    cut-off are taken by ascending :func:`tie_keys` of their flat (row-major) positions: with
    ``generator``, keys from one seed drawn from it (exactly one draw per call, whatever the
    scores), which orders the ties uniformly at random; without, ascending flat index. The result
    never depends on sort internals.
    """
    _check_inputs(scores, candidates, n)
    seed = draw_tie_seed(generator)
    eligible = candidates & (scores > 0) if positive_only else candidates
    count = min(int(n), int(eligible.sum()))
    if count == 0:
        return torch.zeros_like(candidates)
    cutoff = _kth_largest(scores, eligible, count)
    chosen = (eligible & (scores > cutoff)).contiguous()
    tied = (eligible & (scores == cutoff)).reshape(-1).nonzero().squeeze(1)
    missing = count - int(chosen.sum())
    if seed is not None and missing < tied.numel():
        tied = tied[torch.topk(tie_keys(tied, seed), missing, largest=False, sorted=False).indices]
    chosen.view(-1)[tied[:missing]] = True
    return chosen


def select_iclr_threshold(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> torch.Tensor:
    """The ICLR 2024 release's rule: every candidate scoring at least the n-th best candidate score.

    Ties at that score add links beyond ``n``. When the n-th best score is 0 only positive scores are
    grown (fewer than ``n`` links). With ``n`` at least the number of candidates, the cut-off is the
    lowest candidate score.
    """
    _check_inputs(scores, candidates, n)
    count = min(int(n), int(candidates.sum()))
    if count == 0:
        return torch.zeros_like(candidates)
    cutoff = _kth_largest(scores, candidates, count)
    return candidates & (scores > 0 if cutoff == 0 else scores >= cutoff)


def sample_proportional(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``min(n, #candidates)`` candidates drawn without replacement with probability ∝ score.

    Successive draws without replacement (each draw ∝ score among those left), implemented as the
    exponential race of Efraimidis and Spirakis: position ``p`` gets the key ``Exp(1) / score_p`` and
    the smallest keys win. When fewer than ``n`` candidates score > 0, all positive ones are taken and
    the rest are drawn uniformly at random among the zero-score candidates. Scores must be >= 0.
    """
    _check_inputs(scores, candidates, n)
    n = int(n)
    positions = candidates.reshape(-1).nonzero().squeeze(1)
    values = scores.reshape(-1)[positions]
    if bool((values < 0).any()):
        raise ValueError("scores of candidates must be >= 0 for proportional sampling")
    draw_device = scores.device if generator is None else generator.device
    uniform = torch.rand(positions.numel(), dtype=torch.float64, generator=generator, device=draw_device)
    uniform = uniform.to(scores.device)
    positive = values > 0
    race = torch.where(positive, -torch.log1p(-uniform) / values.to(torch.float64), torch.inf)
    n_positive = int(positive.sum())
    chosen = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    chosen[positions[torch.topk(race, min(n, n_positive), largest=False).indices]] = True
    fill = min(n, positions.numel()) - n_positive
    if fill > 0:
        zero_positions = positions[~positive]
        chosen[zero_positions[torch.topk(uniform[~positive], fill, largest=False).indices]] = True
    return chosen.view(scores.shape)


def _check_inputs(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> None:
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        raise ValueError("scores must be a floating-point tensor")
    if not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.bool:
        raise ValueError("candidates must be a bool tensor marking the positions allowed to grow")
    if candidates.shape != scores.shape:
        raise ValueError(
            f"candidates has shape {tuple(candidates.shape)} but scores has shape {tuple(scores.shape)}; "
            "they must match"
        )
    if candidates.device != scores.device:
        raise ValueError(f"candidates is on {candidates.device} but scores on {scores.device}; move one")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer (the number of links to grow)")
    if bool((candidates & scores.isnan()).any()):
        raise ValueError("scores of candidates contain NaN")


def _kth_largest(scores: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest eligible score (``1 <= k <= #eligible``), ineligible ones masked to -inf."""
    masked = torch.where(eligible, scores, -torch.inf).reshape(-1)
    return torch.kthvalue(masked, masked.numel() - k + 1).values
