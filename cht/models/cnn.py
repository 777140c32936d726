"""The paper's convolutional models: a dense torchvision trunk and a sparse "sandwich" head.

Only the head's hidden layers are sparse (:class:`cht.sparse.SparseLinear`), so every DST method works on
them unchanged: the evolution engine sees sparse layers, not models. The fully connected counterpart comes
from the same builder with ``sparse=False``.

Heads, with their sources (the authors' repository biomedical-cybernetics/Cannistraci-Hebb-training):

- GoogLeNet: 1024 → 3 sparse layers of width 1024·dim → dense classifier (``model.py``, ``Sparse_GoogleNet``,
  ICLR commit dfbd68d; ``run.py`` there sets ``indim = 1024``, ``hiddim = indim * args.dim``).
- ResNet152: 2048 → 1 sparse layer of width 2048·dim → dense classifier (``model.py``, ``Sparse_ResNet152``,
  commit dfbd68d).
- ResNet50: not in the released code; it follows the ResNet152 pattern (same 2048-feature trunk output).
- VGG16: not in the released code; the authors' preprint describes a 512-1000-1000-1000 sparse head, taken
  here as 512 → 3 sparse layers of width 1000·dim → dense classifier (an assumption where the text is
  silent: dim scales the width as for the other heads).

Trunks are torchvision's definitions. Inputs of side ≤ 32 (CIFAR, the MNIST family) get the CIFAR stem of
the released code: a 3×3, stride-1 first convolution and no stem max-pool; larger inputs (Tiny-ImageNet 64²,
ImageNet 224²) keep torchvision's stem. Any number of input channels works (the first convolution is
rebuilt for it). VGG16 is torchvision's ``vgg16_bn`` (batch norm: plain VGG16 does not train at the paper's
lr 0.1), its pools in ceil mode so that 28×28 inputs reach 1×1 (no change for sides divisible by 32),
then a global average pool to 512 features.

Topology initialisation: CSTI ranks correlations of raw input features, which a head fed by a trunk does
not see. The released code initialises CNN heads at random (``run.py`` at dfbd68d never passes
``--self_correlated_sparse`` for googlenet/resnet152, so ``sparse_layer`` keeps its Erdős–Rényi mask), and
so does this library: :func:`topology_init_for` turns a ``csti`` request for a CNN into ``erdos_renyi``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision import models as tv_models
from torchvision.models.googlenet import BasicConv2d

from cht.models.mlp import SparseMLP

CIFAR_STEM_MAX_SIDE = 32


class ConvNet(nn.Module):
    """Dense convolutional trunk (image → feature vector) followed by a :class:`SparseMLP` head.

    ``trunk_autocast`` (a dtype or None) runs the trunk under autocast; the head always computes in
    float32, so mixed precision never changes the sparse layers' arithmetic. ``channels_last`` feeds the
    trunk NHWC tensors (faster convolutions on CUDA).
    """

    def __init__(self, trunk: nn.Module, head: SparseMLP) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.trunk_autocast: torch.dtype | None = None
        self.channels_last = False

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.trunk_autocast or torch.bfloat16,
                            enabled=self.trunk_autocast is not None):
            features = self.trunk(x)
        return self.head(features.float())


@dataclass(frozen=True)
class Backbone:
    """How to build one trunk and the shape of its head."""

    build_trunk: Callable[[int, bool], nn.Sequential]  # (in_channels, cifar_stem) → trunk
    features: int
    head_width: int  # width at dim 1
    head_depth: int
    source: str


def _vgg16_trunk(in_channels: int, cifar_stem: bool) -> nn.Sequential:
    features = tv_models.vgg16_bn(weights=None).features
    if in_channels != 3:
        features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1)
    for module in features:
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = True
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _googlenet_trunk(in_channels: int, cifar_stem: bool) -> nn.Sequential:
    net = tv_models.GoogLeNet(aux_logits=False, transform_input=False, init_weights=True)
    if cifar_stem:
        net.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, padding=1)
        net.maxpool1 = nn.Identity()
    elif in_channels != 3:
        net.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
    names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
             "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
             "inception5a", "inception5b", "avgpool"]
    return nn.Sequential(*(getattr(net, name) for name in names), nn.Flatten())


def _resnet_trunk(builder: Callable[..., tv_models.ResNet]) -> Callable[[int, bool], nn.Sequential]:
    def build(in_channels: int, cifar_stem: bool) -> nn.Sequential:
        net = builder(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                             net.layer4, net.avgpool, nn.Flatten())
    return build


BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(_vgg16_trunk, 512, 1000, 3, "preprint's 512-1000-1000-1000 head (not in released code)"),
    "googlenet": Backbone(_googlenet_trunk, 1024, 1024, 3, "model.py Sparse_GoogleNet, commit dfbd68d"),
    "resnet50": Backbone(_resnet_trunk(tv_models.resnet50), 2048, 2048, 1,
                         "ResNet152 pattern (ResNet50 not in released code)"),
    "resnet152": Backbone(_resnet_trunk(tv_models.resnet152), 2048, 2048, 1,
                          "model.py Sparse_ResNet152, commit dfbd68d"),
}


def build_cnn(name: str, input_shape: tuple[int, ...], num_classes: int, dim: int = 1,
              sparse: bool = True, storage: str = "masked") -> ConvNet:
    """Backbone ``name`` for (C, H, W) inputs: its trunk, then the paper's head (sparse layers stored by
    ``storage``, or dense)."""
    backbone = BACKBONES[name]
    if len(input_shape) != 3:
        raise ValueError(f"model {name}: input_shape must be (channels, height, width), got {input_shape}")
    if dim < 1:
        raise ValueError(f"model {name}: dim must be ≥ 1, got {dim}")
    channels, height, width = input_shape
    trunk = backbone.build_trunk(channels, max(height, width) <= CIFAR_STEM_MAX_SIDE)
    head = SparseMLP(backbone.features, num_classes, depth=backbone.head_depth, sparse=sparse, storage=storage,
                     width=backbone.head_width * dim)
    return ConvNet(trunk, head)


def builder(name: str) -> Callable[..., ConvNet]:
    """``build_model``-compatible builder of backbone ``name``."""
    def build(input_shape: tuple[int, ...], num_classes: int, dim: int = 1, sparse: bool = True,
              storage: str = "masked") -> ConvNet:
        return build_cnn(name, input_shape, num_classes, dim=dim, sparse=sparse, storage=storage)
    build.__doc__ = f"{name}: dense trunk, head as in {BACKBONES[name].source}."
    return build


def topology_init_for(model: nn.Module, requested: str) -> str:
    """The topology initialiser a model's sparse layers get: CSTI on a CNN head falls back to Erdős–Rényi.

    CSTI needs the raw input features in front of the sparse layer (see :mod:`cht.init.csti`); a CNN head
    sees the trunk's features, and the released code starts CNN heads at random (see the module docstring).
    """
    return "erdos_renyi" if requested == "csti" and isinstance(model, ConvNet) else requested


def configure_performance(model: nn.Module, device: torch.device, mixed_precision: bool | None,
                          channels_last: bool | None) -> None:
    """Turn on bf16 autocast for the trunk and channels-last memory on CUDA (``None``: on for CUDA CNNs).

    Neither touches the sparse head: autocast covers the trunk only, and the head's input is cast back
    to float32. A request for either on an MLP is an error, since it has no trunk.
    """
    if not isinstance(model, ConvNet):
        if mixed_precision or channels_last:
            raise ValueError("mixed_precision and channels_last apply to convolutional models only; "
                             "leave them unset (null) for the MLP")
        return
    on_cuda = device.type == "cuda"
    if mixed_precision if mixed_precision is not None else on_cuda:
        model.trunk_autocast = torch.bfloat16
    if channels_last if channels_last is not None else on_cuda:
        model.channels_last = True
        model.trunk.to(memory_format=torch.channels_last)
