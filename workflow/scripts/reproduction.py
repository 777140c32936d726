"""The grid's results beside the published tables (comparison in cht.analysis.reproduction)."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.reproduction import rank_agreement, reproduction_figure, reproduction_table, write_reproduction
from cht.config import RUN_KEY
from cht.results import read_table

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        table = reproduction_table(read_table(snakemake.input.runs, RUN_KEY))
        write_reproduction(table, rank_agreement(table), Path(snakemake.output.csv).with_suffix(""))
        for path in (snakemake.output.figure, snakemake.output.figure_pdf):
            reproduction_figure(table, path)
        print(Path(snakemake.output.md).read_text())
        log_outputs(tracker, snakemake)
