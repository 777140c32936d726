"""Random layered networks with planted groups, as known-answer inputs for the analysis code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def group_of_neurons(size: int, n_groups: int) -> np.ndarray:
    """Group of each neuron of a layer: contiguous, near-equal blocks ``floor(i · n_groups / size)``."""
    return np.arange(size) * n_groups // size


def stochastic_block_masks(sizes: Sequence[int], p_in: float, p_out: float, n_groups: int = 2,
                           seed: int = 0) -> list[torch.Tensor]:
    """Masks of a layered stochastic block model: each possible link between consecutive layers exists
    independently with probability ``p_in`` inside a group and ``p_out`` across groups.

    ``p_in == p_out`` gives uniformly random masks of that density.
    """
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive layer sizes, got {list(sizes)}")
    for name, value in (("p_in", p_in), ("p_out", p_out)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        groups_in, groups_out = group_of_neurons(n_in, n_groups), group_of_neurons(n_out, n_groups)
        same = torch.from_numpy(groups_in[:, None] == groups_out[None, :])
        probability = torch.where(same, p_in, p_out)
        masks.append(torch.rand(n_in, n_out, generator=generator) < probability)
    return masks
