"""Models: the paper's sparse MLP (and its dense counterpart); CNNs with sparse heads plug in here."""

from cht.models.mlp import SparseMLP, build_mlp
from cht.models.registry import MODELS, build_model

__all__ = ["MODELS", "SparseMLP", "build_mlp", "build_model"]
