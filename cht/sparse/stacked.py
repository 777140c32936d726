"""The third storage of the link interface: member ``k`` of ``K`` linear layers stacked along a run axis.

Grouped training (:mod:`cht.grouped`) keeps the weights of ``K`` runs in one ``(K, out, in)`` tensor so that
one batched product serves them all. :class:`GroupMember` is run ``k``'s layer in that stack: it speaks the
link interface of :class:`cht.sparse.SparseLinear` (``links``, ``link_values()``, ``set_links()`` carrying
weights and optimiser state, ``capture_gradient()``/``dense_gradient()``, ``adjacency``), so the evolution
engine, the removal and regrowth rules and the analysis use it as they use a ``masked`` or ``sparse`` layer.
Its storage is masked: slice ``k`` of the stacked weight, kept zero off slice ``k`` of a stacked mask.
:class:`GroupedSGD` is the optimiser whose per-member state :meth:`GroupMember.set_links` carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cht.sparse import links as L
from cht.sparse.layer import LinkGeometry


class GroupedLinear(nn.Module):
    """``K`` linear layers stacked: ``y_k = x_k W_kᵀ + b_k`` for every member ``k`` in one batched product.

    ``weight`` is ``(K, out, in)`` (layer convention per member), ``bias`` ``(K, out)``; ``mask`` (bool,
    same shape as ``weight``) keeps each member's weights zero off its links, or is ``None`` for a dense
    layer. Member ``k`` is exposed to the evolution engine by :meth:`member`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.runs, self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.register_buffer("mask", None if mask is None else mask.clone())
        self.capturing = [False] * self.runs
        self.captured: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, B, in)``, or ``(B, in)`` shared by all members (evaluation)."""
        if x.dim() == 2:
            x = x.expand(self.runs, *x.shape)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    @torch.no_grad()
    def mask_gradient(self) -> None:
        """Keep the unmasked gradient when a member asked for it, then zero the gradient off the links (as
        :class:`SparseLinear`'s masked storage does in its gradient hook)."""
        if self.mask is None or self.weight.grad is None:
            return
        if any(self.capturing):
            self.captured = self.weight.grad.clone()
        self.weight.grad.mul_(self.mask)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mask is not None:
            self.weight.mul_(self.mask)

    def member(self, index: int, links: torch.Tensor) -> GroupMember:
        return GroupMember(self, index, links)


class GroupMember(LinkGeometry):
    """Member ``index`` of a :class:`GroupedLinear`, with the link interface of :class:`SparseLinear`.

    The evolution engine, removal and regrowth rules and analysis code use it as they use a sparse layer:
    ``links``, ``link_values()``, ``set_links()`` (carrying weights and the group optimiser's state of this
    slice), ``capture_gradient()``/``dense_gradient()`` (slice of the stacked gradient), ``adjacency``.
    """

    def __init__(self, group: GroupedLinear, index: int, links: torch.Tensor) -> None:
        self.group = group
        self.index = index
        self.in_features = group.in_features
        self.out_features = group.out_features
        self.links = links.to(device=group.weight.device, dtype=torch.int64)

    def link_values(self) -> torch.Tensor:
        return self.group.weight.detach()[self.index].reshape(-1)[self.links]

    def dense_weight(self) -> torch.Tensor:
        return self.group.weight.detach()[self.index]

    @torch.no_grad()
    def set_links(self, links: torch.Tensor, values: torch.Tensor | None = None,
                  optimizer: GroupedSGD | None = None) -> None:
        """As :meth:`SparseLinear.set_links`: kept links keep weight and optimiser state, new ones start at 0."""
        links = links.to(device=self.links.device, dtype=torch.int64)
        L.check_links(links, self.shape)
        mask = L.to_mask(links, self.shape)
        self.links = links
        self.group.mask[self.index] = mask
        weight = self.group.weight.detach()[self.index]
        if values is None:
            weight.mul_(mask)
        else:
            weight.zero_().view(-1)[links] = values.to(weight)
        for state in optimizer.state_of(self.group.weight) if optimizer is not None else []:
            state[self.index].mul_(mask) if values is None else state[self.index].zero_()

    def capture_gradient(self, enabled: bool) -> None:
        self.group.capturing[self.index] = enabled
        if not any(self.group.capturing):
            self.group.captured = None

    def dense_gradient(self) -> torch.Tensor:
        if self.group.captured is None or not self.group.capturing[self.index]:
            raise RuntimeError("no dense gradient captured: call capture_gradient(True) before the update step's "
                               "backward pass")
        return self.group.captured[self.index]

    @torch.no_grad()
    def after_step(self) -> None:
        self.group.weight[self.index].mul_(self.group.mask[self.index])


class GroupedSGD:
    """``torch.optim.SGD`` (momentum, weight decay, no dampening or Nesterov) on stacked parameters, with
    per-run learning rate, momentum and weight decay (each a ``(K,)`` tensor broadcast over the run axis).

    Per element it computes what SGD computes: ``g ← g + wd·p``; ``buf ← g`` at the first step, else
    ``buf ← m·buf + g``; ``p ← p − lr·buf``.
    """

    def __init__(self, params: Sequence[nn.Parameter], lr: Sequence[float], momentum: Sequence[float],
                 weight_decay: Sequence[float]) -> None:
        self.params = list(params)
        device = self.params[0].device
        self.lr = torch.tensor(lr, dtype=self.params[0].dtype, device=device)
        self.momentum = torch.tensor(momentum, dtype=self.params[0].dtype, device=device)
        self.weight_decay = torch.tensor(weight_decay, dtype=self.params[0].dtype, device=device)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def set_lr(self, lr: Sequence[float]) -> None:
        self.lr.copy_(torch.tensor(lr, dtype=self.lr.dtype))

    def state_of(self, parameter: torch.Tensor) -> list[torch.Tensor]:
        """The state tensors of ``parameter`` (its momentum buffer once the first step made it)."""
        return [buffer for p, buffer in zip(self.params, self.buffers) if p is parameter and buffer is not None]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for index, p in enumerate(self.params):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad + self.weight_decay.view(shape) * p
            buffer = self.buffers[index]
            if buffer is None:
                buffer = self.buffers[index] = grad.clone()
            else:
                buffer.mul_(self.momentum.view(shape)).add_(grad)
            p.sub_(self.lr.view(shape) * buffer)
