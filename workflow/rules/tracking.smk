"""One mlflow parent run per pipeline invocation; every job opens a child run under it.

The parent is created when jobs are about to run (``onstart``: not on dry runs, lint or report) and its
id reaches the jobs through the environment (``CHT_MLFLOW_PARENT_RUN_ID``): local jobs inherit it and
the SLURM executor submits with ``--export=ALL``.
"""

import os
import shlex
import sys
from pathlib import Path

from cht.tracking import PARENT_RUN_ENV, Tracker

PIPELINE_RUN = Tracker(config["experiment"], run_name="pipeline", enabled=config["tracking"],
                       results_dir=Path(RESULTS),
                       tags={"cht.pipeline": "true", "cht.config_hash": CONFIG_HASH,
                             "snakemake.command": shlex.join(sys.argv)})


onstart:
    if PIPELINE_RUN.enabled:
        PIPELINE_RUN.start()
        os.environ[PARENT_RUN_ENV] = PIPELINE_RUN.run_id
        PIPELINE_RUN.log_params(config)
        PIPELINE_RUN.log_dict(config, "config.yaml")


onsuccess:
    PIPELINE_RUN.end("FINISHED")


onerror:
    PIPELINE_RUN.end("FAILED")
