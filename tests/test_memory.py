"""Memory before work: the estimate's parts, the limits it is held against, the one-line refusal."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cht.cli import main
from cht.memory import (GIB, MASKED_BYTES_PER_POSITION, SPARSE_BYTES_PER_LINK, MemoryEstimate,
                        MemoryRequirementError, available_memory, check_run_memory, estimate_run_memory)
from cht.config import SPARSE_STORAGE_MAX_DENSITY, TrainConfig
from cht.train import configured_method, resolve_storage

CPU = torch.device("cpu")


def estimate(device: torch.device = CPU, **settings) -> MemoryEstimate:
    config = TrainConfig(tracking=False, progress=False, **settings)
    method = configured_method(config)
    storage = resolve_storage(config, device, method.sparse)
    return estimate_run_memory(config, method, device, storage, SPARSE_STORAGE_MAX_DENSITY)


def test_sparse_layers_cost_per_position_when_masked_and_per_link_when_sparse() -> None:
    positions = 784 * 1568 + 2 * 1568 * 1568
    masked = estimate(method="set", dim=2, storage="masked").parts["sparse layers"]
    sparse = estimate(method="set", dim=2, storage="sparse").parts["sparse layers"]
    links = sum(round(0.01 * p) for p in (784 * 1568, 1568 * 1568, 1568 * 1568))
    assert masked == MASKED_BYTES_PER_POSITION * positions + 8 * links
    assert sparse == SPARSE_BYTES_PER_LINK * links
    # auto stores a layer by its initial density: GraNet starts at 50% (masked), SET at 1% (sparse).
    assert estimate(method="granet", dim=2).parts["sparse layers"] > 0.9 * masked
    assert estimate(method="set", dim=2).parts["sparse layers"] == sparse
    assert "sparse layers" not in estimate(method="fc", dim=2).parts
    assert estimate(method="fc", dim=2).parts["dense layers"] == 12 * (positions + 1568 * 3 + 1568 * 10 + 10)


def test_data_and_device_parts() -> None:
    full = estimate(method="set").parts["data"]
    assert full == (60000 + 10000) * 784 * 4
    assert estimate(method="set", max_train_samples=1000, max_test_samples=500).parts["data"] == 1500 * 784 * 4
    assert "runtime" in estimate(method="set").parts
    assert "runtime" not in estimate(torch.device("cuda"), method="set").parts  # device memory only
    # CH rules score the largest layer densely: an update costs more than random regrowth.
    assert estimate(method="cht", dim=2).parts["evolution"] > estimate(method="set", dim=2).parts["evolution"]


def test_a_run_that_does_not_fit_is_refused_with_one_line() -> None:
    big = estimate(method="set", dim=200, storage="masked")
    assert big.total > 400 * GIB
    with pytest.raises(MemoryRequirementError) as error:
        check_run_memory(big, (24 * GIB, "available RAM"), "masked")
    message = str(error.value)
    assert "\n" not in message and "24.0 GiB is available (available RAM)" in message
    assert f"{big.total / GIB:.1f} GiB" in message and "--storage sparse" in message and "--dim" in message
    check_run_memory(estimate(method="set", dim=2), (24 * GIB, "available RAM"), "auto")  # fits: no error
    with pytest.raises(MemoryRequirementError, match="use a smaller --dim or a smaller --batch-size"):
        check_run_memory(estimate(method="fc", dim=200), (24 * GIB, "available RAM"), "dense")


def test_the_slurm_jobs_mem_limits_what_is_available(monkeypatch) -> None:
    monkeypatch.delenv("SLURM_MEM_PER_CPU", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "2048")
    assert available_memory(CPU) == (2 * GIB, "the SLURM job's mem")
    monkeypatch.delenv("SLURM_MEM_PER_NODE")
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "1024")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    assert available_memory(CPU) == (3 * GIB, "the SLURM job's mem")
    monkeypatch.delenv("SLURM_MEM_PER_CPU")
    ram, source = available_memory(CPU)
    assert ram > 0 and source in ("available RAM", "the cgroup's memory limit")


def test_the_cli_refuses_a_run_too_large_and_leaves_no_folder(tmp_path, capsys) -> None:
    out = tmp_path / "runs" / "huge"
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--method", "set", "--dim", "200", "--storage", "masked", "--no-tracking", "--no-progress",
              "--device", "cpu", "--out", str(out)])
    assert stopped.value.code == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "GiB" in error and "--storage sparse" in error
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_empty_folder_of_a_run_killed_from_outside_is_removed_when_the_next_start_fails(tmp_path, capsys) -> None:
    out = tmp_path / "killed"
    out.mkdir()  # what the OOM killer or SIGKILL leaves before the first checkpoint
    with pytest.raises(SystemExit):
        main(["train", "--method", "set", "--dim", "200", "--storage", "masked", "--no-tracking", "--no-progress",
              "--device", "cpu", "--out", str(out)])
    assert not out.exists()
    kept = tmp_path / "resumable"
    kept.mkdir()
    (kept / "checkpoint.pt").write_bytes(b"")  # a folder with a checkpoint is never removed
    with pytest.raises(SystemExit):
        main(["train", "--method", "set", "--dim", "200", "--storage", "masked", "--no-tracking", "--no-progress",
              "--device", "cpu", "--out", str(kept)])
    assert (kept / "checkpoint.pt").exists()


# The peak is the process's own high-water mark (VmHWM): ru_maxrss would also count the parent's resident
# memory at the fork, which Linux carries across exec.
CHILD = ("import runpy, sys\n"
         "sys.argv = ['cht'] + sys.argv[1:]\n"
         "try:\n"
         "    runpy.run_module('cht', run_name='__main__')\n"
         "finally:\n"
         "    peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
         "    print('PEAK_RSS_KB', peak[0])\n")


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"method": "fc", "dim": 2}, {"method": "set", "dim": 4, "storage": "masked"}])
def test_the_estimate_lies_within_a_quarter_of_the_measured_peak(fashion_root, tmp_path, settings) -> None:
    config = dict(epochs=2, max_train_samples=2000, max_test_samples=1000)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in {**settings, **config}.items()]
    result = subprocess.run([sys.executable, "-c", CHILD, "train", *flags, "--device=cpu", "--no-tracking",
                             "--no-progress", f"--data-root={fashion_root}", f"--out={tmp_path / 'run'}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    peak = int(next(line for line in result.stdout.splitlines() if line.startswith("PEAK_RSS_KB")).split()[1]) * 1024
    predicted = estimate(data_root=str(fashion_root), **settings, **config).total
    assert 0.75 <= predicted / peak <= 1.25, (predicted / GIB, peak / GIB)
