"""Link sets: a sparse layer's connectivity as sorted flat positions, never as a dense matrix.

A layer of shape ``(out, in)`` (PyTorch's convention) holds its links as a 1-D int64 tensor of
positions ``o * in + i``, sorted ascending: the order of a CSR matrix with one row per output neuron.
Everything the evolution engine does (removal, percolation, regrowth) is expressed on such sets, so
a layer of 65,536 × 65,536 neurons costs memory in proportion to its links, not to its positions.
Dense masks appear only where a rule needs a dense quantity anyway (a gradient, a score matrix) and
the layer is small enough for it.
"""

from __future__ import annotations

import torch

# Positions up to which a dense draw over all candidates is cheaper and simpler than rejection sampling.
DENSE_POSITIONS = 1 << 24


def from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Sorted flat positions of the ``True`` entries of a 2-D mask."""
    return mask.flatten().nonzero().squeeze(1)


def to_mask(index: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Dense boolean matrix of ``shape`` with the positions of ``index`` set."""
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=index.device)
    mask[index] = True
    return mask.view(shape)


def to_adjacency(index: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The links at weight positions of a layer of ``shape`` ``(out, in)``, as the bipartite adjacency ``(in,
    out)`` the network-science code reads (entry ``[i, j]`` links input ``i`` to output ``j``)."""
    return to_mask(index, shape).t()


def from_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    """Weight positions (layer convention ``(out, in)``) of the links of a boolean adjacency ``(in, out)``."""
    return from_mask(adjacency.t())


def rows_cols(index: torch.Tensor, n_cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (output neuron) and column (input neuron) of each position."""
    return torch.div(index, n_cols, rounding_mode="floor"), index % n_cols


def contains(index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """For each of ``positions``, whether the sorted set ``index`` holds it."""
    if index.numel() == 0:
        return torch.zeros(positions.shape, dtype=torch.bool, device=positions.device)
    slot = torch.searchsorted(index, positions).clamp(max=index.numel() - 1)
    return index[slot] == positions


def merge(*parts: torch.Tensor) -> torch.Tensor:
    """Sorted union of disjoint position sets."""
    return torch.sort(torch.cat(parts)).values


def check_links(index: torch.Tensor, shape: tuple[int, int]) -> None:
    """Raise unless ``index`` is a sorted, duplicate-free set of positions inside ``shape``."""
    if index.dtype != torch.int64 or index.dim() != 1:
        raise ValueError(f"links must be a 1-D int64 tensor of flat positions, got {index.dtype} {tuple(index.shape)}")
    if index.numel():
        if int(index[0]) < 0 or int(index[-1]) >= shape[0] * shape[1]:
            raise ValueError(f"links fall outside a layer of shape {shape}")
        if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
            raise ValueError("links must be sorted ascending without duplicates")


def degrees(index: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Links per output neuron (row) and per input neuron (column)."""
    rows, cols = rows_cols(index, shape[1])
    return (torch.bincount(rows, minlength=shape[0]), torch.bincount(cols, minlength=shape[1]))


def random_free_positions(shape: tuple[int, int], occupied: torch.Tensor, n: int, generator: torch.Generator,
                          rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` positions drawn uniformly without replacement among those not in ``occupied``.

    With ``rows``/``cols`` the draw is restricted to the product of those output and input neurons.
    Small or crowded grids draw one key per position; others draw candidates at random and reject taken
    ones, so time and memory follow ``n`` and the number of links, not the number of positions.
    """
    device = occupied.device
    rows = torch.arange(shape[0], device=device) if rows is None else rows
    cols = torch.arange(shape[1], device=device) if cols is None else cols
    grid = rows.numel() * cols.numel()
    free_count = count_free(shape, occupied, rows, cols)
    if not 0 <= n <= free_count:
        raise ValueError(f"cannot place {n} links: only {free_count} free positions")
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    # One key per position pays off only on small or crowded grids; elsewhere rejection costs O(n log n).
    if grid <= DENSE_POSITIONS and (free_count < 2 * n or free_count < grid // 2 or grid <= 1 << 12):
        positions = _grid_positions(rows, cols, shape[1])
        keys = torch.rand(grid, generator=generator, device=generator.device).to(device)
        keys = keys.masked_fill(contains(occupied, positions), -1.0)
        return torch.sort(positions[torch.topk(keys, n, sorted=False).indices]).values
    chosen = torch.empty(0, dtype=torch.int64, device=device)
    while chosen.numel() < n:
        missing = n - chosen.numel()
        draw = torch.randint(grid, (2 * missing + 64,), generator=generator, device=generator.device).to(device)
        candidates = torch.unique(rows[draw // cols.numel()] * shape[1] + cols[draw % cols.numel()])
        candidates = candidates[~contains(occupied, candidates) & ~contains(chosen, candidates)]
        order = torch.randperm(candidates.numel(), generator=generator, device=generator.device).to(device)
        chosen = merge(chosen, candidates[order[:missing]])
    return chosen


def count_free(shape: tuple[int, int], occupied: torch.Tensor, rows: torch.Tensor | None = None,
               cols: torch.Tensor | None = None) -> int:
    """Positions in the product of ``rows`` and ``cols`` (default: all) not in ``occupied``."""
    rows = torch.arange(shape[0], device=occupied.device) if rows is None else rows
    cols = torch.arange(shape[1], device=occupied.device) if cols is None else cols
    return rows.numel() * cols.numel() - int(_in_grid(occupied, rows, cols, shape).sum())


def _in_grid(index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Which positions of ``index`` lie in the product of ``rows`` and ``cols``."""
    row_of, col_of = rows_cols(index, shape[1])
    row_in = torch.zeros(shape[0], dtype=torch.bool, device=index.device)
    col_in = torch.zeros(shape[1], dtype=torch.bool, device=index.device)
    row_in[rows] = True
    col_in[cols] = True
    return row_in[row_of] & col_in[col_of]


def _grid_positions(rows: torch.Tensor, cols: torch.Tensor, n_cols: int) -> torch.Tensor:
    return (rows[:, None] * n_cols + cols[None, :]).flatten()
