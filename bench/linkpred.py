"""Benchmark of the CH link-prediction engine on 1%-dense random layers.

Times every rule of :func:`cht.topology.link_scores` after a warm-up (numba compilation, CUDA
context) and reports the median of several runs, the number of L3 paths (the work of the exact
rules), the throughput in paths per second and the peak memory of one call. Results go to
``<out>/linkpred-<device>-<time>.json`` and ``.md``; the Markdown table is also printed.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU (Linux, glibc) it is the rise of
the process' peak resident set (VmHWM, reset through ``/proc/self/clear_refs``) over the resident set
before the call, after returning freed heap memory to the system (``malloc_trim``) so that memory
cached by earlier calls does not hide the call's own.

    python bench/linkpred.py                          # all rules, default sizes, auto device
    python bench/linkpred.py --device cpu --sizes 1568x1568,3072x3072 --rules CH3-L3 --repeats 5
    python bench/linkpred.py --device cuda --backend torch     # the plain torch path, for comparison
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch

from cht.topology import available_rules, count_l3_paths, link_scores
from cht.topology.scores import BACKENDS

DENSITY = 0.01
DEFAULT_SIZES = ((784, 1000), (1000, 1000), (784, 1568), (1568, 1568), (3072, 3072), (4096, 4096))
CUDA_ONLY_SIZES = ((8192, 8192),)
# Seconds per evolution step of the authors' C++/OpenMP CH3-L3 scorer on 2 cores (method notes, §5).
AUTHORS_CPP_SECONDS = {(784, 1000): 0.94, (1000, 1000): 1.05, (784, 1568): 1.62, (1568, 1568): 4.09,
                       (3072, 3072): 39.1}
AUTHORS_RULE = "CH3-L3"


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    device = _resolve_device(args.device)
    sizes = args.sizes or DEFAULT_SIZES + (CUDA_ONLY_SIZES if device.type == "cuda" else ())
    records = []
    for n_in, n_out in sizes:
        mask = torch.rand(n_in, n_out, generator=torch.Generator().manual_seed(n_in * 7919 + n_out)) < DENSITY
        mask = mask.to(device)
        paths = count_l3_paths(mask)
        for rule in args.rules:
            def call() -> torch.Tensor:
                return link_scores(mask, rule, backend=args.backend)

            seconds = _time(call, device, args.repeats)
            peak = _peak_memory(call, device)
            record = {
                "n_in": n_in, "n_out": n_out, "density": DENSITY, "rule": rule, "backend": args.backend,
                "l3_paths": paths, "seconds_median": statistics.median(seconds), "seconds_all": seconds,
                "paths_per_second": paths / statistics.median(seconds), "peak_memory_bytes": peak,
            }
            records.append(record)
            print(f"{n_in}x{n_out} {rule}: {record['seconds_median']:.4f} s", flush=True)
    report = {"environment": _environment(device), "results": records}
    table = _markdown(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"linkpred-{device.type}-{datetime.now():%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {stem}.json and {stem}.md")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="comma-separated n_inxn_out, e.g. 784x1568,3072x3072 (default: the paper's "
                             "layer sizes up to 4096x4096, plus 8192x8192 on CUDA)")
    parser.add_argument("--rules", type=_rules, default=available_rules(),
                        help=f"comma-separated rules among {','.join(available_rules())} (default: all)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: numba on CPU, triton on CUDA (when installed), torch otherwise")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple((int(a), int(b)) for a, b in (item.lower().split("x") for item in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must look like 784x1568,3072x3072, got {text!r}") from None


def _rules(text: str) -> tuple[str, ...]:
    rules = tuple(text.split(","))
    unknown = [rule for rule in rules if rule not in available_rules()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rules {unknown}; choose among {','.join(available_rules())}")
    return rules


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(call: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> list[float]:
    call()  # warm-up: compilation, caches, CUDA context
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        call()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _peak_memory(call: Callable[[], torch.Tensor], device: torch.device) -> int | None:
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        call()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    status = Path("/proc/self/status")
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    baseline = _kib(status, "VmRSS")
    call()
    return (_kib(status, "VmHWM") - baseline) * 1024


def _kib(status: Path, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", status.read_text()).group(1))


def _environment(device: torch.device) -> dict[str, object]:
    environment = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    try:
        import numba
        environment["numba"] = numba.__version__
        environment["numba_threads"] = numba.get_num_threads()
    except ImportError:
        environment["numba"] = None
    try:
        import triton
        environment["triton"] = triton.__version__
    except ImportError:
        environment["triton"] = None
    return environment


def _markdown(report: dict) -> str:
    environment = report["environment"]
    lines = [
        f"Link prediction at {DENSITY:.0%} density on {environment['device']} ({environment['device_type']}, "
        f"torch {environment['torch']}); median of the timed runs.",
        "",
        "| layer | rule | L3 paths | seconds | paths/s | peak memory (MiB) | speed-up vs authors' C++ |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        reference = AUTHORS_CPP_SECONDS.get((r["n_in"], r["n_out"])) if r["rule"] == AUTHORS_RULE else None
        speedup = f"{reference / r['seconds_median']:.0f}x" if reference else "—"
        memory = f"{max(r['peak_memory_bytes'], 0) / 2**20:.0f}" if r["peak_memory_bytes"] is not None else "—"
        lines.append(
            f"| {r['n_in']}x{r['n_out']} | {r['rule']} | {r['l3_paths']:.2e} | {r['seconds_median']:.4f} | "
            f"{r['paths_per_second']:.2e} | {memory} | {speedup} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
