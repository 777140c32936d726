"""The evolution engine: link counts, weight and optimiser-state semantics, percolation, early stop.

Every registered method runs on a tiny MLP (20 inputs, hidden width 40) for several updates.
"""

import itertools
from dataclasses import dataclass, field

import pytest
import torch

from cht.dst import (EarlyStop, Evolution, EvolutionSchedule, MagnitudeRemoval, Method, RegrowthContext,
                     SigmoidDensity, available_methods, get_method, percolate)
from cht.dst.removal import RemovalContext
from cht.init import init_topology, init_weights
from cht.init.selection import random_links
from cht.init.topology import InitContext, erdos_renyi_mask
from cht.models import build_mlp
from cht.sparse import apply_masks, link_counts, sparse_layers

INPUT_SHAPE = (1, 4, 5)


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


# ---------------------------------------------------------------------------------------------------
# Every registered method


def build_for_method(method: Method, seed: int = 0, density: float = 0.1, optimizer_name: str = "sgd"):
    """Initialise a tiny MLP as the training loop does: method's inits at its initial density."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, *INPUT_SHAPE, generator=generator)
    model = build_mlp(INPUT_SHAPE, num_classes=4, dim=2, sparse=method.sparse)
    layers = sparse_layers(model)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    for index, (layer, n_links) in enumerate(zip(layers, link_counts(shapes, method.initial_density(density)))):
        context = InitContext(index, generator, {"train_inputs": inputs})
        layer.set_mask(init_topology(method.topology_init, *shapes[index], n_links, context).t())
        init_weights(method.weight_init, layer.weight.data, layer.mask, generator)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer_name == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=0.01))
    evolution = Evolution(method, layers, optimizer, torch.Generator().manual_seed(seed + 1),
                          final_links=link_counts(shapes, density))
    return model, layers, optimizer, evolution, inputs


def train_steps(model, optimizer, evolution: Evolution, inputs: torch.Tensor, steps: int = 2) -> None:
    """A few optimiser steps; the last one keeps dense gradients, as before a real update."""
    for step in range(steps):
        evolution.capture_gradients(step == steps - 1)
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        optimizer.step()
        apply_masks(evolution.layers)


EVOLVING = [name for name in available_methods() if get_method(name).evolves]
EXACT_COUNT_METHODS = [name for name in EVOLVING if name != "cht_iclr"]


def test_registry_holds_the_required_methods() -> None:
    assert set(available_methods()) >= {"fc", "static", "set", "rigl", "mest", "granet", "cht", "cht_iclr",
                                        "chts", "chtss"}


@pytest.mark.parametrize("name", EXACT_COUNT_METHODS)
def test_link_counts_follow_the_schedule_exactly_at_every_update(name: str) -> None:
    method = get_method(name)
    model, layers, optimizer, evolution, inputs = build_for_method(method)
    updates = 8
    for update in range(1, updates + 1):
        train_steps(model, optimizer, evolution, inputs)
        before = [layer.n_links for layer in layers]
        progress = update / (updates + 1)
        record = evolution.update(progress, epoch=update, step=update)
        expected = evolution.target_links(progress)
        assert [layer.n_links for layer in layers] == expected == [c.target for c in record.layers]
        for links_before, change in zip(before, record.layers):
            survivors = links_before - change.pruned - change.removed - change.percolated
            assert change.links == survivors + change.regrown == change.target
    assert method.density.end < updates / (updates + 1)
    assert [layer.n_links for layer in layers] == evolution.final_links


@pytest.mark.parametrize("name", EVOLVING)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_weights_and_optimiser_state_follow_the_new_masks(name: str, optimizer_name: str) -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), optimizer_name=optimizer_name)
    for update in range(1, 4):
        train_steps(model, optimizer, evolution, inputs)
        old_masks = [layer.mask.clone() for layer in layers]
        old_weights = [layer.weight.detach().clone() for layer in layers]
        record = evolution.update(update / 4, epoch=update, step=update)
        for layer, old_mask, old_weight, change in zip(layers, old_masks, old_weights, record.layers):
            new_links = layer.mask & ~old_mask
            kept = layer.mask & old_mask
            assert torch.all(layer.weight[new_links] == 0)
            # Links pruned by a density schedule are gone for good: regrown, they restart at zero.
            restarted = kept & (layer.weight != old_weight)
            assert torch.all(layer.weight[restarted] == 0) and int(restarted.sum()) <= change.pruned
            assert torch.all(layer.weight[~layer.mask] == 0)
            for value in optimizer.state[layer.weight].values():
                if torch.is_tensor(value) and value.shape == layer.mask.shape:
                    assert torch.all(value[~layer.mask] == 0)


@pytest.mark.parametrize("name", EVOLVING)
def test_same_seed_gives_identical_masks_for_every_method(name: str) -> None:
    runs = []
    for _ in range(2):
        model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), seed=3)
        for update in range(1, 3):
            train_steps(model, optimizer, evolution, inputs)
            evolution.update(update / 3, epoch=update, step=update)
        runs.append([layer.mask.clone() for layer in layers])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_iclr_selection_regrows_towards_the_target_without_pruning() -> None:
    """The faithful ICLR rule may miss the target by the ties it adds; the next step aims at it again."""
    model, layers, optimizer, evolution, inputs = build_for_method(get_method("cht_iclr"))
    for update in range(1, 6):
        train_steps(model, optimizer, evolution, inputs)
        before = [layer.n_links for layer in layers]
        record = evolution.update(update / 6, epoch=update, step=update)
        for layer, links_before, target, change in zip(layers, before, evolution.final_links, record.layers):
            survivors = links_before - change.removed - change.percolated
            assert change.pruned == 0
            assert layer.n_links == survivors + change.regrown
            if survivors >= target:
                assert change.regrown == 0


# ---------------------------------------------------------------------------------------------------
# Scripted rules: removal/regrowth semantics and early stop on hand-made cases


@dataclass
class ScriptedRegrowth:
    """Regrow exactly the links just dropped in the layers listed for each call, random links elsewhere."""

    layers: list
    regrow_dropped: list[set[int]]
    calls: int = field(default=0)

    def __call__(self, layer, candidates, n, context: RegrowthContext) -> torch.Tensor:
        index = self.layers.index(layer)
        update = self.calls // len(self.layers)
        self.calls += 1
        dropped = layer.mask & ~context.mask
        if index in self.regrow_dropped[min(update, len(self.regrow_dropped) - 1)]:
            assert int(dropped.sum()) == n
            return dropped
        return random_links(candidates & ~layer.mask, n, context.generator)


def scripted_engine(plan: list[set[int]], early_stop: EarlyStop | None, **method_fields):
    model, layers, optimizer, _, inputs = build_for_method(get_method("set"))
    rule = ScriptedRegrowth(layers, plan)
    method = Method("scripted", "test", removal=MagnitudeRemoval(), regrowth=rule, early_stop=early_stop,
                    **method_fields)
    final = [layer.n_links for layer in layers]
    if method.density.end > 0:
        shapes = [(layer.in_features, layer.out_features) for layer in layers]
        for layer, n_links in zip(layers, link_counts(shapes, method.initial_density(0.1))):
            layer.set_mask(erdos_renyi_mask(layer.in_features, layer.out_features, n_links,
                                            InitContext(0, torch.Generator().manual_seed(5))).t())
    return model, layers, optimizer, Evolution(method, layers, optimizer, torch.Generator().manual_seed(9),
                                               final_links=final), inputs


def test_removed_then_regrown_links_keep_their_weight() -> None:
    model, layers, optimizer, evolution, inputs = scripted_engine([{0, 1, 2}], early_stop=None)
    train_steps(model, optimizer, evolution, inputs)
    masks = [layer.mask.clone() for layer in layers]
    weights = [layer.weight.detach().clone() for layer in layers]
    record = evolution.update(0.5, epoch=1, step=1)
    for layer, mask, weight, change in zip(layers, masks, weights, record.layers):
        assert change.removed > 0 and change.overlap == 1.0
        assert torch.equal(layer.mask, mask) and torch.equal(layer.weight.detach(), weight)


def test_early_stop_needs_every_layer_at_once_unless_sticky() -> None:
    plan = [{0, 1}, {2}, {0, 1, 2}]
    for sticky, frozen_after in [(False, 3), (True, 2)]:
        model, layers, optimizer, evolution, inputs = scripted_engine(plan, EarlyStop(0.9, sticky=sticky))
        for update in range(1, 4):
            train_steps(model, optimizer, evolution, inputs)
            record = evolution.update(update / 10, epoch=update, step=update)
            assert record.frozen == (update >= frozen_after), (sticky, update)
            if record.frozen:
                break
        assert not evolution.due(5, 10, 5, 10, epoch_end=True)


def test_early_stop_waits_for_the_density_schedule() -> None:
    model, layers, optimizer, evolution, inputs = scripted_engine(
        [{0, 1, 2}], EarlyStop(0.5), density=SigmoidDensity(start=0.5, end=0.5))
    for progress, frozen in [(0.2, False), (0.4, False), (0.6, True)]:
        train_steps(model, optimizer, evolution, inputs)
        record = evolution.update(progress, epoch=1, step=1)
        assert record.frozen == frozen
        assert [c.links for c in record.layers] == evolution.target_links(progress)


def test_percolation_counts_and_logged_phases() -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method("cht"), density=0.03)
    train_steps(model, optimizer, evolution, inputs)
    before = [layer.mask.clone() for layer in layers]
    record = evolution.update(0.5, epoch=1, step=1)
    assert {"removal", "percolation", "scoring", "selection", "regrowth"} <= set(record.seconds)
    assert sum(change.percolated for change in record.layers) > 0
    for layer, mask, change in zip(layers, before, record.layers):
        dropped = mask & ~layer.mask
        assert int(dropped.sum()) <= change.removed + change.percolated
    assert record.active_per_layer[0] <= INPUT_SHAPE[1] * INPUT_SHAPE[2]
    assert 0 < record.anp <= 1


def test_engine_state_round_trips() -> None:
    _, layers, _, evolution, _ = build_for_method(get_method("chtss"))
    state = evolution.state_dict()
    other = build_for_method(get_method("chtss"), seed=1)[3]
    other.load_state_dict(state)
    assert other.initial_links == evolution.initial_links and other.final_links == evolution.final_links
    assert torch.equal(other.generator.get_state(), evolution.generator.get_state())


def test_final_links_must_fit_the_layers() -> None:
    _, layers, optimizer, evolution, _ = build_for_method(get_method("set"))
    with pytest.raises(ValueError, match="final_links"):
        Evolution(get_method("set"), layers, optimizer, torch.Generator(), final_links=[1])
    with pytest.raises(ValueError, match="final_links\\[0\\]"):
        Evolution(get_method("set"), layers, optimizer, torch.Generator(), final_links=[10**9, 1, 1])


@pytest.mark.parametrize("name", ["granet", "chtss"])
def test_a_run_too_short_for_its_density_schedule_still_ends_on_target(name: str) -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method(name))
    total_epochs, updates = 3, 0
    for epoch in range(1, total_epochs + 1):
        train_steps(model, optimizer, evolution, inputs)
        if evolution.due(epoch, total_epochs, epoch * 10, total_epochs * 10, epoch_end=True):
            updates += 1
            record = evolution.update(epoch / total_epochs, epoch=epoch, step=epoch * 10)
            closing = epoch == total_epochs - 1
            assert ([c.links for c in record.layers] == evolution.final_links) == closing
    assert updates == 2 and [layer.n_links for layer in layers] == evolution.final_links
