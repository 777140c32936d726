"""Blocked CH regrowth (top_n_links) against the dense route select_top_n(link_scores(...))."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cht.topology import available_rules, link_scores, numba_kernels, select_top_n, top_n_links

pytestmark = pytest.mark.skipif(not numba_kernels.AVAILABLE, reason="numba not installed")
REPOSITORY = Path(__file__).resolve().parents[1]


def random_layer(shape: tuple[int, int], density: float, seed: int, isolate: int = 0) -> torch.Tensor:
    """Erdős–Rényi mask; ``isolate`` inputs and as many outputs lose all their links."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < density
    mask[torch.randperm(shape[0], generator=generator)[:isolate]] = False
    mask[:, torch.randperm(shape[1], generator=generator)[:isolate]] = False
    return mask


def shuffled_links(mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst = mask.nonzero().unbind(1)
    order = torch.randperm(src.numel(), generator=torch.Generator().manual_seed(seed))
    return src[order], dst[order]


def dense_choice(mask: torch.Tensor, n: int, rule: str, seed: int | None, positive_only: bool,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return select_top_n(link_scores(mask, rule, dtype=dtype), ~mask, n, generator, positive_only)


def blocked_choice(mask: torch.Tensor, n: int, rule: str, seed: int | None, positive_only: bool,
                   dtype: torch.dtype = torch.float32, block_rows: int | None = None) -> tuple[torch.Tensor, int]:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    src, dst = shuffled_links(mask, seed or 0)
    chosen = top_n_links(*mask.shape, src, dst, n, rule, generator, positive_only, dtype=dtype,
                         block_rows=block_rows)
    assert chosen.src.dtype == torch.int64 and chosen.dst.dtype == torch.int64
    positions = chosen.src * mask.shape[1] + chosen.dst
    assert bool((positions.diff() > 0).all()), "links come back sorted by flat position, each once"
    grown = torch.zeros_like(mask)
    grown[chosen.src, chosen.dst] = True
    return grown, chosen.n_positive


def positive_candidates(mask: torch.Tensor, rule: str) -> int:
    return int(((link_scores(mask, rule, dtype=torch.float64) > 0) & ~mask).sum())


LAYERS = {
    "random square": random_layer((40, 40), 0.08, seed=1),
    "isolated neurons": random_layer((45, 38), 0.12, seed=2, isolate=9),
    "tall": random_layer((61, 17), 0.15, seed=3),
    "wide": random_layer((13, 57), 0.2, seed=4, isolate=2),
    "dense": random_layer((20, 24), 0.7, seed=5),
    "full": torch.ones(9, 12, dtype=torch.bool),
    "empty": torch.zeros(8, 11, dtype=torch.bool),
    "single link": torch.zeros(7, 9, dtype=torch.bool).index_put_((torch.tensor([3]), torch.tensor([5])),
                                                                   torch.tensor(True)),
    "one row": random_layer((1, 30), 0.5, seed=6),
    "one column": random_layer((30, 1), 0.5, seed=7),
    # regular graphs: many scores tie, and the tie keys decide
    "many ties": torch.block_diag(*[torch.ones(3, 4, dtype=torch.bool)] * 5) | torch.eye(15, 20, dtype=torch.bool),
    "matching": torch.eye(16, dtype=torch.bool),
}


@pytest.mark.parametrize("positive_only", [True, False])
@pytest.mark.parametrize("seed", [None, 11])
@pytest.mark.parametrize("name", list(LAYERS))
def test_blocked_choice_equals_dense_choice(name: str, seed: int | None, positive_only: bool) -> None:
    mask = LAYERS[name]
    n_positive = positive_candidates(mask, "CH3-L3")
    for n in sorted({0, 1, 7, n_positive // 2, n_positive, n_positive + 5, mask.numel()}):
        grown, counted = blocked_choice(mask, n, "CH3-L3", seed, positive_only)
        expected = dense_choice(mask, n, "CH3-L3", seed, positive_only)
        assert torch.equal(grown, expected), f"n={n}"
        assert counted == n_positive


@pytest.mark.parametrize("rule", available_rules())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_rule_and_dtype_matches_the_dense_route(rule: str, dtype: torch.dtype) -> None:
    for case, (shape, density) in enumerate([((50, 43), 0.1), ((19, 64), 0.2), ((70, 70), 0.04)]):
        mask = random_layer(shape, density, seed=30 + case, isolate=3)
        for n in (5, 60, 400):
            for positive_only in (True, False):
                grown, _ = blocked_choice(mask, n, rule, 7 + case, positive_only, dtype)
                assert torch.equal(grown, dense_choice(mask, n, rule, 7 + case, positive_only, dtype))


def test_ties_are_broken_by_the_generator_reproducibly() -> None:
    mask = LAYERS["many ties"]
    n = positive_candidates(mask, "CH3-L3") + 25  # 25 of the many zero-scored candidates
    picks = [blocked_choice(mask, n, "CH3-L3", seed, positive_only=False)[0] for seed in range(12)]
    assert torch.equal(picks[0], blocked_choice(mask, n, "CH3-L3", 0, positive_only=False)[0])
    assert len({tuple(p.flatten().nonzero().flatten().tolist()) for p in picks}) > 6


@pytest.mark.parametrize("block_rows", [1, 3, 1000])
def test_work_split_does_not_change_the_choice(block_rows: int) -> None:
    mask = random_layer((90, 75), 0.06, seed=8, isolate=5)
    expected = dense_choice(mask, 150, "CH3-L3", 4, True)
    assert torch.equal(blocked_choice(mask, 150, "CH3-L3", 4, True, block_rows=block_rows)[0], expected)


def test_draws_once_from_the_generator_like_select_top_n() -> None:
    mask = LAYERS["random square"]
    dense_generator, blocked_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    select_top_n(link_scores(mask), ~mask, 20, dense_generator, positive_only=True)
    top_n_links(*mask.shape, *shuffled_links(mask, 0), 20, generator=blocked_generator)
    assert torch.equal(dense_generator.get_state(), blocked_generator.get_state())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_in": -1}, "n_in"),
        ({"n": 2.5}, "n="),
        ({"src": torch.tensor([0.0, 1.0])}, "src"),
        ({"dst": torch.tensor([[0, 1]])}, "dst"),
        ({"dst": torch.tensor([0, 1, 2])}, "pair up"),
        ({"src": torch.tensor([0, 4])}, "n_in"),
        ({"dst": torch.tensor([0, -1])}, "n_out"),
        ({"src": torch.tensor([1, 1]), "dst": torch.tensor([2, 2])}, "twice"),
        ({"rule": "CH4-L3"}, "CH3-L3"),
        ({"dtype": torch.int32}, "dtype"),
        ({"block_rows": 0}, "block_rows"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    arguments = {"n_in": 4, "n_out": 3, "src": torch.tensor([0, 1]), "dst": torch.tensor([1, 2]), "n": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        top_n_links(**arguments)


PEAK_MEMORY_SCRIPT = textwrap.dedent("""
    import ctypes, json, re, sys
    from pathlib import Path
    import torch
    from cht.topology import top_n_links

    def kib(field):
        return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

    n_neurons, links, grow = 20_000, 200_000, 60_000  # 0.05% density; a float32 score matrix is 1.6 GB
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(n_neurons * n_neurons, (links + links // 10,), generator=generator).unique()[:links]
    src, dst = positions // n_neurons, positions % n_neurons
    top_n_links(3, 3, torch.tensor([0, 1]), torch.tensor([1, 2]), 1)  # compile or load the kernels first
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS")
    chosen = top_n_links(n_neurons, n_neurons, src, dst, grow, generator=generator)
    print(json.dumps({"rise_bytes": (kib("VmHWM") - before) * 1024, "grown": chosen.src.numel(),
                      "positive": chosen.n_positive}))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory")
def test_peak_memory_does_not_scale_with_the_layer_area() -> None:
    """A 20,000 x 20,000 layer (4e8 candidates) is chosen from within a few tens of MB."""
    completed = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT], capture_output=True, text=True,
                               cwd=REPOSITORY, env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
                               timeout=600)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["grown"] == 60_000 and result["positive"] >= 60_000
    assert result["rise_bytes"] < 100 * 2**20, result  # the dense route would need 1.6 GB for scores alone
