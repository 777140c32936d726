"""The evolution engine: link counts, weight and optimiser-state semantics, percolation, early stop.

Every registered method runs on a tiny MLP (20 inputs, hidden width 40) for several updates, on both
storages of the sparse layers.
"""

import itertools
from dataclasses import dataclass, field

import pytest
import torch

from cht.dst import (EarlyStop, Evolution, EvolutionSchedule, ExtraDensity, MagnitudeRemoval, MagnitudeTopKRemoval,
                     Method, RandomRegrowth, RegrowthContext, SigmoidDensity, available_methods, get_method,
                     percolate)
from cht.dst.removal import RemovalContext
from cht.init import init_topology, init_weights
from cht.init.topology import InitContext, erdos_renyi_links
from cht.models import build_mlp
from cht.sparse import STORAGES, after_optimizer_step, link_counts, sparse_layers
from cht.sparse import links as L

INPUT_SHAPE = (1, 4, 5)


@pytest.fixture(params=STORAGES)
def storage(request) -> str:
    return request.param


def random_topology(layer, n_links: int, generator: torch.Generator) -> None:
    """Random links with Kaiming weights, as a static baseline starts."""
    links = erdos_renyi_links(layer.in_features, layer.out_features, n_links, InitContext(0, generator))
    layer.set_links(links, init_weights("kaiming", layer.shape, links, generator))


def link_state(layer, optimizer, key: str) -> torch.Tensor:
    """An optimiser state tensor of the layer at its links (either storage's layout)."""
    return layer.state_in_layout(optimizer.state[layer.parameter][key], "sparse")


def pairs(positions: torch.Tensor, n_in: int) -> set[tuple[int, int]]:
    """``(out, in)`` pairs of link positions."""
    return {(p // n_in, p % n_in) for p in positions.tolist()}


def reference_set_removal(weight: torch.Tensor, mask: torch.Tensor, zeta: float) -> set[tuple[int, int]]:
    """Sort the negatives and the non-negatives by distance to zero; take ζ of each."""
    links = [(i, j) for i, j in itertools.product(range(weight.shape[0]), range(weight.shape[1])) if mask[i, j]]
    negatives = sorted((l for l in links if weight[l] < 0), key=lambda l: -weight[l].item())
    positives = sorted((l for l in links if weight[l] >= 0), key=lambda l: weight[l].item())
    return set(negatives[:round(zeta * len(negatives))]) | set(positives[:round(zeta * len(positives))])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("zeta", [0.0, 0.3, 1.0])
def test_set_removal_matches_reference(seed: int, zeta: float, storage: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    layer = sparse_layers(build_mlp((1, 3, 4), num_classes=3, dim=2))[1]
    layer.to_storage(storage)
    links = erdos_renyi_links(24, 24, 100, InitContext(0, generator))
    layer.set_links(links, torch.randn(100, generator=generator))
    removed = MagnitudeRemoval()(layer, zeta, RemovalContext(progress=0.0, generator=generator))
    expected = reference_set_removal(layer.dense_weight(), layer.adjacency.t(), zeta)
    assert removed.shape == layer.links.shape and pairs(layer.links[removed], 24) == expected


def make_engine(method_name: str, storage: str, seed: int = 0, dim: int = 1, density: float = 0.2):
    generator = torch.Generator().manual_seed(seed)
    model = build_mlp((1, 4, 5), num_classes=4, dim=dim)
    layers = sparse_layers(model)
    for layer in layers:
        random_topology(layer, round(density * layer.in_features * layer.out_features), generator)
        layer.to_storage(storage)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, layers, optimizer, Evolution(get_method(method_name), layers, optimizer, generator)


def train_a_little(model, optimizer, steps: int = 3) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 1, 4, 5)).pow(2).mean().backward()
        optimizer.step()
        after_optimizer_step(sparse_layers(model))


def test_set_update_keeps_link_counts_and_zero_initialises_new_links(storage: str) -> None:
    model, layers, optimizer, evolution = make_engine("set", storage)
    targets = [layer.n_links for layer in layers]
    for update in range(5):
        train_a_little(model, optimizer)
        before_links = [layer.links.clone() for layer in layers]
        before_values = [layer.link_values().clone() for layer in layers]
        before_momentum = [link_state(layer, optimizer, "momentum_buffer").clone() for layer in layers]
        record = evolution.update(progress=update / 5, epoch=update + 1, step=update + 1)
        for layer, target, old_links, old_values, old_momentum, change in zip(
                layers, targets, before_links, before_values, before_momentum, record.layers):
            assert layer.n_links == target == change.links
            assert change.removed == change.regrown == round(0.3 * (old_values < 0).sum().item()) + \
                round(0.3 * (old_values >= 0).sum().item())
            new = ~L.contains(old_links, layer.links)
            assert torch.all(layer.link_values()[new] == 0)
            slot = torch.searchsorted(old_links, layer.links[~new])
            assert torch.equal(layer.link_values()[~new], old_values[slot])
            assert torch.all(layer.dense_weight()[~layer.adjacency.t()] == 0)
            momentum = link_state(layer, optimizer, "momentum_buffer")
            assert torch.all(momentum[new] == 0) and torch.equal(momentum[~new], old_momentum[slot])
            if storage == "masked":
                assert torch.all(optimizer.state[layer.weight]["momentum_buffer"][~layer.mask] == 0)


def test_same_seed_gives_identical_links(storage: str) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model, layers, optimizer, evolution = make_engine("set", storage, seed=7)
        train_a_little(model, optimizer)
        evolution.update(progress=0.5, epoch=1, step=1)
        runs.append([layer.links.clone() for layer in layers])
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


def percolate_adjacencies(adjacencies: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`percolate` on ``(in, out)`` adjacencies, through link sets in layer convention."""
    shapes = [(a.shape[1], a.shape[0]) for a in adjacencies]
    result = percolate([L.from_mask(a.t()) for a in adjacencies], shapes)
    return [L.to_mask(links, shape).t() for links, shape in zip(result, shapes)]


def test_percolation_on_a_hand_made_chain() -> None:
    # inputs 0..2 → hidden A (3 neurons) → hidden B (3 neurons) → outputs (2)
    first = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    second = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool)
    third = torch.tensor([[1, 1], [0, 0], [0, 0]], dtype=torch.bool)
    out = percolate_adjacencies([first, second, third])
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
    result = percolate_adjacencies(adjacencies)
    assert all(torch.equal(a, b) for a, b in zip(result, reference_percolation(adjacencies)))
    assert all(torch.equal(a, b) for a, b in zip(percolate_adjacencies(result), result))


def test_percolation_rejects_layers_that_do_not_chain() -> None:
    # 2 inputs → 3 outputs, then a layer expecting 4 inputs (layer convention (out, in)).
    with pytest.raises(ValueError, match="chain"):
        percolate([torch.arange(6), torch.arange(8)], [(3, 2), (2, 4)])
    with pytest.raises(ValueError, match="link sets"):
        percolate([torch.arange(6)], [(3, 2), (2, 3)])


def test_schedule_update_points_and_cosine_fraction() -> None:
    schedule = EvolutionSchedule(interval=3, zeta=0.3, zeta_decay="cosine", end_fraction=0.75)
    assert [c for c in range(1, 21) if schedule.is_update(c, 20)] == [3, 6, 9, 12, 15]
    assert schedule.fraction(0.0) == pytest.approx(0.3)
    assert schedule.fraction(0.375) == pytest.approx(0.15)
    assert schedule.fraction(0.75) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="interval"):
        EvolutionSchedule(interval=0)


def test_static_and_fc_never_evolve() -> None:
    _, _, _, evolution = make_engine("static", "masked")
    assert not evolution.due(1, 10, 100, 1000, epoch_end=True)
    assert not get_method("fc").sparse


# ---------------------------------------------------------------------------------------------------
# Every registered method


def build_for_method(method: Method, seed: int = 0, density: float = 0.1, optimizer_name: str = "sgd",
                     storage: str = "masked"):
    """Initialise a tiny MLP as the training loop does: method's inits at its initial density, then the
    storage, then the optimiser."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, *INPUT_SHAPE, generator=generator)
    model = build_mlp(INPUT_SHAPE, num_classes=4, dim=2, sparse=method.sparse)
    layers = sparse_layers(model)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    for index, (layer, n_links) in enumerate(zip(layers, link_counts(shapes, method.initial_density(density)))):
        context = InitContext(index, generator, {"train_inputs": inputs})
        links = init_topology(method.topology_init, *shapes[index], n_links, context)
        layer.set_links(links, init_weights(method.weight_init, layer.shape, links, generator))
        layer.to_storage(storage)
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
        after_optimizer_step(evolution.layers)


EVOLVING = [name for name in available_methods() if get_method(name).evolves]
EXACT_COUNT_METHODS = [name for name in EVOLVING if name != "cht_iclr"]


def test_registry_holds_the_required_methods() -> None:
    assert set(available_methods()) >= {"fc", "static", "set", "rigl", "mest", "granet", "cht", "cht_iclr",
                                        "chts", "chtss"}


@pytest.mark.parametrize("name", EXACT_COUNT_METHODS)
def test_link_counts_follow_the_schedule_exactly_at_every_update(name: str, storage: str) -> None:
    method = get_method(name)
    model, layers, optimizer, evolution, inputs = build_for_method(method, storage=storage)
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
def test_weights_and_optimiser_state_follow_the_new_links(name: str, optimizer_name: str, storage: str) -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), optimizer_name=optimizer_name,
                                                                   storage=storage)
    keys = ["momentum_buffer"] if optimizer_name == "sgd" else ["exp_avg", "exp_avg_sq"]
    for update in range(1, 4):
        train_steps(model, optimizer, evolution, inputs)
        old_links = [layer.links.clone() for layer in layers]
        old_values = [layer.link_values().clone() for layer in layers]
        old_states = [{key: link_state(layer, optimizer, key).clone() for key in keys} for layer in layers]
        record = evolution.update(update / 4, epoch=update, step=update)
        for layer, links, values, states, change in zip(layers, old_links, old_values, old_states, record.layers):
            new = ~L.contains(links, layer.links)
            slot = torch.searchsorted(links, layer.links).clamp(max=links.numel() - 1)
            assert torch.all(layer.link_values()[new] == 0)
            # Links pruned by a density schedule are gone for good: regrown, they restart at zero.
            restarted = ~new & (layer.link_values() != values[slot])
            assert torch.all(layer.link_values()[restarted] == 0) and int(restarted.sum()) <= change.pruned
            carried = ~new & ~restarted
            assert torch.all(layer.dense_weight()[~layer.adjacency.t()] == 0)
            for key in keys:
                state = link_state(layer, optimizer, key)
                assert torch.all(state[new | restarted] == 0)
                assert torch.equal(state[carried], states[key][slot[carried]])
                if storage == "masked":
                    assert torch.all(optimizer.state[layer.weight][key][~layer.mask] == 0)


@pytest.mark.parametrize("name", EVOLVING)
def test_same_seed_gives_identical_links_for_every_method(name: str, storage: str) -> None:
    runs = []
    for _ in range(2):
        model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), seed=3, storage=storage)
        for update in range(1, 3):
            train_steps(model, optimizer, evolution, inputs)
            evolution.update(update / 3, epoch=update, step=update)
        runs.append([layer.links.clone() for layer in layers])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("name", ["set", "rigl", "mest", "cht", "chtss"])
def test_both_storages_evolve_the_same_topology(name: str) -> None:
    """The storages compute the same function, so the same seed gives the same links and nearly the same
    weights."""
    runs = []
    for storage in STORAGES:
        model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), seed=4, storage=storage)
        for update in range(1, 4):
            train_steps(model, optimizer, evolution, inputs)
            evolution.update(update / 4, epoch=update, step=update)
        runs.append([(layer.links.clone(), layer.link_values().clone()) for layer in layers])
    for (links_a, values_a), (links_b, values_b) in zip(*runs):
        assert torch.equal(links_a, links_b)
        assert torch.allclose(values_a, values_b, rtol=1e-4, atol=1e-6)


def test_iclr_selection_regrows_towards_the_target_without_pruning(storage: str) -> None:
    """The faithful ICLR rule may miss the target by the ties it adds; the next step aims at it again."""
    model, layers, optimizer, evolution, inputs = build_for_method(get_method("cht_iclr"), storage=storage)
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

    def __call__(self, layer, n, context: RegrowthContext) -> torch.Tensor:
        index = self.layers.index(layer)
        update = self.calls // len(self.layers)
        self.calls += 1
        dropped = layer.links[~L.contains(context.survivors, layer.links)]
        if index in self.regrow_dropped[min(update, len(self.regrow_dropped) - 1)]:
            assert dropped.numel() == n
            return dropped
        return L.random_free_positions(layer.shape, layer.links, n, context.generator)


def scripted_engine(plan: list[set[int]], early_stop: EarlyStop | None, storage: str, **method_fields):
    model, layers, optimizer, _, inputs = build_for_method(get_method("set"), storage=storage)
    rule = ScriptedRegrowth(layers, plan)
    method = Method("scripted", "test", removal=MagnitudeRemoval(), regrowth=rule, early_stop=early_stop,
                    **method_fields)
    final = [layer.n_links for layer in layers]
    if method.density.end > 0:
        shapes = [(layer.in_features, layer.out_features) for layer in layers]
        for layer, n_links in zip(layers, link_counts(shapes, method.initial_density(0.1))):
            random_topology(layer, n_links, torch.Generator().manual_seed(5))
    return model, layers, optimizer, Evolution(method, layers, optimizer, torch.Generator().manual_seed(9),
                                               final_links=final), inputs


def test_removed_then_regrown_links_keep_their_weight_and_state(storage: str) -> None:
    model, layers, optimizer, evolution, inputs = scripted_engine([{0, 1, 2}], early_stop=None, storage=storage)
    train_steps(model, optimizer, evolution, inputs)
    links = [layer.links.clone() for layer in layers]
    values = [layer.link_values().clone() for layer in layers]
    momenta = [link_state(layer, optimizer, "momentum_buffer").clone() for layer in layers]
    record = evolution.update(0.5, epoch=1, step=1)
    for layer, links_, values_, momentum, change in zip(layers, links, values, momenta, record.layers):
        assert change.removed > 0 and change.overlap == 1.0
        assert torch.equal(layer.links, links_) and torch.equal(layer.link_values(), values_)
        assert torch.equal(link_state(layer, optimizer, "momentum_buffer"), momentum)


def test_early_stop_needs_every_layer_at_once_unless_sticky(storage: str) -> None:
    plan = [{0, 1}, {2}, {0, 1, 2}]
    for sticky, frozen_after in [(False, 3), (True, 2)]:
        model, layers, optimizer, evolution, inputs = scripted_engine(plan, EarlyStop(0.9, sticky=sticky),
                                                                      storage=storage)
        for update in range(1, 4):
            train_steps(model, optimizer, evolution, inputs)
            record = evolution.update(update / 10, epoch=update, step=update)
            assert record.frozen == (update >= frozen_after), (sticky, update)
            if record.frozen:
                break
        assert not evolution.due(5, 10, 5, 10, epoch_end=True)


def test_early_stop_waits_for_the_density_schedule(storage: str) -> None:
    model, layers, optimizer, evolution, inputs = scripted_engine(
        [{0, 1, 2}], EarlyStop(0.5), storage=storage, density=SigmoidDensity(start=0.5, end=0.5))
    for progress, frozen in [(0.2, False), (0.4, False), (0.6, True)]:
        train_steps(model, optimizer, evolution, inputs)
        record = evolution.update(progress, epoch=1, step=1)
        assert record.frozen == frozen
        assert [c.links for c in record.layers] == evolution.target_links(progress)


def test_percolation_counts_and_logged_phases(storage: str) -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method("cht"), density=0.03, storage=storage)
    train_steps(model, optimizer, evolution, inputs)
    before = [layer.links.clone() for layer in layers]
    record = evolution.update(0.5, epoch=1, step=1)
    assert {"removal", "percolation", "scoring", "selection", "regrowth"} <= set(record.seconds)
    assert sum(change.percolated for change in record.layers) > 0
    for layer, links, change in zip(layers, before, record.layers):
        dropped = ~L.contains(layer.links, links)
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
def test_a_run_too_short_for_its_density_schedule_still_ends_on_target(name: str, storage: str) -> None:
    model, layers, optimizer, evolution, inputs = build_for_method(get_method(name), storage=storage)
    total_epochs, updates = 3, 0
    for epoch in range(1, total_epochs + 1):
        train_steps(model, optimizer, evolution, inputs)
        if evolution.due(epoch, total_epochs, epoch * 10, total_epochs * 10, epoch_end=True):
            updates += 1
            record = evolution.update(epoch / total_epochs, epoch=epoch, step=epoch * 10)
            closing = epoch == total_epochs - 1
            assert ([c.links for c in record.layers] == evolution.final_links) == closing
    assert updates == 2 and [layer.n_links for layer in layers] == evolution.final_links


# ---------------------------------------------------------------------------------------------------
# The later release's --EM_S phases, pruning without regrowth, the early-stop denominator


def largest_magnitudes(layer, count: int) -> set[tuple[int, int]]:
    """The ``count`` links of largest |w|, by sorting the dense weight (ties do not occur: random weights)."""
    weight = layer.dense_weight()
    links = sorted(pairs(layer.links, layer.in_features), key=lambda link: -abs(weight[link].item()))
    return set(links[:count])


def test_surplus_removal_keeps_the_strongest_target_links_and_regrows_the_extra(storage: str) -> None:
    method = Method("em_s", "test", removal=MagnitudeTopKRemoval(), regrowth=RandomRegrowth(),
                    density=ExtraDensity(extra=0.05, half_at=0.45, end=0.75),
                    schedule=EvolutionSchedule(zeta_decay="surplus", end_fraction=0.75))
    model, layers, optimizer, evolution, inputs = build_for_method(method, density=0.02, storage=storage)
    positions = [layer.in_features * layer.out_features for layer in layers]
    final = evolution.final_links
    surplus = [layer.n_links - count for layer, count in zip(layers, final)]
    assert surplus == [round(0.05 * total) for total in positions]
    for progress, share in [(0.3, 1.0), (0.45, 1.0), (0.5, 0.5), (0.7, 0.5), (0.75, 0.0)]:
        train_steps(model, optimizer, evolution, inputs)
        strongest = [largest_magnitudes(layer, count) for layer, count in zip(layers, final)]
        record = evolution.update(progress, epoch=1, step=1)
        for layer, keep, count, extra, change in zip(layers, strongest, final, surplus, record.layers):
            assert keep <= pairs(layer.links, layer.in_features), progress  # the strongest target's worth survives
            assert layer.n_links == count + round(extra * share), progress
            assert change.regrown == layer.n_links - count
    assert [layer.n_links for layer in layers] == final


def test_pruning_without_regrowth_keeps_the_largest_weights_on_the_cubic_schedule(storage: str) -> None:
    method = get_method("gmp")
    assert method.removal is None and method.regrowth is None and method.evolves
    model, layers, optimizer, evolution, inputs = build_for_method(method, density=0.05, storage=storage)
    for update in range(1, 5):
        train_steps(model, optimizer, evolution, inputs)
        progress = update / 5
        targets = evolution.target_links(progress)
        before = [pairs(layer.links, layer.in_features) for layer in layers]
        strongest = [largest_magnitudes(layer, count) for layer, count in zip(layers, targets)]
        record = evolution.update(progress, epoch=update, step=update)
        for layer, old, keep, target, change in zip(layers, before, strongest, targets, record.layers):
            assert pairs(layer.links, layer.in_features) == keep and keep <= old
            assert layer.n_links == target and change.regrown == 0 and change.removed == 0
    assert [layer.n_links for layer in layers] == evolution.final_links


@dataclass
class TieGrowth:
    """Grows every link just removed plus as many again elsewhere, as threshold selection does on ties."""

    def __call__(self, layer, n, context: RegrowthContext) -> torch.Tensor:
        dropped = layer.links[~L.contains(context.survivors, layer.links)]
        extra = L.random_free_positions(layer.shape, L.merge(context.survivors, dropped), n, context.generator)
        return L.merge(dropped, extra)


def test_early_stop_overlap_is_counted_over_the_links_requested(storage: str) -> None:
    """The releases divide the re-grown removed links by the links asked for, not by those grown."""
    model, layers, optimizer, _, inputs = build_for_method(get_method("set"), storage=storage)
    method = Method("ties", "test", removal=MagnitudeRemoval(), regrowth=TieGrowth(), early_stop=EarlyStop(0.9))
    evolution = Evolution(method, layers, optimizer, torch.Generator().manual_seed(3))
    train_steps(model, optimizer, evolution, inputs)
    record = evolution.update(0.5, epoch=1, step=1)
    for change in record.layers:
        assert change.regrown == 2 * change.removed and change.overlap == 1.0
    assert record.frozen
