"""The claims table of the grid's runs (statistics in cht.analysis.claims)."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.claims import claims_table, write_claims
from cht.config import RUN_KEY
from cht.results import read_table

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        runs = read_table(snakemake.input.runs, RUN_KEY)
        table = claims_table(runs, snakemake.params.subject, snakemake.params.baselines)
        write_claims(table, Path(snakemake.output.csv).with_suffix(""))
        print(Path(snakemake.output.md).read_text())
        log_outputs(tracker, snakemake)
