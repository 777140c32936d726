"""Reproduction pipeline: datasets → training runs → topology analysis → tables → figures → report.

    snakemake --cores all                                  # default reproduction (config/config.yaml)
    snakemake --report results/report.html                 # HTML report of its figures and tables
    snakemake --cores all --configfile config/paper.yaml   # the paper's grid (GPUs or a cluster)
    snakemake --workflow-profile profiles/slurm --configfile config/paper.yaml   # on SLURM

Outputs and logs go under ``results_dir`` (default results/, logs in results/logs/); every configuration key is
described in workflow/schemas/config.schema.yaml.
"""

import sys

from snakemake.utils import min_version

min_version("9.14.8")  # earlier 9.x skip schema defaults inside remote (SLURM) jobs
# The workflow uses the library of its own checkout.
sys.path.insert(0, workflow.basedir)


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        rules.aggregate.output,
        rules.claims.output,
        rules.reproduction.output if HAS_PUBLISHED_COUNTERPART else [],
        figure_targets(),
    default_target: True
