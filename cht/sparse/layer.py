"""A linear layer that speaks in links: the interface between sparse storage and everything else.

The DST engine, initialisers, analysis and checkpoints see a layer only through its links:

* :attr:`SparseLinear.links` — sorted flat positions ``o * in_features + i`` (layer convention
  ``(out, in)``, see :mod:`cht.sparse.links`);
* :meth:`SparseLinear.link_values` — the weights of those links, in the same order;
* :meth:`SparseLinear.set_links` — the new link set after an update: links that stay keep their weight
  and optimiser state, new links start at zero with fresh state;
* :meth:`SparseLinear.dense_gradient` — ``∂L/∂W`` at every position, computed only at the update steps
  of gradient-based rules (RigL, GraNet, MEST) that asked for it with :meth:`capture_gradient`;
* :attr:`SparseLinear.adjacency` — a dense boolean ``(in, out)`` view for topology code on small layers.

Two storages hold and compute the layer behind that interface:

* ``masked`` — a dense weight kept zero off a boolean mask: one dense product per step, which is what a
  GPU does best and what dense-ish layers need;
* ``sparse`` — only the link values, with CSR indices by output neuron and, kept in step, by input
  neuron: forward, input gradient and link gradient each cost O(batch × links) (sparse-dense products
  and a sampled dense-dense product), so a 1%-dense layer costs about 1% of its dense twin.

A third storage, ``stacked``, holds one run's layer as a slice of ``K`` runs' layers stacked for grouped
training (:mod:`cht.sparse.stacked`). All give the same function. A ``SparseLinear`` switches storage in
place (:meth:`SparseLinear.to_storage`), carrying its weights and its optimiser state, and a checkpoint of
one storage loads into the other.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from cht.sparse import links as L

STORAGES = ("masked", "sparse")

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class LinkGeometry:
    """The parts of the link interface that follow from the links and the sizes alone (shared by
    :class:`SparseLinear` and the members of a stacked layer, :class:`cht.sparse.stacked.GroupMember`)."""

    in_features: int
    out_features: int
    links: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """``(out_features, in_features)``: the layer convention of :attr:`links`."""
        return self.out_features, self.in_features

    @property
    def n_links(self) -> int:
        return int(self.links.numel())

    @property
    def density(self) -> float:
        return self.n_links / (self.in_features * self.out_features)

    @property
    def adjacency(self) -> torch.Tensor:
        """Bipartite adjacency ``(in, out)``: entry ``[i, j]`` links input ``i`` to output ``j``."""
        return L.to_adjacency(self.links, self.shape)


class SparseLinear(LinkGeometry, nn.Module):
    """``y = x Wᵀ + b`` with ``W`` of shape ``(out, in)`` holding weights only at its links.

    A new layer has no links; a topology initialiser gives it its links and values with
    :meth:`set_links`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, storage: str = "masked") -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"SparseLinear needs positive sizes, got in={in_features}, out={out_features}")
        _check_storage(storage)
        self.in_features = in_features
        self.out_features = out_features
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("links", torch.empty(0, dtype=torch.int64))
        # Derived from the links, rebuilt whenever they change; moved with the module, never saved.
        for name in ("mask", "_row_ptr", "_cols", "_by_input", "_col_ptr", "_rows_by_input"):
            self.register_buffer(name, None, persistent=False)
        self.storage = storage
        self._capturing = False
        self._captured: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
        self._store(torch.empty(0))

    # ----- the link interface -------------------------------------------------------------------

    @property
    def parameter(self) -> nn.Parameter:
        """The parameter holding the link weights (dense ``weight`` or ``values``)."""
        return self.weight if self.storage == "masked" else self.values

    def link_values(self) -> torch.Tensor:
        """Weights of :attr:`links`, in the same order (detached)."""
        if self.storage == "masked":
            return self.weight.detach().view(-1)[self.links]
        return self.values.detach()

    def dense_weight(self) -> torch.Tensor:
        """The weight matrix ``(out, in)``, zero off the links (detached; allocates on the sparse storage)."""
        if self.storage == "masked":
            return self.weight.detach()
        return self._scatter(self.values.detach())

    @torch.no_grad()
    def set_links(self, links: torch.Tensor, values: torch.Tensor | None = None,
                  optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make ``links`` (sorted flat positions) the layer's links.

        Without ``values``, a link that was already present keeps its weight and optimiser state and a new
        one starts at 0 with zero state; with ``values`` the links get exactly those weights and fresh
        state (initialisation).
        """
        links = links.to(device=self.links.device, dtype=torch.int64)
        L.check_links(links, self.shape)
        if values is not None:
            values = values.to(device=self.links.device, dtype=self.parameter.dtype)
            if values.shape != links.shape:
                raise ValueError(f"values has shape {tuple(values.shape)} for {links.numel()} links")
        old_links = self.links
        self.links = links
        if self.storage == "masked":
            self.mask = L.to_mask(links, self.shape)
            if values is None:
                self.weight.mul_(self.mask)
            else:
                self.weight.zero_().view(-1)[links] = values
            for state in _state_tensors(optimizer, self.weight, self.shape):
                state.mul_(self.mask) if values is None else state.zero_()
        else:
            new_values = values if values is not None else _carry(old_links, self.values.detach(), links)
            # A new parameter, not new data in the old one: autograd remembers a leaf's shape.
            old = self.values
            self.values = nn.Parameter(new_values.clone().contiguous())
            self._index_structures()
            if optimizer is not None:
                state = optimizer.state.pop(old, {})
                _swap_parameter(optimizer, old, self.values)
                optimizer.state[self.values] = {
                    key: (torch.zeros_like(new_values) if values is not None else _carry(old_links, value, links))
                    if torch.is_tensor(value) and value.dim() == 1 and value.numel() == old_links.numel() else value
                    for key, value in state.items()}

    def capture_gradient(self, enabled: bool) -> None:
        """Keep what the next backward pass needs for :meth:`dense_gradient` (only when ``enabled``)."""
        self._capturing = enabled
        if not enabled:
            self._captured = None

    def dense_gradient(self) -> torch.Tensor:
        """``∂L/∂W`` ``(out, in)`` at every position for the batch of the last captured backward pass."""
        if self._captured is None:
            raise RuntimeError("no dense gradient captured: call capture_gradient(True) before the update step's "
                               "backward pass (Evolution.capture_gradients does this for methods that need it)")
        if isinstance(self._captured, tuple):
            grad_output, inputs = self._captured
            return grad_output.t() @ inputs
        return self._captured

    @torch.no_grad()
    def after_step(self) -> None:
        """Restore the invariant after an optimiser step: on the masked storage, zero the weights off the links."""
        if self.storage == "masked":
            self.weight.mul_(self.mask)

    @torch.no_grad()
    def to_storage(self, storage: str, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Switch storage in place, carrying weights and the optimiser's state of this layer."""
        _check_storage(storage)
        if storage == self.storage:
            return
        old = self.parameter
        values = self.link_values()
        states = dict(optimizer.state.pop(old, {})) if optimizer is not None else {}
        self.storage = storage
        self._store(values)
        new = self.parameter
        if optimizer is not None:
            _swap_parameter(optimizer, old, new)
            optimizer.state[new] = {key: self.state_in_layout(value, storage) for key, value in states.items()}

    # ----- storage --------------------------------------------------------------------------------

    def _store(self, values: torch.Tensor) -> None:
        """Create the storage's parameter (and index structures) holding ``values`` at :attr:`links`."""
        for name in ("weight", "values"):
            if name in self._parameters:
                del self._parameters[name]
        device = self.links.device
        if self.storage == "masked":
            self.mask = L.to_mask(self.links, self.shape)
            weight = torch.zeros(self.shape, device=device, dtype=values.dtype if values.numel() else torch.float32)
            weight.view(-1)[self.links] = values
            self.weight = nn.Parameter(weight)
            self.weight.register_hook(self._mask_gradient)
        else:
            self.mask = None
            self.values = nn.Parameter(values.clone().to(device).contiguous())
            self._index_structures()

    def state_in_layout(self, value: torch.Tensor, storage: str) -> torch.Tensor:
        """An optimiser state tensor of the old storage in the layout of ``storage``."""
        if not torch.is_tensor(value) or value.dim() == 0:
            return value
        if storage == "sparse" and value.shape == self.shape:
            return value.reshape(-1)[self.links].clone()
        if storage == "masked" and value.dim() == 1 and value.numel() == self.n_links:
            return self._scatter(value)
        return value

    def _index_structures(self) -> None:
        """CSR by output neuron (the link order) and CSR of the transpose, kept in step with the links."""
        rows, cols = L.rows_cols(self.links, self.in_features)
        self._row_ptr = _pointers(rows, self.out_features)
        self._cols = cols
        self._by_input = torch.argsort(cols * self.out_features + rows)
        self._col_ptr = _pointers(cols, self.in_features)
        self._rows_by_input = rows[self._by_input]

    def _scatter(self, values: torch.Tensor) -> torch.Tensor:
        dense = torch.zeros(self.shape, dtype=values.dtype, device=values.device)
        dense.view(-1)[self.links] = values
        return dense

    def _csr(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self._row_ptr, self._cols, values, self.shape, check_invariants=False)

    def _csr_transposed(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self._col_ptr, self._rows_by_input, values[self._by_input],
                                       (self.in_features, self.out_features), check_invariants=False)

    def _mask_gradient(self, grad: torch.Tensor) -> torch.Tensor:
        if self._capturing:
            self._captured = grad.detach().clone()
        return grad * self.mask

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Load links and weights saved by either storage. The sparse storage gets a new parameter (its
        size may change): build optimisers after loading."""
        links_key = prefix + "links"
        if links_key in state_dict:
            links = state_dict[links_key].to(self.links.device)
            weight = state_dict.pop(prefix + "weight", None)
            values = state_dict.pop(prefix + "values", None)
            if values is None:
                values = weight.reshape(-1)[links.to(weight.device)] if weight is not None else torch.zeros(links.numel())
            with torch.no_grad():
                self.links = links
                values = values.to(device=links.device, dtype=self.parameter.dtype)
                if self.storage == "masked":
                    self.mask = L.to_mask(links, self.shape)
                    self.weight.zero_().view(-1)[links] = values
                else:
                    self.values = nn.Parameter(values.clone().contiguous())
                    self._index_structures()
            state_dict[prefix + ("weight" if self.storage == "masked" else "values")] = self.parameter.detach()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.storage == "masked":
            return F.linear(x, self.weight, self.bias)
        leading = x.shape[:-1]
        y = _SparseProduct.apply(x.reshape(-1, self.in_features).to(self.values.dtype), self.values, self)
        y = y.reshape(*leading, self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, links={self.n_links}, "
                f"density={self.density:.4f}, storage={self.storage}, bias={self.bias is not None}")


class _SparseProduct(torch.autograd.Function):
    """``x Wᵀ`` from link values: CSR products forward and for the input gradient, a sampled product
    (only at the links) for the value gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, layer: SparseLinear) -> torch.Tensor:
        ctx.save_for_backward(x, values)
        ctx.layer = layer
        return (layer._csr(values) @ x.t().contiguous()).t()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, values = ctx.saved_tensors
        layer: SparseLinear = ctx.layer
        grad_t = grad_output.t().contiguous()
        grad_x = grad_values = None
        if ctx.needs_input_grad[0]:
            grad_x = (layer._csr_transposed(values) @ grad_t).t()
        if ctx.needs_input_grad[1]:
            grad_values = torch.sparse.sampled_addmm(layer._csr(values), grad_t, x, beta=0.0).values()
        if layer._capturing:
            layer._captured = (grad_output.detach(), x.detach())
        return grad_x, grad_values, None


def _check_storage(storage: str) -> None:
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")


def _pointers(keys: torch.Tensor, n: int) -> torch.Tensor:
    pointers = torch.zeros(n + 1, dtype=torch.int64, device=keys.device)
    pointers[1:] = torch.bincount(keys, minlength=n).cumsum(0)
    return pointers


def _carry(old_links: torch.Tensor, old_values: torch.Tensor, links: torch.Tensor) -> torch.Tensor:
    """Values at ``links``: the old value where the position was already a link, else 0."""
    values = torch.zeros(links.shape, dtype=old_values.dtype, device=old_values.device)
    if old_links.numel() and links.numel():
        slot = torch.searchsorted(old_links, links).clamp(max=old_links.numel() - 1)
        present = old_links[slot] == links
        values[present] = old_values[slot[present]]
    return values


def _swap_parameter(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter) -> None:
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]


def _state_items(optimizer: torch.optim.Optimizer | None, parameter: torch.Tensor) -> list:
    if optimizer is None:
        return []
    return [(key, value) for key, value in optimizer.state.get(parameter, {}).items() if torch.is_tensor(value)]


def _state_tensors(optimizer: torch.optim.Optimizer | None, parameter: torch.Tensor,
                   shape: tuple[int, int]) -> list[torch.Tensor]:
    return [value for _, value in _state_items(optimizer, parameter) if value.shape == shape]


def sparse_layers(model: nn.Module) -> list[SparseLinear]:
    """The model's sparse layers in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, SparseLinear)]


def iter_sparse_named(model: nn.Module) -> Iterator[tuple[str, SparseLinear]]:
    """``(name, layer)`` pairs of the model's sparse layers, in order."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, SparseLinear))
