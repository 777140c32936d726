"""Sparse layers on both storages against a dense reference; link sets; optimiser state; exact link counts."""

import math

import pytest
import torch

from cht.init.topology import InitContext, erdos_renyi_links
from cht.sparse import STORAGES, SparseLinear, after_optimizer_step, align_optimizer_state, link_counts
from cht.sparse import links as L


def random_links(n_in: int, n_out: int, n_links: int, generator: torch.Generator) -> torch.Tensor:
    return erdos_renyi_links(n_in, n_out, n_links, InitContext(0, generator))


def random_layer(n_in: int, n_out: int, density: float, seed: int, storage: str = "masked",
                 bias: bool = True) -> SparseLinear:
    generator = torch.Generator().manual_seed(seed)
    layer = SparseLinear(n_in, n_out, bias=bias, storage=storage)
    links = random_links(n_in, n_out, round(density * n_in * n_out), generator)
    layer.set_links(links, torch.randn(links.numel(), generator=generator))
    if bias:
        with torch.no_grad():
            layer.bias.copy_(torch.randn(n_out, generator=generator))
    return layer


def reference_mask(layer: SparseLinear) -> torch.Tensor:
    """Dense ``(out, in)`` mask built one link at a time."""
    mask = torch.zeros(layer.out_features, layer.in_features, dtype=torch.bool)
    for position in layer.links.tolist():
        mask[position // layer.in_features, position % layer.in_features] = True
    return mask


def state_at_links(layer: SparseLinear, optimizer: torch.optim.Optimizer, key: str) -> torch.Tensor:
    """An optimiser state tensor of the layer at its links, whatever the storage's layout."""
    value = optimizer.state[layer.parameter][key]
    return value.reshape(-1)[layer.links] if layer.storage == "masked" else value


def step(layer: SparseLinear, optimizer: torch.optim.Optimizer, inputs: torch.Tensor) -> None:
    optimizer.zero_grad()
    layer(inputs).pow(2).mean().backward()
    optimizer.step()
    after_optimizer_step([layer])


# ---------------------------------------------------------------------------------------------------
# The layer computes x (W ⊙ M)ᵀ + b on both storages


# (n_in, n_out, density): non-square, empty, full, and a layer with empty rows and isolated inputs.
LAYER_CASES = [(7, 5, 0.3), (5, 9, 0.5), (6, 4, 0.0), (4, 6, 1.0), (1, 1, 1.0), (12, 3, 0.05)]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("n_in,n_out,density", LAYER_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_a_dense_reference(storage: str, n_in: int, n_out: int, density: float,
                                                       bias: bool) -> None:
    layer = random_layer(n_in, n_out, density, seed=n_in * 31 + n_out, storage=storage, bias=bias)
    mask = reference_mask(layer)
    weight = torch.zeros(n_out, n_in)
    for position, value in zip(layer.links.tolist(), layer.link_values().tolist()):
        weight[position // n_in, position % n_in] = value
    weight.requires_grad_(True)
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(2, 3, n_in, generator=generator)  # leading dimensions are batch dimensions
    upstream = torch.randn(2, 3, n_out, generator=generator)

    x_layer = inputs.clone().requires_grad_(True)
    layer.capture_gradient(True)
    (layer(x_layer) * upstream).sum().backward()
    x_reference = inputs.clone().requires_grad_(True)
    output = x_reference @ weight.t() + (layer.bias.detach() if bias else 0)
    (output * upstream).sum().backward()

    assert torch.allclose(layer(inputs), output, atol=1e-5)
    assert torch.allclose(x_layer.grad, x_reference.grad, atol=1e-5)
    # The parameter's gradient lives at the links only; the dense gradient covers every position.
    assert torch.allclose(layer.dense_gradient(), weight.grad, atol=1e-5)
    link_grad = layer.parameter.grad.reshape(-1)[layer.links] if storage == "masked" else layer.parameter.grad
    assert torch.allclose(link_grad, weight.grad[mask], atol=1e-5)
    if storage == "masked":
        assert torch.all(layer.weight.grad[~mask] == 0)
    if bias:
        assert torch.allclose(layer.bias.grad, upstream.sum(dim=(0, 1)), atol=1e-5)
    assert torch.equal(layer.dense_weight(), weight.detach())
    assert torch.equal(layer.adjacency, mask.t())


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_weights_stay_on_links_and_both_storages_train_alike(storage: str, optimizer_name: str) -> None:
    def make(storage_: str):
        layer = random_layer(30, 20, 0.2, seed=1, storage=storage_)
        optimizer = (torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
                     if optimizer_name == "sgd" else torch.optim.Adam(layer.parameters(), lr=0.01))
        return layer, optimizer

    layer, optimizer = make(storage)
    reference, reference_optimizer = make("masked")
    links = layer.links.clone()
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        inputs = torch.randn(8, 30, generator=generator)
        step(layer, optimizer, inputs)
        step(reference, reference_optimizer, inputs)
        assert torch.equal(layer.links, links)
        assert torch.all(layer.dense_weight()[~reference_mask(layer)] == 0)
    assert torch.count_nonzero(layer.link_values()) > 0
    assert torch.allclose(layer.link_values(), reference.link_values(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("storage", STORAGES)
def test_dense_gradient_is_captured_only_when_asked(storage: str) -> None:
    layer = random_layer(10, 10, 0.3, seed=3, storage=storage)
    layer(torch.randn(5, 10)).sum().backward()
    with pytest.raises(RuntimeError, match="capture_gradient"):
        layer.dense_gradient()
    layer.capture_gradient(True)
    layer(torch.randn(5, 10)).sum().backward()
    assert torch.count_nonzero(layer.dense_gradient()[~reference_mask(layer)]) > 0
    layer.capture_gradient(False)
    with pytest.raises(RuntimeError, match="capture_gradient"):
        layer.dense_gradient()


# ---------------------------------------------------------------------------------------------------
# set_links: values and optimiser state follow the links


def replace_some_links(layer: SparseLinear, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ``n`` links and add ``n`` free positions; returns the new links and which of them are new."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones(layer.n_links, dtype=torch.bool)
    keep[torch.randperm(layer.n_links, generator=generator)[:n]] = False
    grown = L.random_free_positions(layer.shape, layer.links, n, generator)
    new_links = L.merge(layer.links[keep], grown)
    return new_links, ~L.contains(layer.links, new_links)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_set_links_carries_kept_values_and_state_and_zeroes_new_links(storage: str, optimizer_name: str) -> None:
    torch.manual_seed(0)
    layer = random_layer(16, 12, 0.5, seed=2, storage=storage)
    optimizer = (torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9) if optimizer_name == "sgd"
                 else torch.optim.Adam(layer.parameters(), lr=0.05))
    keys = ["momentum_buffer"] if optimizer_name == "sgd" else ["exp_avg", "exp_avg_sq"]
    for _ in range(3):
        step(layer, optimizer, torch.randn(4, 16))
    old_links, old_values = layer.links.clone(), layer.link_values().clone()
    old_state = {key: state_at_links(layer, optimizer, key).clone() for key in keys}
    new_links, is_new = replace_some_links(layer, 10, seed=4)

    layer.set_links(new_links, optimizer=optimizer)

    assert torch.equal(layer.links, new_links) and int(is_new.sum()) == 10
    old_slot = torch.searchsorted(old_links, new_links[~is_new])
    assert torch.equal(layer.link_values()[~is_new], old_values[old_slot])
    assert torch.all(layer.link_values()[is_new] == 0)
    for key in keys:
        state = state_at_links(layer, optimizer, key)
        assert torch.equal(state[~is_new], old_state[key][old_slot])
        assert torch.all(state[is_new] == 0)
        if storage == "masked":
            assert torch.all(optimizer.state[layer.weight][key][~reference_mask(layer)] == 0)
    # The optimiser steps the layer's current parameter, and a removed weight cannot come back.
    assert any(p is layer.parameter for group in optimizer.param_groups for p in group["params"])
    optimizer.zero_grad()
    layer(torch.randn(4, 16)).sum().backward()
    optimizer.step()
    assert torch.all(layer.dense_weight()[~reference_mask(layer)] == 0)
    assert torch.count_nonzero(layer.link_values()[is_new]) > 0


@pytest.mark.parametrize("storage", STORAGES)
def test_set_links_with_values_initialises_exactly_and_resets_state(storage: str) -> None:
    layer = random_layer(6, 5, 0.5, seed=0, storage=storage)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    step(layer, optimizer, torch.randn(3, 6))
    links = layer.links[::2].clone()
    values = torch.arange(1, links.numel() + 1, dtype=torch.float32)
    layer.set_links(links, values, optimizer=optimizer)
    assert torch.equal(layer.links, links) and torch.equal(layer.link_values(), values)
    assert torch.all(state_at_links(layer, optimizer, "momentum_buffer") == 0)


@pytest.mark.parametrize("storage", STORAGES)
def test_set_links_rejects_bad_link_sets(storage: str) -> None:
    layer = SparseLinear(4, 3, storage=storage)
    with pytest.raises(ValueError, match="sorted"):
        layer.set_links(torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="sorted"):
        layer.set_links(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="outside"):
        layer.set_links(torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="1-D"):
        layer.set_links(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="values"):
        layer.set_links(torch.tensor([0, 1]), torch.zeros(3))
    assert layer.n_links == 0


def test_layer_rejects_bad_sizes_and_storages() -> None:
    with pytest.raises(ValueError, match="positive sizes"):
        SparseLinear(0, 3)
    with pytest.raises(ValueError, match="storage"):
        SparseLinear(3, 3, storage="csr")
    with pytest.raises(ValueError, match="storage"):
        SparseLinear(3, 3).to_storage("dense")


# ---------------------------------------------------------------------------------------------------
# Switching storages and checkpoints across storages


@pytest.mark.parametrize("source,target", [("masked", "sparse"), ("sparse", "masked")])
def test_to_storage_carries_weights_state_and_training(source: str, target: str) -> None:
    layer = random_layer(9, 7, 0.4, seed=6, storage=source)
    twin = random_layer(9, 7, 0.4, seed=6, storage=source)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 9, generator=generator) for _ in range(6)]
    for inputs in batches[:3]:
        step(layer, optimizer, inputs)
        step(twin, twin_optimizer, inputs)
    values, state = layer.link_values().clone(), state_at_links(layer, optimizer, "exp_avg").clone()

    layer.to_storage(target, optimizer)

    assert layer.storage == target and torch.equal(layer.link_values(), values)
    assert torch.equal(state_at_links(layer, optimizer, "exp_avg"), state)
    for inputs in batches[3:]:
        step(layer, optimizer, inputs)
        step(twin, twin_optimizer, inputs)
    assert torch.allclose(layer.link_values(), twin.link_values(), atol=1e-5)


@pytest.mark.parametrize("source,target", [("masked", "sparse"), ("sparse", "masked"), ("sparse", "sparse")])
def test_a_checkpoint_of_one_storage_loads_into_the_other(source: str, target: str) -> None:
    saved = random_layer(8, 6, 0.3, seed=7, storage=source)
    loaded = random_layer(8, 6, 0.6, seed=8, storage=target)  # another link count: the checkpoint decides
    loaded.load_state_dict(saved.state_dict())
    assert torch.equal(loaded.links, saved.links) and torch.equal(loaded.link_values(), saved.link_values())
    assert torch.equal(loaded.bias, saved.bias)
    inputs = torch.randn(3, 8)
    assert torch.allclose(loaded(inputs), saved(inputs), atol=1e-6)


def test_align_optimizer_state_reshapes_state_of_the_other_storage() -> None:
    layer = random_layer(6, 5, 0.5, seed=9, storage="masked")
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    step(layer, optimizer, torch.randn(3, 6))
    momentum = state_at_links(layer, optimizer, "momentum_buffer").clone()
    saved = optimizer.state_dict()
    resumed = random_layer(6, 5, 0.5, seed=9, storage="sparse")
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    resumed_optimizer.load_state_dict(saved)
    align_optimizer_state(resumed_optimizer, [resumed])
    assert torch.equal(state_at_links(resumed, resumed_optimizer, "momentum_buffer"), momentum)


# ---------------------------------------------------------------------------------------------------
# Link sets (cht.sparse.links) against set arithmetic


@pytest.mark.parametrize("seed", range(3))
def test_link_set_helpers_match_set_arithmetic(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shape = (5, 7)
    mask = torch.rand(shape, generator=generator) < 0.4
    mask[2] = False  # an empty row
    mask[:, 3] = False  # an isolated input
    index = L.from_mask(mask)
    expected = sorted(o * 7 + i for o in range(5) for i in range(7) if mask[o, i])
    assert index.tolist() == expected and torch.equal(L.to_mask(index, shape), mask)
    rows, cols = L.rows_cols(index, 7)
    assert list(zip(rows.tolist(), cols.tolist())) == [(p // 7, p % 7) for p in expected]
    probes = torch.arange(35)
    assert L.contains(index, probes).tolist() == [p in set(expected) for p in range(35)]
    assert not L.contains(torch.empty(0, dtype=torch.int64), probes).any()
    out_degree, in_degree = L.degrees(index, shape)
    assert torch.equal(out_degree, mask.sum(dim=1)) and torch.equal(in_degree, mask.sum(dim=0))
    other = L.from_mask(~mask)
    assert torch.equal(L.merge(index, other), probes)
    L.check_links(index, shape)


def reference_free(shape, occupied: set[int], rows, cols) -> set[int]:
    return {o * shape[1] + i for o in rows for i in cols} - occupied


@pytest.mark.parametrize("dense_draw", [True, False])
@pytest.mark.parametrize("restricted", [False, True])
def test_random_free_positions_are_uniform_among_free_positions(dense_draw: bool, restricted: bool,
                                                                monkeypatch) -> None:
    if not dense_draw:  # small grids take the rejection path too
        monkeypatch.setattr(L, "DENSE_POSITIONS", 0)
    shape = (4, 5)
    occupied = torch.tensor([0, 6, 7, 13, 19])
    rows, cols = (torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2, 4])) if restricted else (None, None)
    free = reference_free(shape, set(occupied.tolist()), rows.tolist() if restricted else range(4),
                          cols.tolist() if restricted else range(5))
    assert L.count_free(shape, occupied, rows, cols) == len(free)
    generator = torch.Generator().manual_seed(0)
    draws, n = 1500, 3
    counts = torch.zeros(20)
    for _ in range(draws):
        chosen = L.random_free_positions(shape, occupied, n, generator, rows=rows, cols=cols)
        assert chosen.numel() == n and set(chosen.tolist()) <= free
        L.check_links(chosen, shape)
        counts[chosen] += 1
    expected = n / len(free)
    share = counts[sorted(free)] / draws
    assert torch.all((share - expected).abs() < 4 * math.sqrt(expected * (1 - expected) / draws))
    # All free positions, and none.
    everything = L.random_free_positions(shape, occupied, len(free), generator, rows=rows, cols=cols)
    assert set(everything.tolist()) == free
    assert L.random_free_positions(shape, occupied, 0, generator).numel() == 0
    with pytest.raises(ValueError, match="free positions"):
        L.random_free_positions(shape, occupied, len(free) + 1, generator, rows=rows, cols=cols)


# ---------------------------------------------------------------------------------------------------
# Link counts


@pytest.mark.parametrize("shapes", [[(784, 784)] * 3, [(784, 1568), (1568, 1568), (1568, 1568)],
                                    [(3, 1000), (1000, 7)], [(1, 1)]])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_uniform_link_counts_are_exact(shapes, density) -> None:
    counts = link_counts(shapes, density, "uniform")
    assert counts == [round(density * a * b) for a, b in shapes]


@pytest.mark.parametrize("density", [0.0, 0.01, 0.1, 0.5, 0.9, 1.0])
def test_erk_counts_hit_the_budget_and_respect_capacity(density) -> None:
    shapes = [(3, 1000), (1000, 500), (500, 7)]
    counts = link_counts(shapes, density, "erk")
    assert sum(counts) == round(density * sum(a * b for a, b in shapes))
    assert all(0 <= c <= a * b for c, (a, b) in zip(counts, shapes))
    if 0 < density < 0.05:
        # Thin layers get a higher density than wide ones.
        densities = [c / (a * b) for c, (a, b) in zip(counts, shapes)]
        assert densities[0] > densities[1] and densities[2] > densities[1]


def test_link_counts_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="density"):
        link_counts([(2, 2)], 1.5)
    with pytest.raises(ValueError, match="distribution"):
        link_counts([(2, 2)], 0.5, "lognormal")


@pytest.mark.parametrize("n_in,n_out,n_links", [(50, 70, 123), (70, 50, 0), (6, 5, 30)])
def test_erdos_renyi_links_have_exact_count_and_are_reproducible(n_in: int, n_out: int, n_links: int) -> None:
    make = lambda seed: random_links(n_in, n_out, n_links, torch.Generator().manual_seed(seed))
    links = make(0)
    assert links.numel() == n_links
    L.check_links(links, (n_out, n_in))
    assert torch.equal(links, make(0))
    if 0 < n_links < n_in * n_out:
        assert not torch.equal(links, make(1))


@pytest.mark.parametrize("shape, density", [((5, 8), 0.3), ((8, 5), 0.0), ((3, 4), 1.0), ((1, 7), 0.5)])
def test_adjacency_helpers_name_the_two_orientations(shape, density) -> None:
    """Weights are ``(out, in)``, adjacencies ``(in, out)``: entry ``[i, j]`` links input ``i`` to output ``j``."""
    n_out, n_in = shape
    generator = torch.Generator().manual_seed(n_out * 10 + n_in)
    index = torch.randperm(n_out * n_in, generator=generator)[:round(density * n_out * n_in)].sort().values
    adjacency = L.to_adjacency(index, shape)
    assert adjacency.shape == (n_in, n_out)
    linked = {int(p) for p in index}
    for i in range(n_in):
        for j in range(n_out):
            assert bool(adjacency[i, j]) == (j * n_in + i in linked)
    assert torch.equal(L.from_adjacency(adjacency), index)
