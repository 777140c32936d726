"""Train one run. An interrupted attempt left a checkpoint that this run resumes from; a checkpoint of
another configuration, or of a finished run that Snakemake decided to redo, is removed first."""

from pathlib import Path

import torch
from jobs import job_tracker, logged

from cht.config import TrainConfig
from cht.run.checkpoint import resume_or_restart
from cht.run.lifecycle import CHECKPOINT
from cht.train import train

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    config = TrainConfig.from_dict(snakemake.params.settings)
    out_dir = Path(snakemake.output.metrics).parent
    print(resume_or_restart(out_dir / CHECKPOINT, [config.identity()], config.epochs))
    train(config, out_dir, job_tracker(snakemake))
