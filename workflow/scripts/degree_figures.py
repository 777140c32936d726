"""Degree distribution of the final topology of every sparse method in one setting (first seed)."""

from pathlib import Path

import torch
from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_degree_distribution

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        for method, png in zip(snakemake.params.methods, snakemake.output.degrees[::2]):
            masks = torch.load(snakemake.input[f"masks_{method}"], weights_only=True)
            plot_degree_distribution(masks, Path(png).with_suffix(""), label=method)
        log_outputs(tracker, snakemake)
