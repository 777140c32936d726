"""Learning curves and area across epochs of one model/width/density, one panel per dataset."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_aae_bars, plot_learning_curves
from cht.results import read_table, select

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        curves = select(read_table(snakemake.input.curves), **dict(snakemake.wildcards.items()))
        output = snakemake.output
        plot_learning_curves(curves, Path(output.learning_curves[0]).with_suffix(""))
        plot_aae_bars(curves, Path(output.aae_bars[0]).with_suffix(""))
        log_outputs(tracker, snakemake)
