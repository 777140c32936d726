"""Sparse layer invariants, optimiser-state masking and exact link counts."""

import pytest
import torch

from cht.init.topology import InitContext, erdos_renyi_mask
from cht.sparse import SparseLinear, apply_masks, link_counts, mask_optimizer_state


def random_layer(n_in: int, n_out: int, density: float, seed: int) -> SparseLinear:
    generator = torch.Generator().manual_seed(seed)
    layer = SparseLinear(n_in, n_out)
    n_links = round(density * n_in * n_out)
    layer.set_mask(erdos_renyi_mask(n_in, n_out, n_links, InitContext(0, generator)).t())
    return layer


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_weights_and_gradients_stay_on_mask_over_many_steps(optimizer_name: str) -> None:
    torch.manual_seed(0)
    layer = random_layer(30, 20, 0.2, seed=1)
    optimizer = (torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
                 if optimizer_name == "sgd" else torch.optim.Adam(layer.parameters(), lr=0.01))
    for _ in range(50):
        optimizer.zero_grad()
        layer(torch.randn(8, 30)).pow(2).sum().backward()
        assert torch.all(layer.weight.grad[~layer.mask] == 0)
        optimizer.step()
        apply_masks([layer])
        assert torch.all(layer.weight[~layer.mask] == 0)
    assert torch.count_nonzero(layer.weight[layer.mask]) > 0


def test_changing_the_mask_masks_momentum_and_adam_moments() -> None:
    torch.manual_seed(0)
    layer = random_layer(16, 12, 0.5, seed=2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(4, 16)).sum().backward()
        optimizer.step()
    new_mask = layer.mask.clone()
    dropped = new_mask.nonzero()[:10]
    new_mask[dropped[:, 0], dropped[:, 1]] = False
    layer.set_mask(new_mask)
    mask_optimizer_state(optimizer, [layer])
    state = optimizer.state[layer.weight]
    assert torch.all(state["exp_avg"][~new_mask] == 0) and torch.all(state["exp_avg_sq"][~new_mask] == 0)
    # With state masked, an Adam step cannot move a removed weight even without re-masking weights.
    optimizer.zero_grad()
    layer(torch.randn(4, 16)).sum().backward()
    optimizer.step()
    assert torch.all(layer.weight[~new_mask] == 0)


def test_dense_gradient_is_captured_only_when_asked() -> None:
    layer = random_layer(10, 10, 0.3, seed=3)
    layer(torch.randn(5, 10)).sum().backward()
    assert layer.dense_grad is None
    layer.capture_dense_grad = True
    layer.weight.grad = None
    layer(torch.randn(5, 10)).sum().backward()
    assert layer.dense_grad is not None
    assert torch.count_nonzero(layer.dense_grad[~layer.mask]) > 0
    assert torch.equal(layer.weight.grad, layer.dense_grad * layer.mask)


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


def test_erdos_renyi_mask_has_exact_count_and_is_reproducible() -> None:
    make = lambda seed: erdos_renyi_mask(50, 70, 123, InitContext(0, torch.Generator().manual_seed(seed)))
    assert int(make(0).sum()) == 123
    assert torch.equal(make(0), make(0))
    assert not torch.equal(make(0), make(1))
