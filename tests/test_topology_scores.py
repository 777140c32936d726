"""CH L3 link scores against slow, obvious path enumerations on fresh random layers."""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

from cht.topology import available_rules, count_l3_paths, link_scores
from cht.topology import graph, numba_kernels, torch_kernels

PATH_RULES = ("CH3-L3", "CH2-L3", "CH1-L3", "RA-L3")
NODE_RULES = ("CH3-L3n", "CH2-L3n")
SCORERS = ["torch"] + (["numba"] if numba_kernels.AVAILABLE else [])
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------- slow references (plain Python loops)

def _neighbourhoods(mask: torch.Tensor) -> tuple[list[set[int]], list[set[int]]]:
    rows = mask.tolist()
    outputs_of = [{j for j, linked in enumerate(row) if linked} for row in rows]
    inputs_of = [{i for i, row in enumerate(rows) if row[j]} for j in range(mask.shape[1])]
    return outputs_of, inputs_of


def _path_term(rule: str, d_u: int, c_u: int, d_k: int, c_k: int) -> float:
    e_u, e_k = d_u - c_u - 1, d_k - c_k - 1
    if rule == "RA-L3":
        return 1 / math.sqrt(d_u * d_k)
    if rule == "CH1-L3":
        return math.sqrt(c_u * c_k) / math.sqrt(d_u * d_k)
    if rule == "CH2-L3":
        return math.sqrt((1 + c_u) * (1 + c_k)) / math.sqrt((1 + e_u) * (1 + e_k))
    return 1 / math.sqrt((1 + e_u) * (1 + e_k))


def reference_path_scores(mask: torch.Tensor, rule: str) -> torch.Tensor:
    """Sum over every path i - u - k - j of the per-path term, internal = common neighbours."""
    outputs_of, inputs_of = _neighbourhoods(mask)
    n_in, n_out = mask.shape
    scores = torch.zeros(n_in, n_out, dtype=torch.float64)
    for i in range(n_in):
        for j in range(n_out):
            if j in outputs_of[i]:
                continue
            total = 0.0
            for u in outputs_of[i]:
                for k in inputs_of[u]:
                    if j in outputs_of[k]:
                        c_u = len(inputs_of[u] & inputs_of[j])
                        c_k = len(outputs_of[k] & outputs_of[i])
                        total += _path_term(rule, len(inputs_of[u]), c_u, len(outputs_of[k]), c_k)
            scores[i, j] = total
    return scores


def reference_node_scores(mask: torch.Tensor, rule: str) -> torch.Tensor:
    """Each community node once: inputs k of j sharing an output with i, outputs u of i sharing an input with j."""
    outputs_of, inputs_of = _neighbourhoods(mask)
    n_in, n_out = mask.shape

    def weight(degree: int, common: int) -> float:
        external = degree - common - 1
        return (1 + common) / (1 + external) if rule == "CH2-L3n" else 1 / (1 + external)

    scores = torch.zeros(n_in, n_out, dtype=torch.float64)
    for i in range(n_in):
        for j in range(n_out):
            if j in outputs_of[i]:
                continue
            total = 0.0
            for k in inputs_of[j]:
                common = len(outputs_of[k] & outputs_of[i])
                if common > 0:
                    total += weight(len(outputs_of[k]), common)
            for u in outputs_of[i]:
                common = len(inputs_of[u] & inputs_of[j])
                if common > 0:
                    total += weight(len(inputs_of[u]), common)
            scores[i, j] = total
    return scores


def reference(mask: torch.Tensor, rule: str) -> torch.Tensor:
    return reference_node_scores(mask, rule) if rule in NODE_RULES else reference_path_scores(mask, rule)


def reference_path_count(mask: torch.Tensor) -> int:
    outputs_of, inputs_of = _neighbourhoods(mask)
    return sum(
        1
        for i in range(mask.shape[0])
        for u in outputs_of[i]
        for k in inputs_of[u] - {i}
        for j in outputs_of[k] - {u}
    )


# ---------------------------------------------------------------- layers

def random_layer(shape: tuple[int, int], density: float, seed: int, isolate: bool = True) -> torch.Tensor:
    """Erdős–Rényi mask; with ``isolate`` a few inputs and outputs lose all their links."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < density
    if isolate and min(shape) > 2:
        mask[torch.randperm(shape[0], generator=generator)[: shape[0] // 5]] = False
        mask[:, torch.randperm(shape[1], generator=generator)[: shape[1] // 5]] = False
    return mask


RANDOM_CASES = [
    ((12, 12), 0.5),
    ((23, 17), 0.3),
    ((17, 31), 0.2),
    ((40, 9), 0.5),
    ((9, 40), 0.15),
    ((60, 45), 0.05),
    ((150, 120), 0.01),
    ((1, 30), 0.5),
    ((30, 1), 0.5),
    ((3, 80), 0.4),
]

SPECIAL_LAYERS = {
    "empty": torch.zeros(7, 9, dtype=torch.bool),
    "full": torch.ones(6, 8, dtype=torch.bool),
    "full but one": torch.ones(6, 5, dtype=torch.bool).index_put_((torch.tensor([2]), torch.tensor([3])),
                                                                   torch.tensor(False)),
    "matching": torch.eye(6, dtype=torch.bool),
    "star": torch.zeros(5, 7, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True),
    "single row": torch.tensor([[True, False, True, False]]),
    "single column": torch.tensor([[True], [False], [True]]),
    "one by one": torch.ones(1, 1, dtype=torch.bool),
    "no inputs": torch.zeros(0, 4, dtype=torch.bool),
    "no outputs": torch.zeros(4, 0, dtype=torch.bool),
}


def assert_exact(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.float64 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=0)


# ---------------------------------------------------------------- exactness

@lru_cache(maxsize=None)
def random_case(case: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh random layer per (case, rule) and its reference scores, shared by the scorers."""
    shape, density = RANDOM_CASES[case]
    mask = random_layer(shape, density, seed=100 * case + (PATH_RULES + NODE_RULES).index(rule))
    return mask, reference(mask, rule)


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
@pytest.mark.parametrize("case", range(len(RANDOM_CASES)))
def test_float64_scores_match_slow_reference_on_random_layers(case: int, rule: str, scorer: str) -> None:
    mask, expected = random_case(case, rule)
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer=scorer), expected)


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
@pytest.mark.parametrize("name", list(SPECIAL_LAYERS))
def test_special_layers_match_slow_reference(name: str, rule: str, scorer: str) -> None:
    mask = SPECIAL_LAYERS[name]
    got = link_scores(mask, rule, dtype=torch.float64, scorer=scorer)
    assert_exact(got, reference(mask, rule))


@pytest.mark.parametrize("chunk_paths", [1, 37, 10**9])
@pytest.mark.parametrize("rule", ["CH3-L3", "CH3-L3n"])
def test_torch_chunking_does_not_change_scores(chunk_paths: int, rule: str) -> None:
    mask = random_layer((45, 38), 0.15, seed=chunk_paths)
    got = link_scores(mask, rule, dtype=torch.float64, scorer="torch", chunk_paths=chunk_paths)
    assert_exact(got, reference(mask, rule))


@pytest.mark.parametrize("scorer", SCORERS)
def test_default_float32_scores_are_close_and_zero_on_links(scorer: str) -> None:
    mask = random_layer((70, 90), 0.08, seed=7)
    got = link_scores(mask, scorer=scorer)
    assert got.dtype == torch.float32 and got.device == mask.device
    assert bool((got[mask] == 0).all())
    torch.testing.assert_close(got.double(), reference(mask, "CH3-L3"), rtol=1e-5, atol=0)


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("rule", ["CH3-L3", "CH2-L3n"])
def test_transposed_view_scores_are_the_transposed_scores(rule: str, scorer: str) -> None:
    mask = random_layer((26, 41), 0.15, seed=17)
    transposed = link_scores(mask.T, rule, dtype=torch.float64, scorer=scorer)
    assert transposed.shape == (41, 26)
    assert_exact(transposed, reference(mask, rule).T.contiguous())


def test_int64_indices_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = random_layer((30, 22), 0.2, seed=13)
    expected = reference(mask, "CH3-L3")
    monkeypatch.setattr(graph, "INT32_POSITIONS", 0)  # as for layers past 2**31 positions
    assert graph.Bipartite.from_mask(mask).index_dtype == torch.int64
    assert_exact(link_scores(mask, "CH3-L3", dtype=torch.float64, scorer="torch"), expected)


@pytest.mark.parametrize("scorer", SCORERS)
@pytest.mark.parametrize("layout", ["sliced", "transposed copy", "wide"])
def test_any_memory_layout_gives_the_same_scores(layout: str, scorer: str) -> None:
    """Masks are read in their memory order (rows or columns first); strided views are copied."""
    mask = random_layer((34, 27), 0.15, seed=19)
    if layout == "sliced":
        mask = random_layer((68, 27), 0.15, seed=19)[::2]
    elif layout == "transposed copy":
        mask = mask.T.contiguous().T
    else:
        mask = mask.T
    got = link_scores(mask, "CH3-L3", dtype=torch.float64, scorer=scorer)
    assert got.shape == mask.shape
    assert_exact(got, reference(mask.contiguous(), "CH3-L3"))


@pytest.mark.skipif(not numba_kernels.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
def test_numba_and_torch_scorers_agree_on_a_larger_layer(rule: str) -> None:
    mask = random_layer((200, 170), 0.04, seed=11)
    numba_scores = link_scores(mask, rule, dtype=torch.float64, scorer="numba")
    torch_scores = link_scores(mask, rule, dtype=torch.float64, scorer="torch", chunk_paths=5000)
    torch.testing.assert_close(numba_scores, torch_scores, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rule", NODE_RULES)
@pytest.mark.parametrize("case", range(len(RANDOM_CASES)))
def test_dense_products_match_slow_reference_for_node_rules(case: int, rule: str) -> None:
    mask, expected = random_case(case, rule)
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="matmul"), expected)


@pytest.mark.parametrize("rule", NODE_RULES)
@pytest.mark.parametrize("name", list(SPECIAL_LAYERS))
def test_dense_products_match_slow_reference_on_special_layers(name: str, rule: str) -> None:
    mask = SPECIAL_LAYERS[name]
    assert_exact(link_scores(mask, rule, dtype=torch.float64, scorer="matmul"), reference(mask, rule))


def test_float32_dense_products_are_close_to_the_reference() -> None:
    mask = random_layer((50, 64), 0.45, seed=29, isolate=False)
    got = link_scores(mask, "CH3-L3n", scorer="matmul")
    assert got.dtype == torch.float32 and bool((got[mask] == 0).all())
    torch.testing.assert_close(got.double(), reference(mask, "CH3-L3n"), rtol=1e-5, atol=0)


def test_auto_scores_node_rules_of_dense_layers_by_dense_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """GraNet and CHTss start at 50% density, where walking the paths costs thousands of times more."""
    calls = []
    dense_node_scores = torch_kernels.dense_node_scores
    monkeypatch.setattr(torch_kernels, "dense_node_scores",
                        lambda *args: calls.append(args) or dense_node_scores(*args))
    dense = random_layer((60, 52), 0.5, seed=23, isolate=False)
    assert_exact(link_scores(dense, "CH2-L3n", dtype=torch.float64), reference(dense, "CH2-L3n"))
    assert len(calls) == 1
    link_scores(random_layer((400, 300), 0.01, seed=24), "CH2-L3n")
    link_scores(dense, "CH3-L3")  # path rules always walk their paths
    assert len(calls) == 1


def test_matmul_scorer_refuses_path_rules() -> None:
    with pytest.raises(ValueError, match="node-based"):
        link_scores(torch.ones(3, 4, dtype=torch.bool), "CH3-L3", scorer="matmul")


@pytest.mark.parametrize("shape, density", [((13, 17), 0.3), ((40, 9), 0.5), ((6, 6), 0.0)])
def test_dense_product_work_counts_every_walk(shape: tuple[int, int], density: float) -> None:
    mask = random_layer(shape, density, seed=5, isolate=False)
    outputs_of, inputs_of = _neighbourhoods(mask)
    walks = sum(len(outputs_of[k]) for i in range(shape[0]) for u in outputs_of[i] for k in inputs_of[u])
    multiply_adds, counted = torch_kernels.dense_product_work(mask)
    assert counted == walks and multiply_adds == 2 * shape[0] * shape[1] * sum(shape)


@pytest.mark.parametrize("shape, density", [((13, 17), 0.3), ((40, 9), 0.5), ((1, 5), 1.0), ((6, 6), 0.0)])
def test_count_l3_paths_matches_enumeration(shape: tuple[int, int], density: float) -> None:
    mask = random_layer(shape, density, seed=3, isolate=False)
    assert count_l3_paths(mask) == reference_path_count(mask)


# ---------------------------------------------------------------- scorer selection and errors

def test_auto_scorer_falls_back_to_torch_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = random_layer((20, 25), 0.2, seed=5)
    expected = link_scores(mask, dtype=torch.float64, scorer="torch")

    def unavailable(*args: object) -> None:
        raise AssertionError("numba kernels must not run when numba is unavailable")

    monkeypatch.setattr(numba_kernels, "AVAILABLE", False)
    monkeypatch.setattr(numba_kernels, "link_scores", unavailable)
    assert_exact(link_scores(mask, dtype=torch.float64), expected)
    with pytest.raises(ValueError, match="numba"):
        link_scores(mask, scorer="numba")


def test_available_rules_lists_every_rule() -> None:
    assert set(available_rules()) == set(PATH_RULES + NODE_RULES)


def test_unknown_rule_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        link_scores(torch.zeros(3, 3, dtype=torch.bool), "CH4-L3")
    assert all(rule in str(error.value) for rule in available_rules())


@pytest.mark.parametrize(
    "mask, kwargs, message",
    [
        (torch.zeros(3, 3), {}, "bool"),
        (torch.zeros(3, 3, 3, dtype=torch.bool), {}, "2-D"),
        (torch.zeros(3, 3, dtype=torch.bool), {"dtype": torch.int64}, "dtype"),
        (torch.zeros(3, 3, dtype=torch.bool), {"scorer": "fortran"}, "scorer"),
        (torch.zeros(3, 3, dtype=torch.bool), {"chunk_paths": 0}, "chunk_paths"),
    ],
)
def test_bad_arguments_raise_clear_errors(mask: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        link_scores(mask, **kwargs)


# ---------------------------------------------------------------- CUDA (runs where a GPU is present)

@CUDA
@pytest.mark.parametrize("rule", PATH_RULES + NODE_RULES)
def test_cuda_scores_match_slow_reference(rule: str) -> None:
    mask = random_layer((64, 48), 0.12, seed=21)
    got = link_scores(mask.cuda(), rule, dtype=torch.float64)
    assert got.device.type == "cuda"
    assert_exact(got.cpu(), reference(mask, rule))
    with pytest.raises(ValueError, match="CPU"):
        link_scores(mask.cuda(), rule, scorer="numba")


@CUDA
@pytest.mark.parametrize("rule", NODE_RULES)
def test_cuda_dense_products_match_slow_reference(rule: str) -> None:
    mask = random_layer((40, 36), 0.5, seed=22, isolate=False)
    got = link_scores(mask.cuda(), rule, dtype=torch.float64, scorer="matmul")
    assert got.device.type == "cuda"
    assert_exact(got.cpu(), reference(mask, rule))
