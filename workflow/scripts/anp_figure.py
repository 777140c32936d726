"""Active-neuron proportion in one setting, one line per method: over evolution steps (rule anp_figure) or
over epochs from initialisation on (rule anp_epochs_figure)."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_anp_over_epochs, plot_anp_over_steps
from cht.results import read_table, select

PLOTS = {"anp_figure": plot_anp_over_steps, "anp_epochs_figure": plot_anp_over_epochs}

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        anp = select(read_table(snakemake.input.anp), **dict(snakemake.wildcards.items()))
        PLOTS[snakemake.rule](anp, Path(snakemake.output.anp[0]).with_suffix(""))
        log_outputs(tracker, snakemake)
