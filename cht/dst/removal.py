"""Removal rules: which existing links an evolution step drops.

A rule sees one layer through its link interface (:attr:`~cht.sparse.SparseLinear.links`, their values,
and the dense gradient of the update step when the method asked for it) and the removal fraction of
this step, and returns a boolean vector over the layer's links: ``True`` for each link to remove.
Rules never see a dense weight, so they cost O(links) on either storage.

Rules that rank links by a "keep" score derive from :class:`RankedRemoval` and drop the
``round(fraction · links)`` lowest. The engine prunes with :class:`MagnitudeTopKRemoval` when a density
schedule lowers a layer's link count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cht.init.selection import gumbel_keys, smallest_k
from cht.sparse import links
from cht.sparse.layer import SparseLinear


@dataclass
class RemovalContext:
    """Per-step information a rule may use: training progress in [0, 1] and randomness."""

    progress: float
    generator: torch.Generator


class RemovalRule(Protocol):
    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor: ...


def dense_gradient(layer: SparseLinear, rule: str) -> torch.Tensor:
    """The layer's dense gradient ``(out, in)`` of the update step, or an error saying how to obtain it."""
    try:
        return layer.dense_gradient()
    except RuntimeError:
        raise RuntimeError(f"{rule} needs the dense gradient of the update step: the method must set "
                           "needs_dense_grad=True and the training loop call Evolution.capture_gradients(True) "
                           "before that step's backward pass") from None


def removal_count(layer: SparseLinear, fraction: float) -> int:
    return round(fraction * layer.n_links)


MAGNITUDE_COUNTINGS = ("rounded", "released")


@dataclass(frozen=True)
class MagnitudeRemoval:
    """SET rule: drop ``fraction`` of the negative and ``fraction`` of the non-negative weights nearest zero.

    Splitting by sign keeps the balance of excitatory and inhibitory links (Mocanu et al. 2018).
    ``counting="rounded"``: ``round(fraction · count)`` of each sign; zero weights count as non-negative,
    so links that never trained are the first to go. ``counting="released"``: the thresholds of the
    authors' code (:func:`released_set_removal`), which remove one or two links more per sign and every
    link whose weight is exactly 0.
    """

    counting: str = "rounded"

    def __post_init__(self) -> None:
        if self.counting not in MAGNITUDE_COUNTINGS:
            raise ValueError(f"MagnitudeRemoval: counting {self.counting!r} is not one of {MAGNITUDE_COUNTINGS}")

    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor:
        values = layer.link_values()
        if self.counting == "released":
            return released_set_removal(values, layer.in_features * layer.out_features, fraction)
        negative = values < 0
        non_negative = ~negative
        n_neg = round(fraction * int(negative.sum()))
        n_pos = round(fraction * int(non_negative.sum()))
        return smallest_k(-values, negative, n_neg) | smallest_k(values, non_negative, n_pos)


def released_set_removal(values: torch.Tensor, total: int, zeta: float) -> torch.Tensor:
    """Links the ICLR release's ``remove_connections`` drops (``sparse.py`` at dfbd68d, ``weight_magnitude``).

    The release sorts ``weight · mask`` over the whole layer, non-links included (they read 0), takes
    ``first`` = the first and ``last`` = one past the last zero of that sorted array (of the entry nearest
    0 when there is no zero), and keeps the weights below ``sorted[int((1 − ζ) · first)]`` and above
    ``sorted[int(min(N − 1, last + ζ · (N − last)))]``. So it drops ``n_neg − ⌊(1 − ζ) n_neg⌋`` negative
    and ``⌊ζ n_pos⌋ + 1`` positive weights (all ties at either threshold), plus every link whose weight
    is exactly 0, which sits between the thresholds. Both indices are computed in float32, as the
    release's 0-dim tensor arithmetic does; they are reproduced with the same operations here. Only the
    link values are sorted (the non-link zeros are counted, not materialised).
    """
    n_links = values.numel()
    if n_links == 0:
        return torch.zeros(0, dtype=torch.bool, device=values.device)
    ordered = values.sort().values
    n_neg = int((ordered < 0).sum())
    n_zero_links = int((ordered == 0).sum())
    zeros = total - n_links + n_zero_links
    if zeros:
        first, last = n_neg, n_neg + zeros
    else:  # every position is a non-zero link: the release's argmin of |value| decides
        magnitude = ordered.abs()
        first = int(magnitude.argmin())
        last = total - int(magnitude.flip(0).argmin())

    def sorted_value(position: int) -> torch.Tensor:
        """Entry ``position`` of the release's sorted dense array: negatives, zeros, positives."""
        if not zeros or position < n_neg:
            return ordered[position]
        if position < n_neg + zeros:
            return ordered.new_zeros(())
        return ordered[position - zeros + n_zero_links]

    first_position, last_position = torch.tensor(first), torch.tensor(last)
    largest_negative = sorted_value(int((1 - zeta) * first_position))
    smallest_positive = sorted_value(int(min(total - 1, last_position + zeta * (total - last_position))))
    return ~((values > smallest_positive) | (values < largest_negative))


class RankedRemoval:
    """Base of rules that drop the links with the lowest ``keep_scores``."""

    def keep_scores(self, layer: SparseLinear) -> torch.Tensor:
        """One score per link (in the order of ``layer.links``): higher means more worth keeping."""
        raise NotImplementedError

    def lowest(self, layer: SparseLinear, count: int) -> torch.Tensor:
        """The ``count`` links with the lowest keep scores, as a boolean vector over the links."""
        scores = self.keep_scores(layer)
        return smallest_k(scores, torch.ones_like(scores, dtype=torch.bool), count)

    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor:
        return self.lowest(layer, removal_count(layer, fraction))


@dataclass(frozen=True)
class MagnitudeTopKRemoval(RankedRemoval):
    """RigL/GraNet rule: drop the ``fraction`` of links with the smallest ``|w|``, whatever their sign."""

    def keep_scores(self, layer: SparseLinear) -> torch.Tensor:
        return layer.link_values().abs()


@dataclass(frozen=True)
class MESTRemoval(RankedRemoval):
    """MEST (Yuan et al. 2021): drop the links with the smallest ``|w| + λ·|∂L/∂w|``.

    The gradient term spares small weights that the loss is still pushing on.
    """

    gradient_factor: float = 0.01

    def __post_init__(self) -> None:
        if self.gradient_factor < 0:
            raise ValueError(f"MESTRemoval: gradient_factor must be ≥ 0, got {self.gradient_factor}")

    def keep_scores(self, layer: SparseLinear) -> torch.Tensor:
        gradient = dense_gradient(layer, "MEST removal").reshape(-1)[layer.links]
        return layer.link_values().abs() + self.gradient_factor * gradient.abs()


@dataclass(frozen=True)
class RelativeImportanceRemoval(RankedRemoval):
    """Relative importance (CHTs follow-up): ``|w_ij| / Σ_k |w_kj| + |w_ij| / Σ_k |w_ik|``.

    A weight counts relative to the total strength of both neurons it joins, so weak neurons keep
    their strongest links instead of losing them to a global magnitude threshold.
    """

    epsilon: float = 1e-5

    def keep_scores(self, layer: SparseLinear) -> torch.Tensor:
        magnitude = layer.link_values().abs()
        outputs, inputs = links.rows_cols(layer.links, layer.in_features)
        per_input = torch.zeros(layer.in_features, dtype=magnitude.dtype, device=magnitude.device)
        per_output = torch.zeros(layer.out_features, dtype=magnitude.dtype, device=magnitude.device)
        per_input.index_add_(0, inputs, magnitude)
        per_output.index_add_(0, outputs, magnitude)
        return magnitude / (per_input[inputs] + self.epsilon) + magnitude / (per_output[outputs] + self.epsilon)


@dataclass(frozen=True)
class SoftRemoval:
    """CHTs soft removal: survivors drawn without replacement with probability ∝ ``importance^T``.

    ``importance`` is the keep score of a ranked rule (``|w|`` by default, or relative importance).
    The temperature ``T`` rises linearly from ``start_temperature`` to ``end_temperature`` over training,
    so removal moves from exploratory (T = 1: proportional to importance) to nearly greedy. Links of
    zero importance get a tiny floor and survive only when nothing else is left.
    """

    importance: RankedRemoval = field(default_factory=lambda: MagnitudeTopKRemoval())
    start_temperature: float = 1.0
    end_temperature: float = 3.0
    floor: float = 1e-12

    def __post_init__(self) -> None:
        if self.start_temperature < 0 or self.end_temperature < 0:
            raise ValueError("SoftRemoval: temperatures must be ≥ 0, got "
                             f"{self.start_temperature} → {self.end_temperature}")

    def temperature(self, progress: float) -> float:
        position = min(max(progress, 0.0), 1.0)
        return self.start_temperature + (self.end_temperature - self.start_temperature) * position

    def __call__(self, layer: SparseLinear, fraction: float, context: RemovalContext) -> torch.Tensor:
        importance = self.importance.keep_scores(layer).clamp(min=self.floor)
        keys = gumbel_keys(self.temperature(context.progress) * importance.log(), context.generator)
        # Dropping the k lowest Gumbel keys keeps the n − k highest: a draw of survivors ∝ importance^T.
        return smallest_k(keys, torch.ones_like(keys, dtype=torch.bool), removal_count(layer, fraction))
