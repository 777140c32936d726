"""Weight initialisation: SWI's scale (statistical check), Kaiming and Xavier, masking; the released
link-form initialisers (Kaiming on the dense fan-in, the ICLR CSTI path) and bias initialisers."""

import math

import pytest
import torch

from cht.init import LINK_WEIGHT_INITS, WEIGHT_INITS, init_bias, init_weights
from cht.init.weights import DrawnForRandomMask, NormalLinkInit, random_positions, swi_std
from cht.init.topology import InitContext, erdos_renyi_mask


def masked_weight(n_in: int, n_out: int, density: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = erdos_renyi_mask(n_in, n_out, round(density * n_in * n_out), InitContext(0, generator)).t()
    return torch.empty(n_out, n_in), mask


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5])
def test_swi_standard_deviation(density: float) -> None:
    """SWI draws N(0, 2 / (density · fan_in)): the sample std of the kept weights must match it."""
    weight, mask = masked_weight(800, 500, density, seed=0)
    init_weights("swi", weight, mask, torch.Generator().manual_seed(1))
    kept = weight[mask].double()
    expected = math.sqrt(2.0 / (density * 800))
    # The sample std of n normal draws has relative standard error ≈ 1 / sqrt(2n).
    tolerance = 5 / math.sqrt(2 * kept.numel())
    assert float(kept.std()) == pytest.approx(expected, rel=tolerance)
    assert abs(float(kept.mean())) < 5 * expected / math.sqrt(kept.numel())
    assert torch.all(weight[~mask] == 0)


def test_kaiming_and_xavier_scales() -> None:
    weight, mask = masked_weight(400, 300, 0.2, seed=2)
    init_weights("kaiming", weight, mask, torch.Generator().manual_seed(3))
    bound = 1 / math.sqrt(400)
    assert float(weight.abs().max()) <= bound and float(weight[mask].std()) == pytest.approx(bound / math.sqrt(3),
                                                                                             rel=0.05)
    init_weights("xavier", weight, mask, torch.Generator().manual_seed(3))
    assert float(weight[mask].std()) == pytest.approx(math.sqrt(2 / 700), rel=0.05)
    assert torch.all(weight[~mask] == 0)


def test_weight_registry() -> None:
    assert {"swi", "kaiming", "xavier"} <= set(WEIGHT_INITS)
    with pytest.raises(ValueError, match="unknown weight init"):
        init_weights("ones", torch.empty(2, 2), torch.ones(2, 2, dtype=torch.bool), torch.Generator())


# --- link-form initialisers (the authors' released ones) and biases ------------------------------------------


def random_index(shape: tuple[int, int], n_links: int, seed: int) -> torch.Tensor:
    return torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))[:n_links].sort().values


@pytest.mark.parametrize(("name", "expected_std"), [
    ("kaiming_released", lambda shape, links: math.sqrt(2 / shape[1])),
    ("swi_released", lambda shape, links: math.sqrt(2 * shape[0] / links)),
])
@pytest.mark.parametrize("shape", [(300, 700), (900, 200)])
def test_released_normal_inits_draw_one_value_per_link_with_the_released_std(name, expected_std, shape) -> None:
    links = shape[0] * shape[1] // 20
    index = random_index(shape, links, seed=1)
    values = LINK_WEIGHT_INITS[name](shape, index, torch.Generator().manual_seed(2))
    assert values.shape == (links,) and values.dtype == torch.float32
    expected = expected_std(shape, links)
    assert float(values.double().std()) == pytest.approx(expected, rel=5 / math.sqrt(2 * links))
    assert abs(float(values.double().mean())) < 5 * expected / math.sqrt(links)
    again = LINK_WEIGHT_INITS[name](shape, index, torch.Generator().manual_seed(2))
    assert torch.equal(values, again)


def test_swi_released_has_the_std_of_swi() -> None:
    """Mean in-degree ``links / out`` equals ``density · fan_in``: the release's SWI is today's SWI."""
    shape, links = (500, 800), 4000
    assert swi_std(shape, links) == pytest.approx(math.sqrt(2 / (links / (500 * 800) * 800)))


@pytest.mark.parametrize("count", [0, 1, 37, 500, 999, 1000])
def test_random_positions_are_distinct_sorted_and_in_range(count) -> None:
    positions = random_positions(1000, count, torch.Generator().manual_seed(count))
    assert positions.numel() == count and torch.equal(positions, positions.unique())
    assert count == 0 or (int(positions.min()) >= 0 and int(positions.max()) < 1000)
    with pytest.raises(ValueError, match="cannot draw"):
        random_positions(10, 11, torch.Generator())


def test_random_positions_are_uniform() -> None:
    """Every position is drawn with probability count/total (chi-square-like bound on 400 draws)."""
    hits = torch.zeros(50)
    for seed in range(400):
        hits[random_positions(50, 5, torch.Generator().manual_seed(seed))] += 1
    expected = 400 * 5 / 50
    assert float(((hits - expected) ** 2 / expected).sum()) < 100  # χ²(49): p < 1e-5 above 100


def slow_released_csti(shape, index, generator, std):
    """The release literally: a random mask, a dense N(0, σ²) draw masked by it, read at the CSTI links."""
    random = random_positions(shape[0] * shape[1], index.numel(), generator)
    dense = torch.zeros(shape[0] * shape[1])
    dense[random] = torch.randn(random.numel(), generator=generator) * std
    return dense[index]


@pytest.mark.parametrize(("shape", "links"), [((40, 60), 120), ((60, 40), 2400), ((1, 30), 3), ((30, 30), 0)])
def test_released_csti_keeps_weights_only_where_the_random_mask_had_links(shape, links) -> None:
    index = random_index(shape, links, seed=3)
    values = LINK_WEIGHT_INITS["released_csti"](shape, index, torch.Generator().manual_seed(4))
    reference = slow_released_csti(shape, index, torch.Generator().manual_seed(4), swi_std(shape, links))
    assert torch.equal(values, reference.float())


def test_released_csti_leaves_most_links_at_zero_at_low_density() -> None:
    shape, links = (784, 784), 6146  # the paper MLP's 784 × 784 layer at 1%
    values = LINK_WEIGHT_INITS["released_csti"](shape, random_index(shape, links, 5), torch.Generator().manual_seed(6))
    share = float((values != 0).float().mean())
    assert 0.002 < share < 0.03  # ≈ density: a CSTI link is non-zero only if the random mask also had it


def test_init_weights_accepts_link_form_names() -> None:
    weight, mask = masked_weight(300, 200, 0.1, seed=7)
    init_weights("kaiming_released", weight, mask, torch.Generator().manual_seed(8))
    index = mask.flatten().nonzero().squeeze(1)
    expected = NormalLinkInit(lambda shape, n: math.sqrt(2 / shape[1]))((200, 300), index,
                                                                       torch.Generator().manual_seed(8))
    assert torch.equal(weight.flatten()[index], expected) and torch.all(weight[~mask] == 0)


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
    assert isinstance(LINK_WEIGHT_INITS["released_csti"], DrawnForRandomMask)
