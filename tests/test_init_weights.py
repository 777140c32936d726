"""Weight initialisation: SWI's scale (statistical check), Kaiming and Xavier, one value per link."""

import math

import pytest
import torch

from cht.init import WEIGHT_INITS, init_weights
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
