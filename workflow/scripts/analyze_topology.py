"""Network-science metrics of the final sparse layers of every run of one setting."""

import json
from pathlib import Path

from jobs import job_tracker, log_outputs, logged

from cht.analysis.metrics import run_topology
from cht.results import scalar_metrics

with logged(snakemake):
    tracker = job_tracker(snakemake)
    settings = snakemake.params.analysis
    with tracker.run():
        for masks_path, topology_path in zip(snakemake.input.masks, snakemake.output.topology):
            topology = run_topology(masks_path, embedding=settings["embedding"], seed=settings["seed"],
                                    path_sources=settings["path_sources"])
            Path(topology_path).write_text(json.dumps(topology, indent=2))
            run = Path(topology_path).parent
            label = f"{run.parent.name}.{run.name}"  # method.seedN
            tracker.log_metrics({f"{label}/{key}": value for key, value in scalar_metrics(topology).items()},
                                step=0)
        log_outputs(tracker, snakemake)
