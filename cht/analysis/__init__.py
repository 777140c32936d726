"""Network-science analysis of trained sparse networks: activity, degrees, communities, geometry."""

from cht.analysis.embedding import HyperbolicEmbedding, angular_separation_index, hyperbolic_embedding
from cht.analysis.graph import ActiveNeurons, LayeredGraph, active_neurons, layered_graph
from cht.analysis.metrics import characteristic_path_length, detect_communities, network_metrics
from cht.analysis.power_law import PowerLawFit, fit_power_law

__all__ = [
    "ActiveNeurons",
    "HyperbolicEmbedding",
    "LayeredGraph",
    "PowerLawFit",
    "active_neurons",
    "angular_separation_index",
    "characteristic_path_length",
    "detect_communities",
    "fit_power_law",
    "hyperbolic_embedding",
    "layered_graph",
    "network_metrics",
]
