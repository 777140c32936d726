"""The tiny pipeline through the SLURM profile on a real SLURM controller (.ci/run starts one)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_pipeline import ROOT, TEST_CONFIG, check_tiny_pipeline_outputs, mlflow_runs, needs_fashion_mnist, snakemake

PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"


def slurm_answers() -> bool:
    """Whether a SLURM controller answers and has a node able to take jobs."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    usable = ("idle", "mixed", "allocated", "completing")
    return states.returncode == 0 and any(state.strip().rstrip("*~#") in usable for state in states.stdout.split())


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not slurm_answers(), reason="no SLURM controller answers (sinfo); .ci/run starts one"),
]


def test_shipped_profile_requests_a_gpu_for_training() -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert profile["set-resources"]["train"]["gres"] == "gpu:1"


def local_test_profile(folder: Path) -> Path:
    """The shipped SLURM profile, fitted to a one-machine test cluster: no GPU (this machine has no GPU
    gres), small memory and CPU requests, status from squeue (no accounting database), no account."""
    profile = yaml.safe_load(PROFILE.read_text())
    for resources in profile["set-resources"].values():
        resources.pop("gres", None)
        resources.update(mem_mb=1000, cpus_per_task=1)
    profile["default-resources"].update(mem_mb=1000, cpus_per_task=1)
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile.update({"slurm-status-command": "squeue", "slurm-no-account": True, "retries": 0,
                    "slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 2,
                    "latency-wait": 5, "jobs": 4})
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


@needs_fashion_mnist
def test_tiny_pipeline_runs_through_the_slurm_profile(tmp_path) -> None:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    workdir = tmp_path / "work"
    profile = local_test_profile(tmp_path / "profile")
    result = snakemake(workdir, "--configfile", str(TEST_CONFIG), "--workflow-profile", str(profile))
    assert result.returncode == 0, result.stderr[-5000:]
    submitted = result.stderr.count("submitted with SLURM jobid")
    # One train job per run, one analyze_topology and one network_figures job for the setting; the rest run
    # locally.
    assert submitted == len(config["methods"]) * len(config["seeds"]) + 2
    check_tiny_pipeline_outputs(workdir, config)
    cluster_jobs = [run for run in mlflow_runs(workdir / "results", config["experiment"])
                    if run.data.tags.get("snakemake.rule") in ("train", "analyze_topology", "network_figures")]
    assert len({run.data.tags["slurm.job_id"] for run in cluster_jobs}) == submitted
