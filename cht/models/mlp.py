"""The paper's MLP: input → 3 hidden layers of width ``dim × input`` → dense classifier, ReLU.

Only the hidden "sandwich" layers are sparse; the classifier stays dense. The fully connected
counterpart comes from the same builder with ``sparse=False``. The same module is the sparse head of
the convolutional models (:mod:`cht.models.cnn`), with its width given explicitly.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from cht.sparse.layer import SparseLinear


class SparseMLP(nn.Module):
    """Flatten → [hidden (sparse or dense) → ReLU] × depth → dense classifier.

    Hidden layers are ``width`` wide, by default ``dim × input_size`` (the paper's MLP).
    """

    def __init__(self, input_size: int, num_classes: int, dim: int = 1, depth: int = 3,
                 sparse: bool = True, storage: str = "masked", width: int | None = None) -> None:
        super().__init__()
        if dim < 1 or depth < 1 or (width is not None and width < 1):
            raise ValueError(f"dim, depth and width must be ≥ 1, got dim={dim}, depth={depth}, width={width}")
        width = width if width is not None else dim * input_size
        sizes = [input_size] + [width] * depth
        self.hidden = nn.ModuleList(SparseLinear(a, b, storage=storage) if sparse else nn.Linear(a, b)
                                    for a, b in zip(sizes[:-1], sizes[1:]))
        self.classifier = nn.Linear(width, num_classes)
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.classifier(x)


def build_mlp(input_shape: tuple[int, ...], num_classes: int, dim: int = 1, sparse: bool = True,
              storage: str = "masked") -> SparseMLP:
    """The paper MLP for inputs of ``input_shape`` (C, H, W); ``storage`` stores its sparse layers."""
    return SparseMLP(math.prod(input_shape), num_classes, dim=dim, sparse=sparse, storage=storage)
