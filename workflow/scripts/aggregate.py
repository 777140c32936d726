"""Tables of every run and their mean ± std over seeds."""

from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.results import (PERFORMANCE_COLUMNS, TOPOLOGY_COLUMNS, anp_curves, learning_curves, run_table,
                         summarise, write_tables)

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        metrics, topology, output = snakemake.input.metrics, snakemake.input.topology, snakemake.output
        runs = run_table(metrics, topology)
        runs.to_csv(output.runs, index=False)
        learning_curves(metrics).to_csv(output.curves, index=False)
        anp_curves(metrics).to_csv(output.anp, index=False)
        for columns, stem in ((PERFORMANCE_COLUMNS, output.summary), (TOPOLOGY_COLUMNS, output.topology)):
            available = {name: column for name, column in columns.items() if name in runs.columns}
            summary = summarise(runs, available, method_order=snakemake.params.methods)
            write_tables(summary, available, Path(stem).with_suffix(""))
        print(Path(output.summary_md).read_text())
        log_outputs(tracker, snakemake)
