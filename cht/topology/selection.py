"""Which candidate links to grow, given their scores.

All helpers take ``scores`` (floating tensor), ``candidates`` (bool mask of the positions allowed to
grow, same shape and device) and a count ``n``, and return a bool mask of the chosen positions on the
device of ``scores``. Randomness comes only from the optional ``torch.Generator`` (on any device), so a
seeded generator makes every choice reproducible.
"""

from __future__ import annotations

import numbers

import torch


def select_top_n(
    scores: torch.Tensor,
    candidates: torch.Tensor,
    n: int,
    generator: torch.Generator | None = None,
    positive_only: bool = False,
) -> torch.Tensor:
    """Exactly ``min(n, #eligible)`` eligible positions with the highest scores.

    Eligible are the candidates (with ``positive_only``, only those scoring > 0). Scores tied at the
    cut-off are taken in the order of a random permutation drawn from ``generator`` when given, else
    in ascending flat index (row-major) order, so the result never depends on sort internals.
    """
    _check_inputs(scores, candidates, n)
    eligible = candidates & (scores > 0) if positive_only else candidates
    count = min(int(n), int(eligible.sum()))
    if count == 0:
        return torch.zeros_like(candidates)
    cutoff = _kth_largest(scores, eligible, count)
    chosen = (eligible & (scores > cutoff)).contiguous()
    tied = (eligible & (scores == cutoff)).reshape(-1).nonzero().squeeze(1)
    if generator is not None:
        tied = tied[torch.randperm(tied.numel(), generator=generator, device=generator.device).to(tied.device)]
    chosen.view(-1)[tied[: count - int(chosen.sum())]] = True
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
