"""The CPU kernels use torch's thread count at call time and never change it (process-wide state,
so each check runs in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cht.topology import numba_kernels

REPOSITORY = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, threading, time
    import torch
    from cht.topology import link_scores, top_n_links

    started = []
    start = threading.Thread.start

    def counting_start(thread):
        started.append(thread.name)
        return start(thread)

    threading.Thread.start = counting_start
    mask = torch.rand(500, 500, generator=torch.Generator().manual_seed(0)) < 0.06
    src, dst = mask.nonzero().unbind(1)

    def work():
        link_scores(mask)
        link_scores(mask, "CH3-L3n")
        top_n_links(500, 500, src, dst, 300)

    torch.set_num_threads(1)
    work()  # the first calls compile or load the kernels
    result = {"torch_threads_after_first_calls": torch.get_num_threads(), "started_with_one": len(started)}
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(3):
        work()
    result["cpu_over_wall_with_one"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    torch.set_num_threads(3)
    started.clear()
    work()
    result["torch_threads_later"] = torch.get_num_threads()
    result["started_with_three"] = len(started)
    print(json.dumps(result))
""")


@pytest.mark.skipif(not numba_kernels.AVAILABLE, reason="numba not installed")
def test_kernels_follow_torch_threads_and_leave_them_unchanged() -> None:
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    environment["PYTHONPATH"] = str(REPOSITORY)
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPOSITORY,
                               env=environment, timeout=600)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["torch_threads_after_first_calls"] == 1  # numba's OpenMP start-up used to reset it
    assert result["started_with_one"] == 0
    assert result["cpu_over_wall_with_one"] < 1.1  # one core at most, however many the machine has
    assert result["torch_threads_later"] == 3
    assert result["started_with_three"] > 0 and result["started_with_three"] % 2 == 0  # two helpers per run
