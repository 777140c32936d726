"""The tiny pipeline through the SLURM profile on a real SLURM controller (.ci/run starts one)."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline import (ROOT, TEST_CONFIG, check_tiny_pipeline_outputs, mlflow_runs, needs_fashion_mnist, snakemake,
                           snakemake_command, write_config)

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


def local_test_profile(folder: Path, retries: int = 0) -> Path:
    """The shipped SLURM profile, fitted to a one-machine test cluster: no GPU (this machine has no GPU
    gres), small memory and CPU requests, status from squeue (no accounting database), no account."""
    profile = yaml.safe_load(PROFILE.read_text())
    for resources in profile["set-resources"].values():
        resources.pop("gres", None)
        resources.update(mem_mb=1000, cpus_per_task=1)
    profile["default-resources"].update(mem_mb=1000, cpus_per_task=1)
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile.update({"slurm-status-command": "squeue", "slurm-no-account": True, "retries": retries,
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


def slurm_job_of_rule(rule: str) -> str | None:
    """The id of the running SLURM job of ``rule`` (the executor puts the rule in the job's comment)."""
    listed = subprocess.run(["squeue", "--noheader", "--states=RUNNING", "--format=%i %k"], capture_output=True,
                            text=True, timeout=30).stdout
    jobs = [line.split()[0] for line in listed.splitlines() if f"rule_{rule}" in line]
    return jobs[0] if jobs else None


@needs_fashion_mnist
def test_training_stopped_by_scancel_term_resumes_on_retry_to_the_uninterrupted_result(tmp_path) -> None:
    """SLURM's SIGTERM (time limit, preemption) mid-run: the job checkpoints at a step boundary, the profile's
    retry resumes from there, and the result equals an uninterrupted run; mlflow holds one FINISHED run for
    the job, with the stopped attempt marked on it."""
    tiny = yaml.safe_load(TEST_CONFIG.read_text())
    # The masked storage keeps epochs long enough to stop the job in one of them.
    train = {**tiny["train"], "epochs": 6, "max_train_samples": 6000, "storage": "masked"}
    config = write_config(tmp_path / "term.yaml", methods=["set"], seeds=[0], experiment="slurm-term", train=train)
    run = "results/runs/fashion_mnist/mlp-dim1/density0.01/uniform/set/seed0"
    reference = snakemake(tmp_path / "reference", "--configfile", str(config), "--cores", "1", f"{run}/metrics.json")
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "work"
    profile = local_test_profile(tmp_path / "profile", retries=1)
    pipeline = subprocess.Popen(snakemake_command(workdir, "--configfile", str(config), "--workflow-profile",
                                                  str(profile), f"{run}/metrics.json"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    while not (workdir / run / "checkpoint.pt").exists():  # the first epoch is done: stop it in a later one
        assert pipeline.poll() is None, pipeline.communicate()[0][-5000:]
        assert time.monotonic() < deadline, "the training job wrote no checkpoint within 600 s"
        time.sleep(0.2)
    job = slurm_job_of_rule("train")
    assert job, "no running train job in squeue"
    subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)
    output = pipeline.communicate(timeout=900)[0]
    assert pipeline.returncode == 0, output[-5000:]

    stopped_log = (workdir / "results/logs/train/fashion_mnist/mlp-dim1/density0.01/uniform/set/seed0.log")
    reproduced = json.loads((workdir / run / "metrics.json").read_text())
    expected = json.loads((tmp_path / "reference" / run / "metrics.json").read_text())
    for key in ("test_accuracy", "train_loss", "anp", "links_per_layer", "final_test_accuracy"):
        assert reproduced[key] == expected[key], key
    (train_run,) = [r for r in mlflow_runs(workdir / "results", "slurm-term")
                    if r.data.tags.get("snakemake.rule") == "train"]
    assert train_run.info.status == "FINISHED", stopped_log.read_text()[-3000:]
    assert "SIGTERM after step" in train_run.data.tags["cht.stopped"]
