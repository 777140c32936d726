"""Train one run. An interrupted attempt left a checkpoint that this run resumes from; a checkpoint of
another configuration, or of a finished run that Snakemake decided to redo, is removed first."""

from pathlib import Path

import torch
from jobs import job_tracker, logged

from cht.config import TrainConfig
from cht.io import CheckpointError, load_checkpoint
from cht.train import CHECKPOINT, train

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    config = TrainConfig.from_dict(snakemake.params.settings)
    out_dir = Path(snakemake.output.metrics).parent
    checkpoint = out_dir / CHECKPOINT
    if checkpoint.exists():
        try:
            state = load_checkpoint(checkpoint, config.identity())
            stale = f"{checkpoint} belongs to a finished run" if state["epoch"] + 1 >= config.epochs else None
        except CheckpointError as error:
            stale = str(error)
        if stale:
            print(f"starting afresh: {stale}")
            checkpoint.unlink()
        else:
            print(f"resuming from {checkpoint} after epoch {state['epoch'] + 1}")
    train(config, out_dir, job_tracker(snakemake))
