"""Benchmark of the CH link-prediction engine on random sparse layers.

Times every rule of :func:`cht.topology.link_scores` after a warm-up (numba compilation, CUDA
context) and reports the median of several runs, the number of L3 paths (the work of the exact
rules), the throughput in paths per second and the peak memory of one call. Results go to
``<out>/linkpred-<device>-<time>.json`` and ``.md``; the Markdown table is also printed.

Side by side, in the same process and interleaved run by run (the machine's load then weighs on
both alike):

* ``--authors-repo DIR``: the authors' C++/OpenMP CH3-L3 scorer, built from a checkout of their
  repository (see ``bench/authors_scorer.py``; needs a C++ compiler and ``pip install pybind11``),
  called as their training code calls it, on the same layers and thread count. Its float64 scores
  are checked against ours. Skipped with a message when it cannot be built.
* ``--baseline DIR``: ``link_scores`` of another checkout of this project (e.g. ``git worktree add
  /tmp/base <commit>``), to measure a change.

``--mode blocked`` times :func:`cht.topology.top_n_links` instead (choosing ``--grow`` x links
non-links), on link lists drawn without any dense matrix, so layers of 65,536 x 65,536 fit.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU (Linux, glibc) it is the rise of
the process' peak resident set (VmHWM, reset through ``/proc/self/clear_refs``) over the resident set
before the call, after returning freed heap memory to the system (``malloc_trim``) so that memory
cached by earlier calls does not hide the call's own.

    python bench/linkpred.py                          # all rules, default sizes, auto device
    python bench/linkpred.py --device cpu --sizes 1568x1568,3072x3072 --rules CH3-L3 \\
        --authors-repo ~/Cannistraci-Hebb-training --baseline /tmp/base
    python bench/linkpred.py --device cpu --mode blocked --sizes 65536x65536 --density 0.001 --repeats 1
    python bench/linkpred.py --device cuda --scorer torch      # the plain torch path, for comparison
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import inspect
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import authors_scorer  # noqa: E402

from cht.topology import available_rules, count_l3_paths, link_scores, top_n_links  # noqa: E402
from cht.topology.scores import SCORERS  # noqa: E402

DENSITY = 0.01
DEFAULT_SIZES = ((784, 1000), (1000, 1000), (784, 1568), (1568, 1568), (3072, 3072), (4096, 4096))
CUDA_ONLY_SIZES = ((8192, 8192),)
AUTHORS_RULE = "CH3-L3"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    baseline = _load_baseline(args.baseline) if args.baseline else None
    authors = _load_authors(args.authors_repo, device) if args.authors_repo else None
    if authors is None:
        args.authors_repo = None  # not timed: no authors' columns
    sizes = args.sizes or DEFAULT_SIZES + (CUDA_ONLY_SIZES if device.type == "cuda" else ())
    dtype = DTYPES[args.dtype]
    records = []
    for n_in, n_out in sizes:
        if args.mode == "blocked":
            records += [_blocked_case(n_in, n_out, rule, args, dtype) for rule in args.rules]
            continue
        mask = torch.rand(n_in, n_out, generator=torch.Generator().manual_seed(n_in * 7919 + n_out)) < args.density
        mask = mask.to(device)
        paths = count_l3_paths(mask)
        for rule in args.rules:
            record = _dense_case(mask, rule, args, dtype, baseline, authors if rule == AUTHORS_RULE else None)
            records.append({"n_in": n_in, "n_out": n_out, "density": args.density, "rule": rule,
                            "scorer": args.scorer, "dtype": args.dtype, "l3_paths": paths,
                            "paths_per_second": paths / record["seconds_median"], **record})
            print(f"{n_in}x{n_out} {rule}: " + ", ".join(
                f"{key} {value:.4f} s" for key, value in records[-1].items()
                if key.endswith("seconds_median") and value is not None), flush=True)
    report = {"mode": args.mode, "environment": _environment(device, args), "results": records}
    table = _markdown(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"linkpred-{args.mode + '-' if args.mode == 'blocked' else ''}{device.type}-" \
                      f"{datetime.now():%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {stem}.json and {stem}.md")


def _dense_case(mask: torch.Tensor, rule: str, args: argparse.Namespace, dtype: torch.dtype,
                baseline: Callable | None, authors: object | None) -> dict[str, object]:
    """Interleaved timings of ours, the baseline's and the authors' scorer on one layer and rule."""
    contenders = {"": lambda: link_scores(mask, rule, dtype=dtype, scorer=args.scorer)}
    if baseline is not None:
        contenders["baseline_"] = lambda: baseline(mask, rule, dtype=dtype, **{_scorer_keyword(baseline): args.scorer})
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_times: dict[str, list[float]] = {name: [] for name in contenders}
    authors_times, authors_cpu_times, authors_call_times = [], [], []
    for call in contenders.values():
        call()  # warm-up: compilation, caches, CUDA context
    for repeat in range(args.repeats):
        for name, call in contenders.items():
            wall, cpu = _seconds(call, mask.device)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        if authors is not None and repeat < args.authors_repeats:
            wall, cpu = time.perf_counter(), time.process_time()
            authors_call_times.append(authors_scorer.scores(authors, mask.cpu())[1])
            authors_times.append(time.perf_counter() - wall)
            authors_cpu_times.append(time.process_time() - cpu)
    record: dict[str, object] = {}
    for name in contenders:
        record.update({f"{name}seconds_median": statistics.median(times[name]), f"{name}seconds_all": times[name],
                       f"{name}cpu_seconds_median": statistics.median(cpu_times[name])})
    record["peak_memory_bytes"] = _peak_memory(contenders[""], mask.device)
    if baseline is not None:
        record["speedup_vs_baseline"] = record["baseline_seconds_median"] / record["seconds_median"]
    if authors is not None:
        theirs = authors_scorer.scores(authors, mask.cpu())[0]
        ours = link_scores(mask, rule, dtype=torch.float64, scorer=args.scorer).cpu().numpy()
        record.update({
            "authors_seconds_median": statistics.median(authors_times), "authors_seconds_all": authors_times,
            "authors_call_seconds_median": statistics.median(authors_call_times),
            "authors_cpu_seconds_median": statistics.median(authors_cpu_times),
            "speedup_vs_authors": statistics.median(authors_times) / record["seconds_median"],
            "cpu_time_ratio_vs_authors": statistics.median(authors_cpu_times) / record["cpu_seconds_median"],
            "authors_max_abs_difference": float(np.abs(np.where(mask.cpu().numpy(), 0, theirs) - ours).max()),
        })
    return record


def _blocked_case(n_in: int, n_out: int, rule: str, args: argparse.Namespace, dtype: torch.dtype) -> dict:
    """top_n_links on a random layer given as link lists (no dense matrix is ever built)."""
    generator = torch.Generator().manual_seed(n_in * 7919 + n_out)
    links = round(args.density * n_in * n_out)
    positions = torch.randint(n_in * n_out, (links + links // 20 + 16,), generator=generator).unique()
    positions = positions[torch.randperm(positions.numel(), generator=generator)[:links]]
    src, dst = positions // n_out, positions % n_out
    grow = round(args.grow * links)

    def call():
        return top_n_links(n_in, n_out, src, dst, grow, rule, torch.Generator().manual_seed(0), dtype=dtype)

    top_n_links(3, 3, torch.tensor([0, 1]), torch.tensor([1, 2]), 1, rule, dtype=dtype)  # compile or load
    seconds, cpu_seconds, peaks = [], [], []
    for _ in range(args.repeats):  # the peak memory of each timed call: large layers take minutes a call
        baseline = _reset_peak_memory()
        wall, cpu = time.perf_counter(), time.process_time()
        chosen = call()
        seconds.append(time.perf_counter() - wall)
        cpu_seconds.append(time.process_time() - cpu)
        peaks.append(_peak_memory_rise(baseline))
    record = {"n_in": n_in, "n_out": n_out, "density": args.density, "rule": rule, "dtype": args.dtype,
              "links": links, "grow": grow, "grown": int(chosen.src.numel()), "n_positive": chosen.n_positive,
              "seconds_median": statistics.median(seconds), "seconds_all": seconds,
              "cpu_seconds_median": statistics.median(cpu_seconds),
              "peak_memory_bytes": None if None in peaks else max(peaks),
              "process_peak_rss_bytes": None if None in peaks else _kib("VmHWM") * 1024,
              "dense_float32_scores_bytes": 4 * n_in * n_out}
    print(f"{n_in}x{n_out} {rule} blocked top-{grow}: {record['seconds_median']:.2f} s", flush=True)
    return record


def _scorer_keyword(function: Callable) -> str:
    """The name of the kernel-choice argument of a ``link_scores`` (older checkouts call it ``backend``)."""
    return "scorer" if "scorer" in inspect.signature(function).parameters else "backend"


def _load_baseline(checkout: Path) -> Callable:
    """``link_scores`` of another checkout of this project, loaded beside the current one."""
    if not (checkout / "cht" / "topology" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {checkout}: no cht/topology package there; pass a checkout of this project")
    current = {name: module for name, module in sys.modules.items() if name == "cht" or name.startswith("cht.")}
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        function = importlib.import_module("cht.topology").link_scores
    finally:
        sys.path.remove(str(checkout))
        for name in [name for name in sys.modules if name == "cht" or name.startswith("cht.")]:
            del sys.modules[name]
        sys.modules.update(current)
    return function


def _load_authors(checkout: Path, device: torch.device) -> object | None:
    if device.type != "cpu":
        print("--authors-repo: the authors' scorer runs on CPU; skipped for this device")
        return None
    loaded = authors_scorer.load(checkout)
    if isinstance(loaded, str):
        print(f"--authors-repo: {loaded}; timing without it")
        return None
    return loaded


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="comma-separated n_inxn_out, e.g. 784x1568,3072x3072 (default: the paper's "
                             "layer sizes up to 4096x4096, plus 8192x8192 on CUDA)")
    parser.add_argument("--rules", type=_rules, default=available_rules(),
                        help=f"comma-separated rules among {','.join(available_rules())} (default: all)")
    parser.add_argument("--scorer", "--backend", dest="scorer", choices=SCORERS, default="auto",
                        help="auto: numba on CPU, triton on CUDA (when installed), torch otherwise")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="score dtype (default float32)")
    parser.add_argument("--density", type=float, default=DENSITY, help=f"link density (default {DENSITY})")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up")
    parser.add_argument("--authors-repo", type=Path, default=None,
                        help="checkout of biomedical-cybernetics/Cannistraci-Hebb-training: time their CH3-L3 "
                             "scorer side by side (built into bench/.authors-build)")
    parser.add_argument("--authors-repeats", type=int, default=1,
                        help="timed runs of the authors' scorer per case (it takes seconds to minutes)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="checkout of another version of this project: time its link_scores side by side")
    parser.add_argument("--mode", choices=("dense", "blocked"), default="dense",
                        help="dense: link_scores; blocked: top_n_links from link lists (CPU)")
    parser.add_argument("--grow", type=float, default=0.3, help="blocked mode: links to choose, as a fraction")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.authors_repeats < 1:
        parser.error("--repeats and --authors-repeats must be at least 1")
    if not 0 < args.density <= 1:
        parser.error("--density must be in (0, 1]")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.mode == "blocked" and args.device == "cuda":
        parser.error("--mode blocked runs on CPU; use --device cpu")
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


def _seconds(call: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of one call (CPU time: all threads, unaffected by waiting for a
    core on a loaded machine)."""
    _synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    _synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _peak_memory(call: Callable[[], torch.Tensor], device: torch.device) -> int | None:
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        call()
        _synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    baseline = _reset_peak_memory()
    call()
    return _peak_memory_rise(baseline)


def _reset_peak_memory() -> int | None:
    """Resident KiB now, after trimming the heap and resetting the peak; None where Linux /proc is missing."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _kib("VmRSS")


def _peak_memory_rise(baseline: int | None) -> int | None:
    return None if baseline is None else (_kib("VmHWM") - baseline) * 1024


def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _environment(device: torch.device, args: argparse.Namespace) -> dict[str, object]:
    environment = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "density": args.density,
        "dtype": args.dtype,
    }
    for package in ("numba", "triton"):
        try:
            environment[package] = importlib.import_module(package).__version__
        except ImportError:
            environment[package] = None
    try:
        environment["openmp_threads"] = ctypes.CDLL("libgomp.so.1").omp_get_max_threads()
    except OSError:
        environment["openmp_threads"] = None
    if args.baseline:
        environment["baseline"] = f"{args.baseline} ({_git_commit(args.baseline)})"
    if args.authors_repo:
        environment["authors_repo"] = f"{args.authors_repo} ({_git_commit(args.authors_repo)})"
    return environment


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else None
    name = found.group(1).strip() if found else platform.processor() or platform.machine()
    return f"{name}, {torch.get_num_threads()} threads"


def _git_commit(path: Path) -> str:
    completed = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return completed.stdout.strip() if completed.returncode == 0 else "not a git checkout"


def _markdown(report: dict) -> str:
    environment = report["environment"]
    title = (f"Link prediction at {environment['density']:.2%} density, {environment['dtype']}, on "
             f"{environment['device']} ({environment['device_type']}, torch {environment['torch']}); "
             "median of the timed runs")
    if report["mode"] == "blocked":
        lines = [title + ", top_n_links (blocked, no score matrix).", "",
                 "| layer | rule | links | grown | positive candidates | seconds | CPU seconds | peak memory (MiB) | "
                 "process peak RSS (MiB) | dense float32 scores (MiB) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in report["results"]:
            lines.append(f"| {r['n_in']}x{r['n_out']} | {r['rule']} | {r['links']} | {r['grown']} | "
                         f"{r['n_positive']} | {r['seconds_median']:.2f} | {r.get('cpu_seconds_median', float('nan')):.2f} | "
                         f"{_mebibytes(r['peak_memory_bytes'])} | "
                         f"{_mebibytes(r['process_peak_rss_bytes'])} | "
                         f"{r['dense_float32_scores_bytes'] / 2**20:.0f} |")
        return "\n".join(lines)
    baseline = "baseline" in environment
    authors = "authors_repo" in environment
    header = "| layer | rule | L3 paths | seconds | CPU seconds | paths/s | peak memory (MiB) |"
    rule_line = "|---|---|---:|---:|---:|---:|---:|"
    if baseline:
        header += " baseline seconds | speed-up vs baseline |"
        rule_line += "---:|---:|"
    if authors:
        header += (" authors' C++ seconds (call alone) | authors' CPU seconds | speed-up vs authors' C++ | "
                   "CPU-time ratio | max abs difference |")
        rule_line += "---:|---:|---:|---:|---:|"
    lines = [title + ("; side by side in one process: " + ", ".join(
        part for part, shown in (("baseline " + environment.get("baseline", ""), baseline),
                                 ("authors' scorer " + environment.get("authors_repo", ""), authors)) if shown)
        if baseline or authors else "") + ".", "", header, rule_line]
    for r in report["results"]:
        line = (f"| {r['n_in']}x{r['n_out']} | {r['rule']} | {r['l3_paths']:.2e} | {r['seconds_median']:.4f} | "
                f"{r['cpu_seconds_median']:.4f} | {r['paths_per_second']:.2e} | {_mebibytes(r['peak_memory_bytes'])} |")
        if baseline:
            line += f" {r['baseline_seconds_median']:.4f} | {r['speedup_vs_baseline']:.2f}x |"
        if authors:
            line += (f" {r['authors_seconds_median']:.2f} ({r['authors_call_seconds_median']:.2f}) | "
                     f"{r['authors_cpu_seconds_median']:.2f} | {r['speedup_vs_authors']:.0f}x | "
                     f"{r['cpu_time_ratio_vs_authors']:.0f}x | {r['authors_max_abs_difference']:.1e} |"
                     if "authors_seconds_median" in r else " — | — | — | — | — |")
        lines.append(line)
    return "\n".join(lines)


def _mebibytes(size: int | None) -> str:
    return "—" if size is None else f"{max(size, 0) / 2**20:.0f}"


if __name__ == "__main__":
    main()
