"""The stacked storage of the link interface: a member of a stacked layer behaves as a lone SparseLinear, and the
stacked optimiser as torch.optim.SGD per member."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cht.sparse import SparseLinear
from cht.sparse import links as L
from cht.sparse.stacked import GroupedLinear, GroupedSGD


def test_grouped_sgd_matches_torch_sgd_per_member() -> None:
    generator = torch.Generator().manual_seed(0)
    runs, hyper = 3, [(0.1, 0.9, 1e-4), (0.05, 0.0, 0.0), (0.01, 0.5, 1e-2)]
    stacked = nn.Parameter(torch.randn(runs, 4, 5, generator=generator))
    singles = [nn.Parameter(stacked.detach()[k].clone()) for k in range(runs)]
    grouped = GroupedSGD([stacked], *zip(*hyper))
    references = [torch.optim.SGD([p], lr=lr, momentum=m, weight_decay=wd) for p, (lr, m, wd) in zip(singles, hyper)]
    for _ in range(4):
        gradient = torch.randn(runs, 4, 5, generator=generator)
        stacked.grad = gradient.clone()
        grouped.step()
        for k, (p, optimizer) in enumerate(zip(singles, references)):
            p.grad = gradient[k].clone()
            optimizer.step()
    for k in range(runs):
        torch.testing.assert_close(stacked.detach()[k], singles[k].detach(), rtol=1e-6, atol=1e-7)


def test_member_view_follows_the_link_interface_of_a_sparse_layer() -> None:
    """set_links, link_values, dense_gradient and optimiser state of a member against a lone SparseLinear."""
    generator = torch.Generator().manual_seed(1)
    shape = (3, 4)  # (out, in)
    layers = [SparseLinear(4, 3) for _ in range(2)]
    for layer in layers:
        links = torch.sort(torch.randperm(12, generator=generator)[:6]).values
        layer.set_links(links, torch.randn(6, generator=generator))
    group = GroupedLinear(torch.stack([layer.dense_weight() for layer in layers]),
                          torch.stack([layer.bias.detach() for layer in layers]),
                          torch.stack([L.to_mask(layer.links, shape) for layer in layers]))
    members = [group.member(k, layer.links) for k, layer in enumerate(layers)]
    optimizers = [torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9) for layer in layers]
    grouped = GroupedSGD(list(group.parameters()), [0.1, 0.1], [0.9, 0.9], [0.0, 0.0])
    x = torch.randn(2, 5, 4, generator=generator)
    for member in members:
        member.capture_gradient(member.index == 1)
    group(x).square().sum().backward()
    group.mask_gradient()
    grouped.step()
    for k, (layer, optimizer) in enumerate(zip(layers, optimizers)):
        layer.capture_gradient(k == 1)
        layer(x[k]).square().sum().backward()
        optimizer.step()
        layer.after_step()
    with pytest.raises(RuntimeError, match="no dense gradient"):
        members[0].dense_gradient()
    torch.testing.assert_close(members[1].dense_gradient(), layers[1].dense_gradient())
    # A new link set: one kept link, one new (an empty row and the empty set are edge cases too).
    for new_links in (torch.tensor([int(layers[0].links[0]), 11 if int(layers[0].links[0]) != 11 else 10]),
                      torch.empty(0, dtype=torch.int64)):
        layers[0].set_links(torch.sort(new_links).values, optimizer=optimizers[0])
        members[0].set_links(torch.sort(new_links).values, optimizer=grouped)
        assert torch.equal(members[0].links, layers[0].links) and members[0].n_links == layers[0].n_links
        torch.testing.assert_close(members[0].link_values(), layers[0].link_values())
        assert torch.equal(members[0].adjacency, layers[0].adjacency)
        buffer = optimizers[0].state[layers[0].weight]["momentum_buffer"]
        torch.testing.assert_close(grouped.state_of(group.weight)[0][0], buffer)
    # The other member is untouched.
    torch.testing.assert_close(members[1].link_values(), layers[1].link_values())
