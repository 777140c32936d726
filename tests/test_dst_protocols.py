"""Protocols as data (uniform, released), the released SET removal counts against a literal copy of the
released algorithm, and the released follow-up methods composed from existing rules."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cht.config import ConfigError, TrainConfig
from cht.dst import (CHRegrowth, EarlyStop, MagnitudeRemoval, MagnitudeTopKRemoval, SetupProtocol, SoftCHRegrowth,
                     SoftRemoval, available_methods, available_protocols, get_method, resolve_method)
from cht.dst.removal import RemovalContext, released_set_removal
from cht.dst.schedule import EvolutionSchedule
from cht.init import WEIGHT_INITS, TOPOLOGY_INITS
from cht.sparse import SparseLinear
from cht.sparse import links as L


# --- the released SET removal -------------------------------------------------------------------------------

def released_remove_connections(weight_in_out: torch.Tensor, mask_in_out: torch.Tensor, zeta: float) -> torch.Tensor:
    """``sparse_layer.remove_connections`` of the ICLR release (sparse.py at dfbd68d), line by line: returns
    the mask after removal, layout (in, out)."""
    def find_first_pos(array, value):
        return (torch.abs(array - value)).argmin()

    def find_last_pos(array, value):
        idx = torch.flip(torch.abs(array - value), dims=[0]).argmin()
        return array.shape[0] - idx

    values = torch.sort((weight_in_out * mask_in_out).ravel())[0]
    first_zero = find_first_pos(values, 0)
    last_zero = find_last_pos(values, 0)
    largest_negative = values[int((1 - zeta) * first_zero)]
    smallest_positive = values[int(min(values.shape[0] - 1, last_zero + zeta * (values.shape[0] - last_zero)))]
    rewired = weight_in_out * mask_in_out
    rewired[rewired > smallest_positive] = 1
    rewired[rewired < largest_negative] = 1
    rewired[rewired != 1] = 0
    return rewired.bool()


def layer_with(weight: torch.Tensor, mask: torch.Tensor) -> SparseLinear:
    layer = SparseLinear(weight.shape[1], weight.shape[0])
    links = L.from_mask(mask)
    layer.set_links(links, weight.reshape(-1)[links])
    return layer


def removed_mask(layer: SparseLinear, removed: torch.Tensor) -> torch.Tensor:
    """A rule's verdict over the links as a dense ``(out, in)`` mask."""
    return L.to_mask(layer.links[removed], layer.shape)


def random_case(seed: int, shape: tuple[int, int], density: float, zero_share: float, negative: bool = True):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < density
    weight = torch.randn(shape, generator=generator)
    if not negative:
        weight = weight.abs()
    weight[torch.rand(shape, generator=generator) < zero_share] = 0.0
    return weight * mask, mask


CASES = {
    "1% density": (0, (300, 400), 0.01, 0.0, True),
    "zero weights": (1, (200, 150), 0.05, 0.2, True),
    "no negatives": (2, (100, 120), 0.1, 0.0, False),
    "full density": (3, (40, 30), 1.01, 0.0, True),
    "full density with zeros": (4, (40, 30), 1.01, 0.1, True),
    "single link": (5, (1, 7), 0.2, 0.0, True),
}


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_released_counting_equals_the_released_code(case, zeta) -> None:
    weight, mask = random_case(*CASES[case])
    expected_kept = released_remove_connections(weight.t().clone(), mask.t().float(), zeta).t()
    rule = MagnitudeRemoval(counting="released")
    layer = layer_with(weight, mask)
    removed = removed_mask(layer, rule(layer, zeta, RemovalContext(0.0, torch.Generator())))
    assert torch.equal(removed, mask & ~expected_kept)


def test_released_counting_removes_one_more_positive_and_every_zero_weight() -> None:
    n_neg, n_pos, n_zero = 1000, 1000, 17
    values = torch.cat([-torch.arange(1, n_neg + 1) / n_neg, torch.arange(1, n_pos + 1) / n_pos, torch.zeros(n_zero)])
    mask = torch.zeros(100, 300, dtype=torch.bool)
    mask.view(-1)[:values.numel()] = True
    weight = torch.zeros(100, 300)
    weight.view(-1)[:values.numel()] = values
    removed = L.to_mask(L.from_mask(mask)[released_set_removal(weight[mask], mask.numel(), 0.3)], mask.shape)
    assert int((removed & (weight < 0)).sum()) == n_neg - int(0.7 * n_neg)  # 300 (float32: 0.7 · 1000 ≥ 700)
    assert int((removed & (weight > 0)).sum()) == int(0.3 * n_pos) + 1
    assert int((removed & mask & (weight == 0)).sum()) == n_zero
    layer = layer_with(weight, mask)
    rounded = MagnitudeRemoval()(layer, 0.3, RemovalContext(0.0, torch.Generator()))
    assert int(rounded.sum()) == round(0.3 * n_neg) + round(0.3 * (n_pos + n_zero))


def test_magnitude_removal_rejects_an_unknown_counting() -> None:
    with pytest.raises(ValueError, match="counting"):
        MagnitudeRemoval(counting="floor")


# --- protocols ----------------------------------------------------------------------------------------------

def test_the_protocols_are_registered_and_the_config_validates_the_name() -> None:
    assert available_protocols() == ["neurips2025", "released", "uniform"]
    assert TrainConfig().protocol == "uniform"
    with pytest.raises(ConfigError, match="protocol"):
        TrainConfig(protocol="faithful")
    assert TrainConfig(protocol="released").identity() != TrainConfig().identity()


@pytest.mark.parametrize("name", available_methods())
def test_uniform_protocol_gives_every_sparse_method_swi_and_zero_bias_and_changes_nothing_else(name) -> None:
    method, resolved = get_method(name), resolve_method(name, "uniform")
    if not method.sparse:
        assert resolved == method
        return
    assert (resolved.weight_init, resolved.bias_init) == ("swi", "zero")
    assert replace(resolved, weight_init=method.weight_init, bias_init=method.bias_init) == method


@pytest.mark.parametrize("name", ["static", "set", "rigl", "mest", "granet"])
def test_released_baselines_use_kaiming_on_the_dense_fan_in_with_normal_biases(name) -> None:
    resolved = resolve_method(name, "released")
    assert (resolved.weight_init, resolved.bias_init) == ("kaiming_released", "normal")
    assert resolved.weight_init in WEIGHT_INITS
    assert resolved.removal == get_method(name).removal or name == "set"
    assert resolved.regrowth == get_method(name).regrowth and resolved.schedule == get_method(name).schedule


def test_released_set_and_cht() -> None:
    set_released = resolve_method("set", "released")
    assert set_released.removal == MagnitudeRemoval(counting="released")
    cht = resolve_method("cht", "released")
    assert (cht.weight_init, cht.bias_init, cht.topology_init) == ("released_csti", "normal", "csti")
    assert cht.regrowth == CHRegrowth("CH3-L3", selection="iclr")
    assert cht.early_stop == EarlyStop(0.9, sticky=True) and cht.percolation
    assert cht.removal == MagnitudeRemoval(counting="released")
    assert resolve_method("cht_iclr", "released") == replace(cht, name="cht_iclr",
                                                             description=get_method("cht_iclr").description)


def test_released_protocol_leaves_the_dense_and_the_soft_methods_alone() -> None:
    for name in ("fc", "chts", "chtss", "chts_mlp_released", "chtss_llm_released"):
        assert resolve_method(name, "released") == get_method(name)


def test_resolution_does_not_change_the_registry() -> None:
    before = get_method("set")
    resolve_method("set", "released")
    assert get_method("set") == before and before.weight_init == "swi"


def test_protocols_reject_unknown_fields_and_names() -> None:
    with pytest.raises(ValueError, match="unknown Method fields"):
        SetupProtocol("bad", "", per_method={"set": {"weight_initialisation": "swi"}})
    with pytest.raises(ValueError, match="unknown protocol"):
        resolve_method("set", "faithful")


# --- the released follow-up methods ------------------------------------------------------------------------

def test_released_chts_and_chtss_are_compositions_of_existing_rules() -> None:
    chts = get_method("chts_mlp_released")
    assert chts.removal == MagnitudeTopKRemoval() and chts.regrowth == SoftCHRegrowth("CH3-L3")
    assert chts.topology_init == "csti" and chts.percolation and chts.schedule.end_fraction == 0.75
    assert chts.bias_init == "uniform_fan_in"
    chtss = get_method("chtss_llm_released")
    assert chtss.topology_init == "brf_r0.3" and chtss.topology_init in TOPOLOGY_INITS
    assert chtss.regrowth == CHRegrowth("CH2-L3n", selection="top_n") and not chtss.percolation
    assert chtss.schedule.zeta == 0.1 and chtss.schedule.zeta_decay == "cosine"
    assert isinstance(chtss.removal, SoftRemoval) and chtss.removal.importance == MagnitudeTopKRemoval()
    # The release's temperature reaches 9 at T_end = 75% of training; no update comes after it.
    assert chtss.removal.temperature(0.75) == pytest.approx(9.0) and chtss.removal.temperature(0.0) == 1.0
    assert chtss.initial_density(0.01) == 0.5 and chtss.density.end == 0.75


def test_brf_released_is_brf_with_randomness_0_3() -> None:
    from cht.init import bipartite_receptive_field
    from cht.init.topology import InitContext, init_topology

    links = init_topology("brf_r0.3", 100, 200, 400, InitContext(0, torch.Generator().manual_seed(0)))
    expected = bipartite_receptive_field(100, 200, 400, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(links, L.from_mask(expected.t()))


# --- a protocol reaches the run ------------------------------------------------------------------------------

def initial_state(config: TrainConfig):
    """The sparse layers right after initialisation, as cht.train builds them."""
    from cht.data import DATASETS, load_tensors
    from cht.models import build_model
    from cht.sparse import sparse_layers
    from cht.train import build_sparse_topology

    spec = DATASETS[config.dataset]
    x_train, _ = load_tensors(config.dataset, config.data_root, train=True, max_samples=config.max_train_samples)
    model = build_model(config.model, spec.input_shape, spec.num_classes, dim=config.dim, sparse=True)
    build_sparse_topology(model, config, x_train)
    return sparse_layers(model)


def test_released_cht_starts_with_most_csti_weights_at_zero_and_normal_biases(fashion_root) -> None:
    settings = dict(method="cht", dataset="fashion_mnist", data_root=str(fashion_root), max_train_samples=512,
                    tracking=False, progress=False)
    released = initial_state(TrainConfig(protocol="released", **settings))
    uniform = initial_state(TrainConfig(protocol="uniform", **settings))
    # Topology and weights share the init generator, so only the first layer's CSTI ties are broken alike.
    assert torch.equal(released[0].mask, uniform[0].mask)
    from cht.init.weights import swi_std

    kept = []
    for layer_released, layer_uniform in zip(released, uniform):
        linked = layer_released.weight.detach()[layer_released.mask]
        assert linked.numel() == layer_released.n_links
        # A CSTI link keeps a weight only where the random mask (as many links, drawn uniformly) had one too:
        # hypergeometric, on average links² / positions of them (about 1% of the links here), never none.
        positions = layer_released.in_features * layer_released.out_features
        expected = layer_released.n_links ** 2 / positions
        nonzero = int((linked != 0).sum())
        assert abs(nonzero - expected) < 5 * math.sqrt(expected), (nonzero, expected)
        std = swi_std(layer_released.shape, layer_released.n_links)
        kept.append(linked[linked != 0].double() / std)
        bias = layer_released.bias.detach().double()
        assert float(bias.std()) == pytest.approx(std, rel=5 / math.sqrt(2 * bias.numel()))
        assert abs(float(bias.mean())) < 5 * std / math.sqrt(bias.numel())
        assert bool((layer_uniform.weight[layer_uniform.mask] != 0).all())
        assert bool((layer_uniform.bias == 0).all())
    # The weights kept are SWI draws, N(0, swi_std²): over all layers, unit spread once scaled, mean 0.
    kept = torch.cat(kept)
    assert float(kept.std()) == pytest.approx(1.0, rel=5 / math.sqrt(2 * kept.numel()))
    assert abs(float(kept.mean())) < 5 / math.sqrt(kept.numel())


def test_run_records_its_protocol_and_initial_masks(fashion_root, tmp_path) -> None:
    from cht.run.lifecycle import INITIAL_MASKS
    from cht.train import train

    config = TrainConfig(method="set", protocol="released", dataset="fashion_mnist", data_root=str(fashion_root),
                         epochs=2, max_train_samples=256, max_test_samples=128, tracking=False, progress=False,
                         device="cpu")
    metrics = train(config, tmp_path)
    assert metrics["protocol"] == "released" and metrics["config"]["protocol"] == "released"
    initial = torch.load(tmp_path / INITIAL_MASKS)
    final = torch.load(tmp_path / "masks.pt")
    assert [mask.shape for mask in initial] == [mask.shape for mask in final]
    assert [int(mask.sum()) for mask in initial] == metrics["initial_links_per_layer"]
    assert any(not torch.equal(a, b) for a, b in zip(initial, final))  # SET rewired after epoch 1


def test_neurips2025_sets_up_the_table_methods_as_the_later_release() -> None:
    for name in ("set", "rigl", "granet", "gmp", "static", "mest"):
        method = resolve_method(name, "neurips2025")
        assert (method.weight_init, method.bias_init) == ("kaiming_released", "uniform_fan_in"), name
        assert method.removal == get_method(name).removal if name in ("gmp", "static", "mest") else isinstance(
            method.removal, MagnitudeTopKRemoval), name
    for name in ("cht", "chtsp", "chtsn", "chtssn"):
        method = resolve_method(name, "neurips2025")
        assert (method.topology_init, method.weight_init, method.bias_init) == ("csti", "swi_fan_out",
                                                                                "uniform_fan_in"), name
        assert method.percolation and isinstance(method.removal, MagnitudeTopKRemoval), name
        assert method.schedule.end_fraction == 0.75, name
    cht = resolve_method("cht", "neurips2025")
    assert cht.regrowth == CHRegrowth("CH3-L3", selection="iclr") and cht.early_stop == EarlyStop(0.9, sticky=True)
    assert cht.schedule.zeta_decay == "cosine"
    for name, rule in (("chtsp", "CH3-L3"), ("chtsn", "CH2-L3n")):
        method = resolve_method(name, "neurips2025")
        assert method.regrowth == SoftCHRegrowth(rule, shortage="score_floor"), name
        assert method.schedule.zeta_decay == "surplus" and method.initial_density(0.01) == pytest.approx(0.06)
        assert resolve_method(name, "uniform").regrowth == SoftCHRegrowth(rule), name  # the project's fill
    assert resolve_method("chtssn", "neurips2025").regrowth == SoftCHRegrowth("CH2-L3n", shortage="score_floor")
    for name, rule in (("chtsp_no_em_s", "CH3-L3"), ("chtsn_no_em_s", "CH2-L3n")):
        without_em_s = resolve_method(name, "neurips2025")
        assert without_em_s.regrowth == SoftCHRegrowth(rule, shortage="score_floor") and without_em_s.percolation
        assert without_em_s.initial_density(0.01) == 0.01 and without_em_s.schedule == EvolutionSchedule()
    assert resolve_method("chtssn", "neurips2025").initial_density(0.01) == 0.5
    assert resolve_method("gmp", "neurips2025").initial_density(0.01) == 0.5
    assert resolve_method("set", "neurips2025").schedule.end_fraction == 1.0  # no --adaptive_zeta
    assert resolve_method("fc", "neurips2025") == get_method("fc")


@pytest.mark.parametrize("name", ["resnet152", "googlenet"])
def test_released_cht_on_a_cnn_head_draws_swi_on_its_own_mask_and_does_not_percolate(name) -> None:
    """The released CNN command has neither CSTI nor --chain_removal: the head's random links all get weights."""
    from cht.models import build_model
    from cht.sparse import sparse_layers
    from cht.train import build_sparse_topology, configured_method

    config = TrainConfig(method="cht", protocol="released", model=name, dataset="cifar10", tracking=False,
                         progress=False)
    method = configured_method(config)
    assert not method.percolation and method.weight_init == "swi_released"
    mlp = configured_method(TrainConfig(method="cht", protocol="released", tracking=False, progress=False))
    assert mlp.percolation and mlp.weight_init == "released_csti"
    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10, dim=1)
    build_sparse_topology(model, config, None)
    for layer in sparse_layers(model):
        values = layer.link_values().detach().double()
        assert bool((values != 0).all())
        expected = math.sqrt(2 / (layer.n_links / (layer.in_features * layer.out_features) * layer.in_features))
        assert float(values.std()) == pytest.approx(expected, rel=5 / math.sqrt(2 * values.numel()))


def test_the_configuration_can_turn_early_stop_off_or_on_without_changing_other_runs() -> None:
    from cht.train import configured_method

    base = dict(method="cht", protocol="neurips2025", tracking=False, progress=False)
    assert configured_method(TrainConfig(**base)).early_stop == EarlyStop(0.9, sticky=True)
    assert configured_method(TrainConfig(**base, early_stop=True)).early_stop == EarlyStop(0.9, sticky=True)
    assert configured_method(TrainConfig(**base, early_stop=False)).early_stop is None
    assert configured_method(TrainConfig(method="set", early_stop=True)).early_stop == EarlyStop()
    # Left to the method, the key stays out of the run's identity: earlier checkpoints still resume.
    assert TrainConfig(**base, early_stop=None).identity() == TrainConfig(**base).identity()
    assert TrainConfig(**base, early_stop=False).identity() != TrainConfig(**base).identity()
