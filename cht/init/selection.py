"""Exact-count selection of matrix entries, shared by initialisers and the DST removal and regrowth rules.

The selectors return a boolean mask of the shape of their input holding exactly the requested number
of ``True`` entries, all inside ``eligible``, on whatever device the tensors are on.
"""

from __future__ import annotations

import torch


def largest_k(keys: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` eligible entries with the largest keys."""
    available = int(eligible.sum())
    if not 0 <= k <= available:
        raise ValueError(f"cannot select {k} entries from {available} eligible ones")
    chosen = torch.zeros(keys.numel(), dtype=torch.bool, device=keys.device)
    if k > 0:
        masked = keys.masked_fill(~eligible, float("-inf")).flatten()
        chosen[torch.topk(masked, k, sorted=False).indices] = True
    return chosen.view(keys.shape)


def smallest_k(keys: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` eligible entries with the smallest keys."""
    return largest_k(-keys, eligible, k)


def gumbel_keys(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``log w + Gumbel noise``: the ``k`` largest keys are a draw of ``k`` items without replacement ∝ ``w``.

    This is the Gumbel-top-k trick (Kool et al. 2019): the same distribution as ``k`` successive
    ``torch.multinomial`` draws without replacement, in one vectorised pass with an explicit generator.
    Computed in float64 so that weights spanning many orders of magnitude keep their order.
    """
    uniform = torch.rand(log_weights.shape, generator=generator, device=log_weights.device,
                         dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float64).tiny)))
    return log_weights.to(torch.float64) + gumbel
