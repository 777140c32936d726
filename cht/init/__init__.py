"""Initial topologies (which links exist) and initial weights (their values)."""

from cht.init.brf import bipartite_receptive_field
from cht.init.csti import feature_correlation
from cht.init.topology import TOPOLOGY_INITS, InitContext, erdos_renyi_links, init_topology, register_topology_init
from cht.init.weights import BIAS_INITS, WEIGHT_INITS, init_bias, init_weights, register_weight_init

__all__ = [
    "BIAS_INITS",
    
    "TOPOLOGY_INITS",
    "WEIGHT_INITS",
    "InitContext",
    "bipartite_receptive_field",
    "erdos_renyi_links",
    "feature_correlation",
    "init_bias",
    "init_topology",
    "init_weights",
    "register_topology_init",
    "register_weight_init",
]
