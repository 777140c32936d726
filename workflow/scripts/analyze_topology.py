"""Network-science metrics of one run's final sparse layers."""

import json

import torch
from jobs import job_tracker, log_outputs, logged

from cht.analysis import network_metrics
from cht.results import scalar_metrics

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        masks = torch.load(snakemake.input.masks, weights_only=True)
        settings = snakemake.params.analysis
        # A dense model has no sparse layers: its topology is not analysed.
        topology = network_metrics(masks, embedding=settings["embedding"], seed=settings["seed"],
                                   path_sources=settings["path_sources"]) if masks else {}
        with open(snakemake.output.topology, "w") as file:
            json.dump(topology, file, indent=2)
        tracker.log_metrics(scalar_metrics(topology), step=0)
        log_outputs(tracker, snakemake)
