"""Prepare a dataset (fetch if needed, verify checksums) and write its manifest."""

import json

from jobs import job_tracker, log_outputs, logged

from cht.data import describe, prepare_dataset

with logged(snakemake):
    tracker = job_tracker(snakemake)
    with tracker.run():
        dataset = snakemake.wildcards.dataset
        prepare_dataset(dataset, snakemake.params.data_root, sources=snakemake.params.sources)
        manifest = describe(dataset, snakemake.params.data_root)
        print(json.dumps(manifest, indent=2))
        with open(snakemake.output.manifest, "w") as file:
            json.dump(manifest, file, indent=2)
        tracker.set_tags({"cht.dataset_checksum": manifest["checksum"]})
        log_outputs(tracker, snakemake)
