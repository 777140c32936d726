"""Weight initialisation: SWI's scale (statistical check), Kaiming and Xavier, one value per link; the
released initialisers (Kaiming on the dense fan-in, the ICLR CSTI path) and bias initialisers."""

import math

import pytest
import torch

from cht.init import WEIGHT_INITS, init_bias, init_weights
from cht.init.weights import DrawnForRandomMask, swi_fan_out_std, swi_std
from cht.sparse import links as L
from cht.init.topology import InitContext, erdos_renyi_links


def layer_links(n_in: int, n_out: int, density: float, seed: int) -> tuple[tuple[int, int], torch.Tensor]:
    """A layer shape ``(out, in)`` and random links at ``density``."""
    generator = torch.Generator().manual_seed(seed)
    return (n_out, n_in), erdos_renyi_links(n_in, n_out, round(density * n_in * n_out), InitContext(0, generator))


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5])
def test_swi_standard_deviation(density: float) -> None:
    """SWI draws N(0, 2 / (density · fan_in)): the sample std of the link weights must match it."""
    shape, links = layer_links(800, 500, density, seed=0)
    values = init_weights("swi", shape, links, torch.Generator().manual_seed(1)).double()
    expected = math.sqrt(2.0 / (density * 800))
    # The sample std of n normal draws has relative standard error ≈ 1 / sqrt(2n).
    tolerance = 5 / math.sqrt(2 * values.numel())
    assert float(values.std()) == pytest.approx(expected, rel=tolerance)
    assert abs(float(values.mean())) < 5 * expected / math.sqrt(values.numel())


def test_kaiming_and_xavier_scales() -> None:
    shape, links = layer_links(400, 300, 0.2, seed=2)
    values = init_weights("kaiming", shape, links, torch.Generator().manual_seed(3))
    bound = 1 / math.sqrt(400)
    assert float(values.abs().max()) <= bound and float(values.std()) == pytest.approx(bound / math.sqrt(3),
                                                                                       rel=0.05)
    values = init_weights("xavier", shape, links, torch.Generator().manual_seed(3))
    assert float(values.std()) == pytest.approx(math.sqrt(2 / 700), rel=0.05)


@pytest.mark.parametrize("name", ["swi", "kaiming", "xavier"])
def test_one_float32_value_per_link_reproducibly_and_for_empty_layers(name: str) -> None:
    shape, links = layer_links(30, 20, 0.1, seed=4)
    draw = lambda seed, links_=links: init_weights(name, shape, links_, torch.Generator().manual_seed(seed))
    values = draw(0)
    assert values.shape == links.shape and values.dtype == torch.float32
    assert torch.equal(values, draw(0)) and not torch.equal(values, draw(1))
    assert torch.count_nonzero(values) == links.numel()
    empty = draw(0, torch.empty(0, dtype=torch.int64))
    assert empty.shape == (0,) and empty.dtype == torch.float32


def test_weight_registry() -> None:
    assert {"swi", "kaiming", "xavier"} <= set(WEIGHT_INITS)
    with pytest.raises(ValueError, match="unknown weight init"):
        init_weights("ones", (2, 2), torch.arange(4), torch.Generator())


def test_an_initialiser_returning_the_wrong_count_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(WEIGHT_INITS, "short", lambda shape, links, generator: torch.zeros(links.numel() - 1))
    with pytest.raises(RuntimeError, match="short"):
        init_weights("short", (2, 2), torch.arange(4), torch.Generator())


# --- link-form initialisers (the authors' released ones) and biases ------------------------------------------


def random_index(shape: tuple[int, int], n_links: int, seed: int) -> torch.Tensor:
    return torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))[:n_links].sort().values


@pytest.mark.parametrize(("name", "expected_std"), [
    ("kaiming_released", lambda shape, links: math.sqrt(2 / shape[1])),
    ("swi_released", lambda shape, links: math.sqrt(2 * shape[0] / links)),
    # The later release: sqrt(2 / (density · fan_out)), the fan-out being shape[0].
    ("swi_fan_out", lambda shape, links: math.sqrt(2 / (links / (shape[0] * shape[1]) * shape[0]))),
])
@pytest.mark.parametrize("shape", [(300, 700), (900, 200)])
def test_released_normal_inits_draw_one_value_per_link_with_the_released_std(name, expected_std, shape) -> None:
    links = shape[0] * shape[1] // 20
    index = random_index(shape, links, seed=1)
    values = WEIGHT_INITS[name](shape, index, torch.Generator().manual_seed(2))
    assert values.shape == (links,) and values.dtype == torch.float32
    expected = expected_std(shape, links)
    assert float(values.double().std()) == pytest.approx(expected, rel=5 / math.sqrt(2 * links))
    assert abs(float(values.double().mean())) < 5 * expected / math.sqrt(links)
    again = WEIGHT_INITS[name](shape, index, torch.Generator().manual_seed(2))
    assert torch.equal(values, again)


def slow_mean_in_degree(shape: tuple[int, int], index: torch.Tensor) -> float:
    """The mean number of incoming links of an output neuron, counted link by link (``index``: flat positions
    ``row · in + col`` of an ``(out, in)`` layer)."""
    incoming = [0] * shape[0]
    for position in index.tolist():
        incoming[position // shape[1]] += 1
    return sum(incoming) / shape[0]


@pytest.mark.parametrize(("shape", "links"), [((500, 800), 4000), ((800, 300), 12000), ((60, 900), 5400)])
def test_swi_released_has_the_std_of_swi(shape, links) -> None:
    """The release's SWI (``sqrt(2 / mean in-degree)``) is today's SWI (``sqrt(2 / (density · fan_in))``): on
    fresh random links, both draw exactly ``N(0, 2 / mean in-degree)`` from the same stream, the in-degree
    counted by hand. Non-square layers tell the fan-in from the fan-out."""
    index = random_index(shape, links, seed=sum(shape))
    std = math.sqrt(2 / slow_mean_in_degree(shape, index))
    reference = torch.randn(links, generator=torch.Generator().manual_seed(7)) * std
    released = WEIGHT_INITS["swi_released"](shape, index, torch.Generator().manual_seed(7))
    today = init_weights("swi", shape, index, torch.Generator().manual_seed(7))
    torch.testing.assert_close(released, reference, rtol=1e-6, atol=0)
    torch.testing.assert_close(today, reference, rtol=1e-6, atol=0)
    assert swi_std(shape, links) == pytest.approx(std)
    # The scale itself, from the statistics of the draw: fails for any other σ by more than a few %.
    sample = released.double()
    assert float(sample.std()) == pytest.approx(std, rel=5 / math.sqrt(2 * links))
    if shape[0] != shape[1]:
        fan_out_std = math.sqrt(2 / (links / (shape[0] * shape[1]) * shape[0]))
        assert float(sample.std()) != pytest.approx(fan_out_std, rel=5 / math.sqrt(2 * links))


def slow_released_csti(shape, index, generator, std):
    """The release literally: a random mask, a dense N(0, σ²) draw masked by it, read at the CSTI links."""
    random = L.random_free_positions(shape, torch.empty(0, dtype=torch.int64), index.numel(), generator)
    dense = torch.zeros(shape[0] * shape[1])
    dense[random] = torch.randn(random.numel(), generator=generator) * std
    return dense[index]


@pytest.mark.parametrize(("shape", "links"), [((40, 60), 120), ((60, 40), 2400), ((1, 30), 3), ((30, 30), 0)])
def test_released_csti_keeps_weights_only_where_the_random_mask_had_links(shape, links) -> None:
    index = random_index(shape, links, seed=3)
    values = WEIGHT_INITS["released_csti"](shape, index, torch.Generator().manual_seed(4))
    reference = slow_released_csti(shape, index, torch.Generator().manual_seed(4), swi_std(shape, links))
    assert torch.equal(values, reference.float())


def test_released_csti_leaves_most_links_at_zero_at_low_density() -> None:
    shape, links = (784, 784), 6146  # the paper MLP's 784 × 784 layer at 1%
    values = WEIGHT_INITS["released_csti"](shape, random_index(shape, links, 5), torch.Generator().manual_seed(6))
    share = float((values != 0).float().mean())
    assert 0.002 < share < 0.03  # ≈ density: a CSTI link is non-zero only if the random mask also had it


def test_bias_inits() -> None:
    shape, links = (400, 784), 3136
    generator = torch.Generator().manual_seed(9)
    assert torch.equal(init_bias("zero", "swi", shape, links, generator), torch.zeros(400))
    normal = init_bias("normal", "released_csti", shape, links, generator)
    assert float(normal.std()) == pytest.approx(swi_std(shape, links), rel=0.2)
    kaiming = init_bias("normal", "kaiming_released", shape, links, generator)
    assert float(kaiming.std()) == pytest.approx(math.sqrt(2 / 784), rel=0.2)
    uniform = init_bias("uniform_fan_in", "swi", shape, links, generator)
    assert float(uniform.abs().max()) <= 1 / math.sqrt(784)
    with pytest.raises(ValueError, match="has none"):
        init_bias("normal", "swi", shape, links, generator)
    with pytest.raises(ValueError, match="unknown bias init"):
        init_bias("ones", "swi", shape, links, generator)
    assert isinstance(WEIGHT_INITS["released_csti"], DrawnForRandomMask)


def test_swi_on_the_fan_out_equals_swi_on_square_layers_only() -> None:
    square, wide = (600, 600), (1568, 784)
    assert swi_fan_out_std(square, 3600) == pytest.approx(swi_std(square, 3600))
    assert swi_fan_out_std(wide, 12293) == pytest.approx(swi_std(wide, 12293) / math.sqrt(2), rel=1e-3)
    assert swi_fan_out_std(wide, 0) == 0.0
