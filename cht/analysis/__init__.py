"""Network-science analysis of trained sparse networks: activity, degrees, communities, geometry.

Names are imported on first use: the training loop needs only the cheap activity counts of
:mod:`cht.analysis.graph`, and should not pay for scikit-learn, networkx or powerlaw at start-up.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "HyperbolicEmbedding": "embedding", "angular_separation_index": "embedding", "hyperbolic_embedding": "embedding",
    "ActiveNeurons": "graph", "LayeredGraph": "graph", "active_neurons": "graph", "layered_graph": "graph",
    "characteristic_path_length": "metrics", "detect_communities": "metrics", "network_metrics": "metrics",
    "PowerLawFit": "power_law", "fit_power_law": "power_law",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'cht.analysis' has no attribute {name!r}")
    return getattr(import_module(f"cht.analysis.{_HOMES[name]}"), name)
