"""One mlflow parent run per pipeline invocation; every job opens a child run under it.

The parent is created when jobs are about to run (``onstart``: not on dry runs, lint or report) and its
id reaches the jobs through the environment (``CHT_MLFLOW_PARENT_RUN_ID``): local jobs inherit it and
the SLURM executor submits with ``--export=ALL``. A training job resumed from its checkpoint moves its run
under the current parent. The parent ends FINISHED, FAILED, or KILLED when the invocation was interrupted
(Ctrl-C, SIGTERM); one that was hard-killed is closed as KILLED when the next invocation starts.
"""

import os
import shlex
import sys
from pathlib import Path

from cht.processes import InterruptWatch
from cht.tracking import PARENT_RUN_ENV, Tracker
from cht.tracking_spool import sync

PIPELINE_RUN = Tracker(config["experiment"], run_name=f"pipeline · {' '.join(config['datasets'])}",
                       enabled=config["tracking"], results_dir=Path(RESULTS),
                       tags={"cht.pipeline": "true", "cht.config_hash": CONFIG_HASH,
                             "snakemake.command": shlex.join(sys.argv)},
                       source="Snakefile", source_type="JOB")
INTERRUPTS = []


onstart:
    # Starting the run also closes as KILLED the runs a hard-killed earlier invocation left RUNNING; what
    # earlier jobs could not send while a tracking server was away is sent first.
    if PIPELINE_RUN.enabled:
        PIPELINE_RUN.start()
        sync(Path(RESULTS))
        os.environ[PARENT_RUN_ENV] = PIPELINE_RUN.run_id
        PIPELINE_RUN.log_params(config)
        PIPELINE_RUN.log_dict(config, "config.yaml")
        INTERRUPTS.append(InterruptWatch())


onsuccess:
    PIPELINE_RUN.end("FINISHED")
    if PIPELINE_RUN.run_id:
        print(PIPELINE_RUN.viewing_hint())


onerror:
    PIPELINE_RUN.end("KILLED" if any(watch.interrupted for watch in INTERRUPTS) else "FAILED")
