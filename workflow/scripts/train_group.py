"""Train a group of runs together (cht.grouped). An interrupted attempt left the group's checkpoint, which
this job resumes from; a checkpoint of another group, or of a finished group that Snakemake decided to
redo, is removed first."""

from pathlib import Path

import torch
from jobs import job_tracker, logged

from cht.config import TrainConfig
from cht.grouped import train_group
from cht.io import CheckpointError, load_tensors

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    configs = [TrainConfig.from_dict(settings) for settings in snakemake.params.settings]
    out_dirs = [Path(path).parent for path in snakemake.output.metrics]
    checkpoint = Path(snakemake.params.checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint.exists():
        try:
            state = load_tensors(checkpoint)
            reason = ("it belongs to another group or a finished one"
                      if state["identities"] != [c.identity() for c in configs] or state["epoch"] + 1 >= configs[0].epochs
                      else None)
        except (CheckpointError, KeyError, TypeError) as error:
            reason = f"it is not a readable group checkpoint ({error})"
        if reason:
            print(f"starting afresh: {checkpoint}: {reason}")
            checkpoint.unlink()
        else:
            print(f"resuming from {checkpoint} after epoch {state['epoch'] + 1}")
    wildcards = dict(snakemake.wildcards.items())
    trackers = [job_tracker(snakemake, "train", {**wildcards, "method": c.method, "seed": str(c.seed)})
                for c in configs]
    train_group(configs, out_dirs, checkpoint, trackers, compile_mode=snakemake.params.compile)
