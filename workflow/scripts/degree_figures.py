"""Degree distribution of every sparse method in one setting (first seed): of the final topology (rule
degree_figures) or initial and final together (rule degree_initial_final_figures)."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_degree_distribution, plot_degree_initial_final
from cht.io import load_tensors

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        for method, png in zip(snakemake.params.methods, snakemake.output.degrees[::2]):
            masks = load_tensors(snakemake.input[f"masks_{method}"])
            stem = Path(png).with_suffix("")
            initial = snakemake.input.get(f"initial_masks_{method}")
            if initial is None:
                plot_degree_distribution(masks, stem, label=method)
            else:
                plot_degree_initial_final(load_tensors(initial), masks, stem, label=method)
        log_outputs(tracker, snakemake)
