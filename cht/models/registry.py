"""Model names the CLI and configs accept."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cht.models.cnn import BACKBONES, builder
from cht.models.mlp import build_mlp
from cht.registry import Registry

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
MODELS["mlp"] = build_mlp
for _name in BACKBONES:
    MODELS[_name] = builder(_name)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, dim: int = 1,
                sparse: bool = True, storage: str = "masked") -> nn.Module:
    """Build a registered model; ``sparse=False`` gives the dense (FC) counterpart. Its sparse layers
    start without links, stored by ``storage`` (see :class:`cht.sparse.SparseLinear`)."""
    return MODELS.lookup(name)(input_shape, num_classes, dim=dim, sparse=sparse, storage=storage)


def is_convolutional(name: str) -> bool:
    """Whether model ``name`` has a convolutional trunk (and so takes augmented image batches)."""
    return name in BACKBONES
