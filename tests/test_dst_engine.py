"""The evolution engine with SET: removal/regrowth counts, weight semantics, percolation, schedules."""

import itertools

import pytest
import torch

from cht.dst import Evolution, EvolutionSchedule, MagnitudeRemoval, get_method, percolate
from cht.dst.removal import RemovalContext
from cht.init.topology import InitContext, erdos_renyi_mask
from cht.models import build_mlp
from cht.sparse import sparse_layers


def reference_set_removal(weight: torch.Tensor, mask: torch.Tensor, zeta: float) -> set[tuple[int, int]]:
    """Sort the negatives and the non-negatives by distance to zero; take ζ of each."""
    links = [(i, j) for i, j in itertools.product(range(weight.shape[0]), range(weight.shape[1])) if mask[i, j]]
    negatives = sorted((l for l in links if weight[l] < 0), key=lambda l: -weight[l].item())
    positives = sorted((l for l in links if weight[l] >= 0), key=lambda l: weight[l].item())
    return set(negatives[:round(zeta * len(negatives))]) | set(positives[:round(zeta * len(positives))])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("zeta", [0.0, 0.3, 1.0])
def test_set_removal_matches_reference(seed: int, zeta: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    model = build_mlp((1, 3, 4), num_classes=3, dim=2)
    layer = sparse_layers(model)[1]
    layer.set_mask(erdos_renyi_mask(24, 24, 100, InitContext(0, generator)).t())
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * layer.mask)
    removed = MagnitudeRemoval()(layer, zeta, RemovalContext(progress=0.0, generator=generator))
    expected = reference_set_removal(layer.weight.detach(), layer.mask, zeta)
    assert {tuple(x) for x in removed.nonzero().tolist()} == expected


def make_engine(method_name: str, seed: int = 0, dim: int = 1, density: float = 0.2):
    generator = torch.Generator().manual_seed(seed)
    model = build_mlp((1, 4, 5), num_classes=4, dim=dim)
    layers = sparse_layers(model)
    for layer in layers:
        n = round(density * layer.in_features * layer.out_features)
        layer.set_mask(erdos_renyi_mask(layer.in_features, layer.out_features, n, InitContext(0, generator)).t())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, layers, optimizer, Evolution(get_method(method_name), layers, optimizer, generator)


def train_a_little(model, optimizer, steps: int = 3) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 1, 4, 5)).pow(2).mean().backward()
        optimizer.step()
        for layer in sparse_layers(model):
            layer.apply_mask()


def test_set_update_keeps_link_counts_and_zero_initialises_new_links() -> None:
    model, layers, optimizer, evolution = make_engine("set")
    targets = [layer.n_links for layer in layers]
    for update in range(5):
        train_a_little(model, optimizer)
        before_masks = [layer.mask.clone() for layer in layers]
        before_weights = [layer.weight.detach().clone() for layer in layers]
        record = evolution.update(progress=update / 5, epoch=update + 1, step=update + 1)
        for layer, target, old_mask, old_weight, change in zip(layers, targets, before_masks, before_weights,
                                                                record.layers):
            assert layer.n_links == target == change.links
            assert change.removed == change.regrown == round(0.3 * (old_weight[old_mask] < 0).sum().item()) + \
                round(0.3 * (old_weight[old_mask] >= 0).sum().item())
            new_links = layer.mask & ~old_mask
            assert torch.all(layer.weight[new_links] == 0)
            survivors = layer.mask & old_mask
            assert torch.equal(layer.weight[survivors], old_weight[survivors])
            assert torch.all(layer.weight[~layer.mask] == 0)
            momentum = optimizer.state[layer.weight]["momentum_buffer"]
            assert torch.all(momentum[~layer.mask] == 0)


def test_same_seed_gives_identical_masks() -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model, layers, optimizer, evolution = make_engine("set", seed=7)
        train_a_little(model, optimizer)
        evolution.update(progress=0.5, epoch=1, step=1)
        runs.append([layer.mask.clone() for layer in layers])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def reference_percolation(adjacencies: list[torch.Tensor]) -> list[torch.Tensor]:
    """Repeat single-link-layer removals until nothing changes (the fixed point by brute force)."""
    result = [a.clone() for a in adjacencies]
    changed = True
    while changed:
        changed = False
        for index in range(len(result) - 1):
            hidden_in = result[index].any(dim=0)
            hidden_out = result[index + 1].any(dim=1)
            dead = ~(hidden_in & hidden_out)
            if result[index][:, dead].any() or result[index + 1][dead, :].any():
                result[index][:, dead] = False
                result[index + 1][dead, :] = False
                changed = True
    return result


def test_percolation_on_a_hand_made_chain() -> None:
    # inputs 0..2 → hidden A (3 neurons) → hidden B (3 neurons) → outputs (2)
    first = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    second = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool)
    third = torch.tensor([[1, 1], [0, 0], [0, 0]], dtype=torch.bool)
    out = percolate([first, second, third])
    # Hidden A1 has no outputs → its input link goes; hidden B2's input A2 has no inputs → B2 loses it;
    # B2 then has no outputs anyway.
    assert out[0].nonzero().tolist() == [[0, 0]]
    assert out[1].nonzero().tolist() == [[0, 0]]
    assert out[2].nonzero().tolist() == [[0, 0], [0, 1]]


@pytest.mark.parametrize("seed", range(20))
def test_percolation_reaches_the_fixed_point(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    sizes = [7, 9, 6, 8]
    density = [0.05, 0.15, 0.3][seed % 3]
    adjacencies = [torch.rand(a, b, generator=generator) < density for a, b in zip(sizes[:-1], sizes[1:])]
    result = percolate(adjacencies)
    assert all(torch.equal(a, b) for a, b in zip(result, reference_percolation(adjacencies)))
    assert all(torch.equal(a, b) for a, b in zip(percolate(result), result))


def test_percolation_rejects_layers_that_do_not_chain() -> None:
    with pytest.raises(ValueError, match="chain"):
        percolate([torch.ones(2, 3, dtype=torch.bool), torch.ones(4, 2, dtype=torch.bool)])


def test_schedule_update_points_and_cosine_fraction() -> None:
    schedule = EvolutionSchedule(interval=3, zeta=0.3, zeta_decay="cosine", end_fraction=0.75)
    assert [c for c in range(1, 21) if schedule.is_update(c, 20)] == [3, 6, 9, 12, 15]
    assert schedule.fraction(0.0) == pytest.approx(0.3)
    assert schedule.fraction(0.375) == pytest.approx(0.15)
    assert schedule.fraction(0.75) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="interval"):
        EvolutionSchedule(interval=0)


def test_static_and_fc_never_evolve() -> None:
    _, _, _, evolution = make_engine("static")
    assert not evolution.due(1, 10, 100, 1000, epoch_end=True)
    assert not get_method("fc").sparse
