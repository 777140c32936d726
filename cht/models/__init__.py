"""Models: the paper's sparse MLP and the CNNs with sparse heads (VGG16, GoogLeNet, ResNet50/152),
each with its dense counterpart from the same builder."""

from cht.models.cnn import BACKBONES, ConvNet, build_cnn, configure_performance, topology_init_for
from cht.models.mlp import SparseMLP, build_mlp
from cht.models.registry import MODELS, build_model, is_convolutional

__all__ = ["BACKBONES", "MODELS", "ConvNet", "SparseMLP", "build_cnn", "build_mlp", "build_model",
           "configure_performance", "is_convolutional", "topology_init_for"]
