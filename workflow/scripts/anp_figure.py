"""Active-neuron proportion over topology-evolution steps in one setting, one line per method."""

from pathlib import Path

import pandas as pd
from jobs import job_tracker, log_outputs, logged

from cht.analysis.figures import plot_anp_over_steps
from cht.results import select

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        anp = select(pd.read_csv(snakemake.input.anp), **dict(snakemake.wildcards.items()))
        plot_anp_over_steps(anp, Path(snakemake.output.anp[0]).with_suffix(""))
        log_outputs(tracker, snakemake)
