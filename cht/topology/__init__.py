"""Cannistraci-Hebb link prediction on sparse layers: scores of non-links and how to pick regrown links.

A layer is the bipartite graph of its bool mask (n_in, n_out). Typical regrowth step::

    scores = link_scores(mask, "CH3-L3")                       # 0 on links
    grown = select_top_n(scores, ~mask, n_removed, generator)  # exact top-n, reproducible ties

Layers too large for a dense score matrix take :func:`top_n_links` instead: the same choice, from
link lists, scored row by row.

:func:`select_iclr_threshold` reproduces the ICLR 2024 release's cut-off rule and
:func:`sample_proportional` the soft (sampling) rule of CHTs.
"""

from cht.topology.rules import available_rules
from cht.topology.scores import count_l3_paths, default_chunk_paths, link_scores
from cht.topology.selection import sample_proportional, select_iclr_threshold, select_top_n, tie_keys
from cht.topology.top_links import TopLinks, top_n_links

__all__ = [
    "TopLinks",
    "available_rules",
    "count_l3_paths",
    "default_chunk_paths",
    "link_scores",
    "sample_proportional",
    "select_iclr_threshold",
    "select_top_n",
    "tie_keys",
    "top_n_links",
]
