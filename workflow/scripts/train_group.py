"""Train a group of runs together (cht.grouped). An interrupted attempt left the group's checkpoint, which
this job resumes from; a checkpoint of another group, or of a finished group that Snakemake decided to
redo, is removed first."""

from pathlib import Path

import torch
from jobs import job_tracker, logged

from cht.config import TrainConfig
from cht.grouped import train_group
from cht.run.checkpoint import resume_or_restart

with logged(snakemake):
    torch.set_num_threads(snakemake.threads)
    configs = [TrainConfig.from_dict(settings) for settings in snakemake.params.settings]
    out_dirs = [Path(path).parent for path in snakemake.output.metrics]
    checkpoint = Path(snakemake.params.checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    print(resume_or_restart(checkpoint, [c.identity() for c in configs], configs[0].epochs))
    wildcards = dict(snakemake.wildcards.items())
    trackers = [job_tracker(snakemake, "train", {**wildcards, "method": c.method, "seed": str(c.seed)})
                for c in configs]
    train_group(configs, out_dirs, checkpoint, trackers, compile_mode=snakemake.params.compile)
