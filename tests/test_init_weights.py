"""Weight initialisation: SWI's scale (statistical check), Kaiming and Xavier, masking."""

import math

import pytest
import torch

from cht.init import WEIGHT_INITS, init_weights
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
