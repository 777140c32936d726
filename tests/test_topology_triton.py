"""Triton link-prediction kernels against the slow path enumerations.

Without a GPU the kernels run in Triton's CPU interpreter, on tiny layers because it is slow. Triton
reads ``TRITON_INTERPRET=1`` only when it is imported, so the ``interpreted`` tests run in-process
under ``TRITON_INTERPRET=1 pytest tests/test_topology_triton.py`` and otherwise through
:func:`test_interpreted_tests_pass_in_a_fresh_process`. The interpreter runs programs one after
another, so it cannot reveal races between programs: the kernels avoid them by giving each program
its own output row. Where a GPU is present the compiled kernels are checked as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from test_topology_scores import (
    NODE_RULES,
    PATH_RULES,
    RANDOM_CASES,
    SPECIAL_LAYERS,
    assert_exact,
    random_case,
    random_layer,
    reference,
)

from cht.topology import graph, link_scores, triton_kernels
from cht.topology import scores as dispatch

CUDA = pytest.mark.skipif(
    not (torch.cuda.is_available() and triton_kernels.AVAILABLE), reason="needs a CUDA device and triton"
)
INTERPRETED = pytest.mark.skipif(
    not triton_kernels.INTERPRETED,
    reason="needs TRITON_INTERPRET=1 before triton is imported; "
    "test_interpreted_tests_pass_in_a_fresh_process runs them that way",
)
# Interpreter cases: the random layers of the main suite small enough for the interpreter.
SMALL_CASES = [case for case, (shape, _) in enumerate(RANDOM_CASES) if shape[0] * shape[1] <= 2500]


# ---------------------------------------------------------------- interpreter (CPU)

@INTERPRETED
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
@pytest.mark.parametrize("case", SMALL_CASES)
def test_interpreted_float64_scores_match_slow_reference(case: int, rule: str) -> None:
    mask, expected = random_case(case, rule)
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="triton"), expected)


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
@pytest.mark.parametrize("name", list(SPECIAL_LAYERS))
def test_interpreted_special_layers_match_slow_reference(name: str, rule: str) -> None:
    mask = SPECIAL_LAYERS[name]
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="triton"), reference(mask, rule))


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH3-L3n"])
def test_interpreted_float32_scores_are_close_and_zero_on_links(rule: str) -> None:
    mask = random_layer((36, 28), 0.15, seed=31)
    got = link_scores(mask, rule, scorer="triton")
    assert got.dtype == torch.float32 and got.device == mask.device
    assert bool((got[mask] == 0).all())
    torch.testing.assert_close(got.double(), reference(mask, rule), rtol=1e-5, atol=0)


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
def test_interpreted_transposed_view_scores_are_the_transposed_scores(rule: str) -> None:
    mask = random_layer((19, 33), 0.2, seed=17)
    transposed = link_scores(mask.T, rule, dtype=torch.float64, scorer="triton")
    assert_exact(transposed, reference(mask, rule).T.contiguous())


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH3-L3n"])
def test_interpreted_narrow_tiles_give_the_same_scores(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs wider than a tile are walked in several tiles of BLOCK_K wedges."""
    mask = random_layer((20, 16), 0.3, seed=23, isolate=False)
    monkeypatch.setattr(triton_kernels, "TILE_PATHS", 1)
    assert triton_kernels.launch_sizes(graph.Bipartite.from_mask(mask))["BLOCK_K"] == triton_kernels.MIN_BLOCK_K
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="triton"), reference(mask, rule))


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
def test_interpreted_wide_inputs_are_walked_in_chunks(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs wider than BLOCK_D (hubs) take the one-by-one walk, here in several chunks each."""
    mask = random_layer((30, 24), 0.1, seed=29, isolate=False)
    mask[[3, 17]] = True  # two hub inputs, linked to every output
    mask[:, 5] = False  # and an isolated output
    monkeypatch.setattr(triton_kernels, "MIN_BLOCK_D", 8)
    monkeypatch.setattr(triton_kernels, "MAX_BLOCK_D", 8)
    monkeypatch.setattr(triton_kernels, "TILE_PATHS", 16)
    sizes = triton_kernels.launch_sizes(graph.Bipartite.from_mask(mask))
    assert sizes["BLOCK_K"] * sizes["BLOCK_D"] < 23  # a hub's outputs span two chunks
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="triton"), reference(mask, rule))


@INTERPRETED
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
def test_interpreted_int64_indices_give_the_same_scores(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = random_layer((26, 21), 0.2, seed=13)
    expected = reference(mask, rule)
    monkeypatch.setattr(graph, "INT32_POSITIONS", 0)  # as for layers past 2**31 positions
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="triton"), expected)


@pytest.mark.skipif(not triton_kernels.AVAILABLE, reason="triton is not installed")
@pytest.mark.skipif(triton_kernels.INTERPRETED, reason="the interpreted tests run in this process")
def test_interpreted_tests_pass_in_a_fresh_process() -> None:
    """Runs this file's ``interpreted`` tests under TRITON_INTERPRET=1, set before triton's import."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
               "-k", "test_interpreted_ and not fresh_process"]
    run = subprocess.run(command, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True,
                         timeout=900)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary


# ---------------------------------------------------------------- launch sizes

def test_launch_sizes_leave_rare_hub_inputs_to_the_chunked_walk() -> None:
    mask = random_layer((3000, 1000), 0.01, seed=37, isolate=False)
    mask[5] = True  # one input linked to every output
    sizes = triton_kernels.launch_sizes(graph.Bipartite.from_mask(mask))
    assert sizes["BLOCK_D"] <= 32 and sizes["BLOCK_K"] * sizes["BLOCK_D"] <= triton_kernels.TILE_PATHS
    assert sizes["num_warps"] == triton_kernels.MIN_WARPS


def test_launch_sizes_cover_nearly_every_input_of_a_random_layer() -> None:
    mask = random_layer((3072, 3072), 0.01, seed=43, isolate=False)
    in_degree = graph.Bipartite.from_mask(mask).in_degree
    sizes = triton_kernels.launch_sizes(graph.Bipartite.from_mask(mask))
    assert in_degree.double().quantile(0.99) <= sizes["BLOCK_D"] < 2 * int(in_degree.max())
    assert sizes["BLOCK_K"] * sizes["BLOCK_D"] == triton_kernels.TILE_PATHS


# ---------------------------------------------------------------- scorer selection

def test_triton_scorer_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_kernels, "AVAILABLE", True)
    monkeypatch.setattr(triton_kernels, "INTERPRETED", False)
    with pytest.raises(ValueError, match="CUDA.*TRITON_INTERPRET"):
        link_scores(torch.zeros(4, 4, dtype=torch.bool), scorer="triton")


def test_triton_scorer_without_triton_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_kernels, "AVAILABLE", False)
    with pytest.raises(ValueError, match="triton package"):
        link_scores(torch.zeros(4, 4, dtype=torch.bool), scorer="triton")


@pytest.mark.parametrize(
    "available, capability, expected",
    [(True, (9, 0), "triton"), (True, (8, 0), "triton"), (True, (7, 5), "torch"), (False, (9, 0), "torch")],
)
def test_auto_scorer_on_cuda_prefers_triton_where_supported(
    available: bool, capability: tuple[int, int], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triton_kernels, "AVAILABLE", available)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert dispatch._resolve_scorer("auto", torch.device("cuda")) == expected


# ---------------------------------------------------------------- compiled kernels (GPU)

@CUDA
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
@pytest.mark.parametrize("case", range(len(RANDOM_CASES)))
def test_cuda_float64_scores_match_slow_reference(case: int, rule: str) -> None:
    mask, expected = random_case(case, rule)
    got = link_scores(mask.cuda(), rule, dtype=torch.float64, scorer="triton")
    assert got.device.type == "cuda"
    assert_exact(got.cpu(), expected)


@CUDA
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
@pytest.mark.parametrize("name", list(SPECIAL_LAYERS))
def test_cuda_special_layers_match_slow_reference(name: str, rule: str) -> None:
    mask = SPECIAL_LAYERS[name]
    got = link_scores(mask.cuda(), rule, dtype=torch.float64, scorer="triton")
    assert_exact(got.cpu(), reference(mask, rule))


@CUDA
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
def test_cuda_triton_and_torch_scorers_agree_on_a_larger_layer(rule: str, dtype: torch.dtype, rtol: float) -> None:
    mask = random_layer((700, 520), 0.03, seed=41).cuda()
    triton_scores = link_scores(mask, rule, dtype=dtype, scorer="triton")
    torch_scores = link_scores(mask, rule, dtype=torch.float64, scorer="torch")
    torch.testing.assert_close(triton_scores.double(), torch_scores, rtol=rtol, atol=0)


@CUDA
@pytest.mark.parametrize("rule", ["CH3-L3", "CH1-L3", "CH3-L3n", "CH2-L3n"])
def test_cuda_hub_inputs_match_the_torch_scorer(rule: str) -> None:
    """Hubs far wider than the typical input take the chunked walk (see launch_sizes)."""
    mask = random_layer((3000, 1000), 0.01, seed=47, isolate=False)
    mask[[5, 77, 1500]] = True
    mask = mask.cuda()
    assert triton_kernels.launch_sizes(graph.Bipartite.from_mask(mask))["BLOCK_D"] < 1000
    torch.testing.assert_close(link_scores(mask, rule, dtype=torch.float64, scorer="triton"),
                               link_scores(mask, rule, dtype=torch.float64, scorer="torch"), rtol=1e-9, atol=0)

