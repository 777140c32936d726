"""Percolation ("chain removal") across consecutive sparse layers.

A hidden neuron with no outgoing links cannot influence the output, and one with no incoming links
carries only its bias: the links left on either side of it are dead weight. One backward sweep (drop
the incoming links of neurons without outputs) followed by one forward sweep (drop the outgoing links
of neurons without inputs) reaches the fixed point: the backward sweep never strips a neuron of its
inputs while it still has outputs, and the forward sweep only isolates neurons that were already dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def percolate(adjacencies: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Return percolated copies of consecutive adjacencies (each ``(n_in, n_out)``, bool).

    Only hidden neurons (between two sparse layers) are affected: the network's inputs and the last
    sparse layer's outputs (which feed a dense classifier) are never percolated.
    """
    result = [a.clone() for a in adjacencies]
    for left, right in zip(result[:-1], result[1:]):
        if left.shape[1] != right.shape[0]:
            raise ValueError(f"consecutive layers do not chain: {tuple(left.shape)} then {tuple(right.shape)}")
    for index in reversed(range(len(result) - 1)):
        without_outputs = ~result[index + 1].any(dim=1)
        result[index][:, without_outputs] = False
    for index in range(len(result) - 1):
        without_inputs = ~result[index].any(dim=0)
        result[index + 1][without_inputs, :] = False
    return result
