"""The memory estimate (cht.memory) against the peak resident memory of real runs.

Each configuration trains in a child process (``python -m cht train``, two epochs on a subset, so that one
topology update happens) whose peak RSS the child reports itself; the table sets it beside the estimate.
The estimate should lie within ±25% of the measured peak.

    python bench/memory_estimate.py [--max-train-samples 6000] [--out bench/results]

Writes ``memory_estimate_cpu.json`` and ``.md``; exits non-zero when a run fails or misses the ±25% band.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, write_results  # noqa: E402

from cht.memory import GIB, estimate_run_memory  # noqa: E402
from cht.config import SPARSE_STORAGE_MAX_DENSITY, TrainConfig  # noqa: E402
from cht.train import configured_method, resolve_storage  # noqa: E402

CASES = [
    {"method": "fc", "dim": 2},
    {"method": "set", "dim": 2},
    {"method": "cht", "dim": 2, "protocol": "neurips2025"},
    {"method": "granet", "dim": 2},
    {"method": "chtssn", "dim": 2, "protocol": "neurips2025"},
    {"method": "set", "dim": 4, "storage": "masked"},
    {"method": "rigl", "dim": 4},
    {"method": "cht", "dim": 4},
    {"method": "set", "dim": 8, "storage": "masked"},
]
# The child reports its own peak resident memory when it exits, whatever happened: its high-water mark (VmHWM);
# ru_maxrss would also count the parent's resident memory at the fork, which Linux carries across exec.
CHILD = ("import runpy, sys\n"
         "sys.argv = ['cht'] + sys.argv[1:]\n"
         "try:\n"
         "    runpy.run_module('cht', run_name='__main__')\n"
         "except SystemExit as stop:\n"
         "    code = stop.code\n"
         "else:\n"
         "    code = 0\n"
         "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
         "print('PEAK_RSS_KB', peak[0])\n"
         "sys.exit(code)\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    device = torch.device("cpu")
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as scratch:
        for index, case in enumerate(CASES):
            settings = {"epochs": args.epochs, "max_train_samples": args.max_train_samples, "device": "cpu",
                        "data_root": args.data_root, "data_sources": args.data_source, "tracking": False,
                        "progress": False, **case}
            config = TrainConfig(**settings)
            method = configured_method(config)
            storage = resolve_storage(config, device, method.sparse)
            estimate = estimate_run_memory(config, method, device, storage, SPARSE_STORAGE_MAX_DENSITY)
            flags = [f"--{key.replace('_', '-')}={value}" for key, value in case.items()]
            command = [sys.executable, "-c", CHILD, "train", *flags, f"--epochs={args.epochs}",
                       f"--max-train-samples={args.max_train_samples}", "--device=cpu", "--no-tracking",
                       "--no-progress", f"--data-root={args.data_root}",
                       *[f"--data-source={source}" for source in args.data_source], f"--out={scratch}/{index}"]
            result = subprocess.run(command, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1",
                                                                                  **_environment()})
            peak = next((int(line.split()[1]) * 1024 for line in result.stdout.splitlines()
                         if line.startswith("PEAK_RSS_KB")), None)
            ratio = estimate.total / peak if peak else float("nan")
            ok = result.returncode == 0 and peak is not None and 0.75 <= ratio <= 1.25
            failed |= not ok
            rows.append({"run": " ".join(f"{k}={v}" for k, v in case.items()), "storage": storage,
                         "estimate_gib": estimate.total / GIB, "measured_gib": (peak or 0) / GIB,
                         "estimate/measured": ratio, "within_25%": ok,
                         "parts_gib": json.dumps({k: round(v / GIB, 3) for k, v in estimate.parts.items()})})
            if result.returncode != 0:
                print(result.stderr[-2000:], file=sys.stderr)
    table = markdown_table(rows, ["run", "storage", "estimate_gib", "measured_gib", "estimate/measured", "within_25%",
                                  "parts_gib"])
    heading = (f"{device_name(device)}: peak resident memory of {args.epochs}-epoch runs on "
               f"{args.max_train_samples} training samples against cht.memory's estimate")
    write_results(args.out, "memory_estimate_cpu", {"device": device_name(device), "rows": rows,
                                                    "arguments": {k: str(v) for k, v in vars(args).items()}},
                  f"{heading}\n\n{table}")
    return 1 if failed else 0


def _environment() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}


if __name__ == "__main__":
    sys.exit(main())
