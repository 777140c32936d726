"""What every pipeline script shares: the library of this checkout, its thread count, its log file and its
child mlflow run.

Import it before ``cht``: it puts the checkout first on the module path, so jobs run the workflow's own
library even in per-rule conda environments that do not install it, and it caps numba's threads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
# Snakemake caps the BLAS and OpenMP libraries at the job's threads through OMP_NUM_THREADS; numba (the
# topology kernels) reads NUMBA_NUM_THREADS instead and would start one thread per core, whose spinning
# workers slow jobs running side by side down many times over.
os.environ["NUMBA_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")

from cht.config import job_run_name  # noqa: E402 (needs the path above)
from cht.tracking import Tracker, job_tags  # noqa: E402


def job_tracker(snakemake: Any, rule: str | None = None, wildcards: dict[str, Any] | None = None) -> Tracker:
    """The job's child run (under the pipeline's parent run), named and tagged by its rule and wildcards.

    A grouped training job opens one such run per member, named and tagged as the member's own ``train``
    job would be (``rule`` and ``wildcards`` given), so the mlflow UI shows every run alike.
    """
    job = snakemake.params.job
    rule = rule or snakemake.rule
    wildcards = wildcards if wildcards is not None else dict(snakemake.wildcards.items())
    return Tracker(job["experiment"], run_name=job_run_name(rule, wildcards), enabled=job["tracking"],
                   results_dir=Path(job["results_dir"]), tags=job_tags(rule, wildcards, job["config_hash"]),
                   source=f"Snakefile rule {rule}", source_type="JOB")


def interrupt_on_sigterm(signum: int, frame: Any) -> None:
    """Snakemake and SLURM stop jobs with SIGTERM: raise like Ctrl-C, so the job's run ends KILLED."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


@contextmanager
def logged(snakemake: Any) -> Iterator[None]:
    """Send the job's printed output, warnings, log records and, if it fails, its traceback to its log file.

    A damaged input (a truncated or foreign ``metrics.json``, ``topology.json``, table or ``masks.pt``), a run
    too large for the memory it may use, or a training stopped by SIGTERM at a step boundary (checkpoint
    written; the retry resumes it), ends the job with one line naming the file (or the estimate) and the fix,
    in the log and on the terminal, no traceback.
    """
    from cht.io import CheckpointError
    from cht.memory import MemoryRequirementError
    from cht.processes import TrainingStopped
    from cht.results import DamagedResultError

    one_line = (DamagedResultError, CheckpointError, MemoryRequirementError, TrainingStopped)

    previous_handler = signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    root = logging.getLogger()
    previous_handlers, previous_level = root.handlers[:], root.level
    with open(snakemake.log[0], "w") as log:
        try:
            with redirect_stdout(log), redirect_stderr(log):
                logging.basicConfig(stream=log, level=logging.INFO, force=True)
                try:
                    yield
                except one_line:
                    raise
                except BaseException:
                    # Python prints the traceback only after the redirection has ended: write it here too.
                    traceback.print_exc(file=log)
                    raise
        except one_line as error:
            message = f"rule {snakemake.rule}: {error}"
            print(message, file=log)
            raise SystemExit(message) from None
        finally:  # whatever called this (a test, a notebook) gets its signal handler and logging back
            signal.signal(signal.SIGTERM, previous_handler)
            root.handlers[:] = previous_handlers
            root.setLevel(previous_level)


def log_outputs(tracker: Tracker, snakemake: Any) -> None:
    """Attach every output file of the job to its run."""
    for path in snakemake.output:
        tracker.log_artifact(Path(path))
