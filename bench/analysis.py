"""Benchmark the topology analysis on the paper MLP (784 → 3 × 1568) with random 1%-dense masks.

Targets on a 2-core CPU: full metrics without the embedding ≤ 30 s, hyperbolic embedding ≤ 60 s.
Writes ``bench/results/analysis.json`` and ``bench/results/analysis.md`` and prints the table.

    python bench/analysis.py [--seed 0] [--density 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from cht.analysis import (angular_separation_index, characteristic_path_length, detect_communities,
                          fit_power_law, hyperbolic_embedding, layered_graph, network_metrics)
from cht.analysis.synthetic import stochastic_block_masks

PAPER_MLP = [784, 1568, 1568, 1568]
TARGET_SECONDS = {"network_metrics (no embedding)": 30.0, "hyperbolic_embedding + ASI": 60.0}
RESULTS = Path(__file__).resolve().parent / "results"


def timed(task: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = task()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=float, default=0.01)
    args = parser.parse_args()

    masks = stochastic_block_masks(PAPER_MLP, p_in=args.density, p_out=args.density, seed=args.seed)
    rows: list[dict[str, Any]] = []

    def record(name: str, task: Callable[[], Any], part: bool = False) -> Any:
        """Time one step; ``part`` marks a component already counted inside network_metrics."""
        seconds, value = timed(task)
        target = TARGET_SECONDS.get(name)
        rows.append({"step": name, "part_of_network_metrics": part, "seconds": round(seconds, 3),
                     "target_seconds": target,
                     "within_target": None if target is None else seconds <= target})
        return value

    metrics = record("network_metrics (no embedding)", lambda: network_metrics(masks, seed=args.seed))
    graph = record("layered_graph", lambda: layered_graph(masks), part=True)
    record("fit_power_law", lambda: fit_power_law(graph.degree), part=True)
    nx_graph = nx.from_scipy_sparse_array(graph.adjacency)
    record("detect_communities (Louvain)", lambda: detect_communities(nx_graph, seed=args.seed), part=True)
    record("characteristic_path_length", lambda: characteristic_path_length(graph.adjacency), part=True)
    record("square_clustering", lambda: nx.square_clustering(nx_graph), part=True)
    embedding = record("hyperbolic_embedding + ASI", lambda: angular_separation_index(
        hyperbolic_embedding(masks, seed=args.seed).angle, graph.layer, seed=args.seed))

    summary = {
        "network": {"layer_sizes": PAPER_MLP, "density": args.density, "seed": args.seed,
                    "links": sum(metrics["n_links_per_layer"]), "nodes": graph.n_nodes},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "timings": rows,
        "metrics": {key: metrics[key] for key in ("anp", "gamma", "gamma_reason", "modularity",
                                                  "n_communities", "char_path_length", "square_clustering")}
        | {"asi_layers": embedding},
    }
    table = ["| step | seconds | target (s) |", "|---|---:|---:|"]
    table += [f"| {'↳ ' if row['part_of_network_metrics'] else ''}{row['step']} | {row['seconds']:.2f} "
              f"| {row['target_seconds'] or ''} |" for row in rows]
    markdown = (f"Analysis of the paper MLP {' → '.join(map(str, PAPER_MLP))} at density {args.density} "
                f"({summary['network']['links']} links), {os.cpu_count()} CPUs, seed {args.seed}.\n\n"
                + "\n".join(table) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "analysis.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "analysis.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
