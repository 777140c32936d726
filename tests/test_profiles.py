"""The shipped Snakemake profiles as files: checks that need neither SLURM nor a run (tests/test_slurm.py runs
the SLURM profile on a real controller)."""

from pathlib import Path

import yaml

SLURM_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "slurm" / "config.yaml"


def test_shipped_profile_requests_a_gpu_for_training() -> None:
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["set-resources"]["train"]["gres"] == "gpu:1"
    assert profile["set-resources"]["train_group"]["gres"] == "gpu:1"  # grouped training: one GPU per job too
