"""Exact per-layer link counts for a target overall density."""

from __future__ import annotations

from collections.abc import Sequence

DISTRIBUTIONS = ("uniform", "erk")


def link_counts(shapes: Sequence[tuple[int, int]], density: float, distribution: str = "uniform") -> list[int]:
    """Number of links of each ``(n_in, n_out)`` layer for ``density`` of all possible links.

    ``uniform`` gives every layer the same density; ``erk`` (Erdős–Rényi-kernel, Evci et al. 2020) gives
    a layer a density proportional to ``(n_in + n_out) / (n_in · n_out)``, capping saturated layers at
    full density and redistributing their share, so the total is the same as ``uniform``'s.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must lie in [0, 1], got {density}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    sizes = [n_in * n_out for n_in, n_out in shapes]
    if distribution == "uniform":
        return [round(density * size) for size in sizes]

    budget = round(density * sum(sizes))
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        remaining = budget - sum(sizes[i] for i in dense)
        raw = {i: (shapes[i][0] + shapes[i][1]) / sizes[i] for i in free}
        weight_total = sum(raw[i] * sizes[i] for i in free)
        scale = remaining / weight_total if weight_total else 0.0
        saturated = [i for i in free if scale * raw[i] >= 1.0]
        if not saturated:
            break
        dense.update(saturated)
    counts = [sizes[i] if i in dense else int(scale * raw[i] * sizes[i]) for i in range(len(shapes))]
    # Hand the rounding remainder to the free layers with the largest fractional parts.
    shortfall = budget - sum(counts)
    by_fraction = sorted(free, key=lambda i: scale * raw[i] * sizes[i] - counts[i], reverse=True)
    for i in by_fraction[:shortfall]:
        counts[i] += 1
    return counts
