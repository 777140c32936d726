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

from cht.sparse import links as L


def percolate(link_sets: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Percolated copies of consecutive layers' link sets (sorted positions, layer convention ``(out, in)``).

    Only hidden neurons (between two sparse layers) are affected: the network's inputs and the last
    sparse layer's outputs (which feed a dense classifier) are never percolated.
    """
    if len(link_sets) != len(shapes):
        raise ValueError(f"{len(link_sets)} link sets for {len(shapes)} layer shapes")
    for left, right in zip(shapes[:-1], shapes[1:]):
        if left[0] != right[1]:
            raise ValueError(f"consecutive layers do not chain: {left[0]} outputs then {right[1]} inputs "
                             f"(shapes {tuple(left)} then {tuple(right)}, layer convention (out, in))")
    result = list(link_sets)
    for index in reversed(range(len(result) - 1)):
        _, has_outputs = L.degrees(result[index + 1], shapes[index + 1])
        rows, _ = L.rows_cols(result[index], shapes[index][1])
        result[index] = result[index][has_outputs[rows] > 0]
    for index in range(len(result) - 1):
        has_inputs, _ = L.degrees(result[index], shapes[index])
        _, cols = L.rows_cols(result[index + 1], shapes[index + 1][1])
        result[index + 1] = result[index + 1][has_inputs[cols] > 0]
    return result
