"""One-shot GPU check of the Triton link-prediction kernels against the plain torch path.

1. Exactness: on fresh random layers of several shapes and densities (edge cases included: empty,
   full, single row or column, non-square, isolated nodes, hub inputs, int64 indices), every rule's
   triton scores in float64 and float32 are compared with the torch scorer's float64 scores
   (max relative error; tolerance 1e-9 for float64, 1e-5 for float32).
2. Speed: torch vs triton for CH3-L3 and CH3-L3n on 1%-dense square layers (the masks of
   ``bench/linkpred.py``), median of the timed runs after a warm-up, plus peak memory; a small
   sweep of the triton tile size; a profile of one call (time per GPU kernel).
3. A compact table on stdout; everything as JSON (and the table as Markdown) under ``--out``.

It fails soft: an error of the triton path is printed with its traceback and recorded, and the
torch path is still timed. It exits non-zero if any check failed or errored.

    python bench/linkpred_gpu_check.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table  # noqa: E402

from cht.topology import available_rules, count_l3_paths, graph, link_scores, triton_kernels  # noqa: E402

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}
DENSITY = 0.01
TIMED_SIZES = (1568, 3072, 4096, 8192)
TIMED_RULES = ("CH3-L3", "CH3-L3n")
SWEEP_SIZES = (3072, 8192)
# (TILE_PATHS, PATHS_PER_THREAD): the default first.
SWEEP_TILES = ((1024, 8), (512, 4), (1024, 4), (2048, 8), (2048, 16))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown results")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    device = torch.device("cuda")
    started = time.perf_counter()
    name = f"linkpred-gpu-check-{datetime.now():%Y%m%d-%H%M%S}"
    report = {"environment": _environment(device), "errors": [], "exactness": [], "timings": [],
              "tile_sweep": [], "profile": []}
    print(report["environment"], flush=True)
    # The torch path is timed first: a fault of the triton kernels can leave the CUDA context unusable.
    stages = (
        ("timings", lambda: _timings(device, ("torch",), args.repeats, report["errors"])),
        ("exactness", lambda: _exactness(device, report["errors"])),
        ("timings", lambda: _timings(device, ("triton",), args.repeats, report["errors"])),
        ("tile_sweep", lambda: _tile_sweep(device, args.repeats, report["errors"])),
        ("profile", lambda: _profile(device, report["errors"])),
    )
    try:
        for key, stage in stages:
            report[key] += stage()
            _compare_scorers(report["timings"])
            report["seconds_total"] = time.perf_counter() - started
            _write(args.out, name, report)
    except ContextLost as lost:
        print(f"\n!! the CUDA context is unusable after an error ({lost}); stopping here", flush=True)
    print("\n" + _tables(report))
    failed = [row for row in report["exactness"] if row["ok"] is not True]
    print(f"\n{len(report['exactness']) - len(failed)}/{len(report['exactness'])} exactness checks passed, "
          f"{len(report['errors'])} errors, {time.perf_counter() - started:.0f} s in all; results in "
          f"{args.out / name}.json", flush=True)
    return 1 if failed or report["errors"] or not report["exactness"] else 0


def _write(out: Path, name: str, report: dict) -> None:
    """(Re)write ``<name>.json`` and the tables as ``<name>.md``: partial results survive a later crash."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(_tables(report) + "\n")


class ContextLost(RuntimeError):
    """CUDA cannot even synchronise after an error (e.g. an illegal memory access): nothing more can run."""


# ---------------------------------------------------------------- exactness

def _layers(device: torch.device) -> dict[str, tuple[torch.Tensor, bool]]:
    """Named masks on ``device`` and whether to score them with int64 indices."""
    generator = torch.Generator().manual_seed(20260101)

    def random(shape: tuple[int, int], density: float, isolate: bool = False) -> torch.Tensor:
        mask = torch.rand(shape, generator=generator) < density
        if isolate:
            mask[torch.randperm(shape[0], generator=generator)[: shape[0] // 5]] = False
            mask[:, torch.randperm(shape[1], generator=generator)[: shape[1] // 5]] = False
        return mask

    hubs = random((2048, 2048), 0.002)
    hubs[torch.randperm(2048, generator=generator)[:3]] = True  # three inputs linked to every output
    full_but_one = torch.ones(100, 80, dtype=torch.bool)
    full_but_one[40, 33] = False
    layers = {
        "1568x1568 1%": (random((1568, 1568), 0.01), False),
        "784x1568 1% (transposed)": (random((784, 1568), 0.01), False),
        "3000x500 5%": (random((3000, 500), 0.05), False),
        "300x400 20% isolated nodes": (random((300, 400), 0.2, isolate=True), False),
        "300x400 20% int64 indices": (random((300, 400), 0.2, isolate=True), True),
        "256x2048 15% wide outputs": (random((256, 2048), 0.15), False),
        "200x200 50%": (random((200, 200), 0.5), False),
        "300x300 90%": (random((300, 300), 0.9), False),
        "2048x2048 0.2% + 3 hub inputs": (hubs, False),
        "64x64 full": (torch.ones(64, 64, dtype=torch.bool), False),
        "100x80 full but one": (full_but_one, False),
        "64x96 empty": (torch.zeros(64, 96, dtype=torch.bool), False),
        "1x500 single row": (random((1, 500), 0.5), False),
        "500x1 single column": (random((500, 1), 0.5), False),
        "1x1 full": (torch.ones(1, 1, dtype=torch.bool), False),
        "0x5 no inputs": (torch.zeros(0, 5, dtype=torch.bool), False),
    }
    return {name: (mask.to(device), int64) for name, (mask, int64) in layers.items()}


def _exactness(device: torch.device, errors: list[dict]) -> list[dict]:
    print("\n== exactness: triton vs torch (float64 reference) ==", flush=True)
    rows = []
    for name, (mask, int64) in _layers(device).items():
        for rule in available_rules():
            reference = link_scores(mask, rule, dtype=torch.float64, scorer="torch")
            for dtype in (torch.float64, torch.float32):
                row = {"layer": name, "rule": rule, "dtype": str(dtype).removeprefix("torch."),
                       "max_rel_error": None, "ok": None}

                def triton_scores() -> torch.Tensor:
                    return link_scores(mask, rule, dtype=dtype, scorer="triton")

                got = _soft(errors, f"exactness {name} {rule} {row['dtype']}",
                            _with_int64_indices(triton_scores) if int64 else triton_scores)
                if got is not None:
                    error = _max_relative_error(got.double(), reference)
                    row.update(max_rel_error=error, ok=bool(error <= TOLERANCE[dtype] and got.dtype == dtype
                                                            and bool((got[mask] == 0).all())))
                rows.append(row)
                print(f"{name:32s} {rule:8s} {row['dtype']:8s} max rel error {_format(row['max_rel_error'])}"
                      f"{'' if row['ok'] else '  <-- FAIL'}", flush=True)
    return rows


def _with_int64_indices(call: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def wrapped() -> torch.Tensor:
        saved = graph.INT32_POSITIONS
        graph.INT32_POSITIONS = 0  # as for layers past 2**31 positions
        try:
            return call()
        finally:
            graph.INT32_POSITIONS = saved
    return wrapped


def _max_relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / |expected|; a nonzero score where the reference is 0 counts as infinite."""
    if expected.numel() == 0:
        return 0.0
    difference = (got - expected).abs()
    relative = torch.where(expected != 0, difference / expected.abs(), torch.where(difference > 0, torch.inf, 0.0))
    return float(relative.max())


# ---------------------------------------------------------------- speed

def _square_mask(n: int, device: torch.device) -> torch.Tensor:
    """The mask ``bench/linkpred.py`` times for an n x n layer."""
    return (torch.rand(n, n, generator=torch.Generator().manual_seed(n * 7919 + n)) < DENSITY).to(device)


def _timings(device: torch.device, scorers: tuple[str, ...], repeats: int, errors: list[dict]) -> list[dict]:
    print(f"\n== speed at 1% density: {', '.join(scorers)} ==", flush=True)
    rows = []
    for n in TIMED_SIZES:
        mask = _square_mask(n, device)
        paths = count_l3_paths(mask)
        for rule in TIMED_RULES:
            for scorer in scorers:
                def call() -> torch.Tensor:
                    return link_scores(mask, rule, scorer=scorer)

                measured = _soft(errors, f"timing {n}x{n} {rule} {scorer}", lambda: _measure(call, device, repeats))
                row = {"layer": f"{n}x{n}", "rule": rule, "scorer": scorer, "l3_paths": paths,
                       **(measured or {"seconds_median": None, "seconds_all": None, "peak_memory_mib": None})}
                if measured:
                    row["paths_per_second"] = paths / measured["seconds_median"]
                rows.append(row)
                print(f"{n}x{n} {rule:8s} {scorer:6s} {_format(row['seconds_median'], 's')} "
                      f"peak {_format(row['peak_memory_mib'], 'MiB')}", flush=True)
    return rows


def _compare_scorers(rows: list[dict]) -> None:
    """Set ``speedup_vs_torch`` on every timed row whose torch twin was timed too."""
    torch_seconds = {(r["layer"], r["rule"]): r["seconds_median"] for r in rows if r["scorer"] == "torch"}
    for row in rows:
        reference = torch_seconds.get((row["layer"], row["rule"]))
        if row["scorer"] != "torch" and reference and row["seconds_median"]:
            row["speedup_vs_torch"] = reference / row["seconds_median"]


def _tile_sweep(device: torch.device, repeats: int, errors: list[dict]) -> list[dict]:
    print("\n== triton tile sweep, CH3-L3 ==", flush=True)
    rows = []
    defaults = (triton_kernels.TILE_PATHS, triton_kernels.PATHS_PER_THREAD)
    for n in SWEEP_SIZES:
        mask = _square_mask(n, device)
        for tile_paths, per_thread in SWEEP_TILES:
            triton_kernels.TILE_PATHS, triton_kernels.PATHS_PER_THREAD = tile_paths, per_thread
            try:
                measured = _soft(errors, f"sweep {n}x{n} tile {tile_paths}/{per_thread}",
                                 lambda: _measure(lambda: link_scores(mask, "CH3-L3", scorer="triton"), device,
                                                  repeats, peak=False))
            finally:
                triton_kernels.TILE_PATHS, triton_kernels.PATHS_PER_THREAD = defaults
            seconds = measured["seconds_median"] if measured else None
            rows.append({"layer": f"{n}x{n}", "tile_paths": tile_paths, "paths_per_thread": per_thread,
                         "seconds_median": seconds})
            print(f"{n}x{n} tile {tile_paths:5d} paths, {per_thread:2d} per thread: {_format(seconds, 's')}",
                  flush=True)
    return rows


def _profile(device: torch.device, errors: list[dict]) -> list[dict]:
    """GPU time per kernel of one triton CH3-L3 call on the 3072 x 3072 layer."""
    print("\n== profile: triton CH3-L3, 3072x3072 ==", flush=True)
    mask = _square_mask(3072, device)

    def run() -> list[dict]:
        link_scores(mask, "CH3-L3", scorer="triton")
        torch.cuda.synchronize(device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as profiler:
            link_scores(mask, "CH3-L3", scorer="triton")
            torch.cuda.synchronize(device)
        events = [event for event in profiler.key_averages() if _device_us(event) > 0]
        events.sort(key=_device_us, reverse=True)
        return [{"name": event.key[:80], "calls": event.count, "device_ms": _device_us(event) / 1000} for event in
                events[:12]]

    rows = _soft(errors, "profile", run) or []
    for row in rows:
        print(f"{row['device_ms']:9.3f} ms  {row['calls']:3d}x  {row['name']}", flush=True)
    return rows


def _device_us(event: object) -> float:
    for attribute in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, attribute, None)
        if value is not None:
            return float(value)
    return 0.0


def _measure(call: Callable[[], torch.Tensor], device: torch.device, repeats: int, peak: bool = True) -> dict:
    call()  # warm-up: compilation, caches
    torch.cuda.synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    result = {"seconds_median": statistics.median(seconds), "seconds_all": seconds, "peak_memory_mib": None}
    if peak:
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        result["peak_memory_mib"] = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    return result


# ---------------------------------------------------------------- reporting

def _soft(errors: list[dict], what: str, call: Callable[[], object]) -> object | None:
    """Run ``call``; on an exception print its traceback (once per distinct message), record it, return None.

    Raises ContextLost when CUDA cannot synchronise afterwards.
    """
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - the check goes on and reports every failure
        message = f"{type(error).__name__}: {error}"
        entry = {"what": what, "message": message}
        if all(earlier["message"] != message for earlier in errors):
            entry["traceback"] = traceback.format_exc()
            print(f"\n!! {what} failed:\n{entry['traceback']}", flush=True)
        else:
            print(f"!! {what} failed: {message[:200]}", flush=True)
        errors.append(entry)
    try:
        torch.cuda.synchronize()
    except Exception as error:  # noqa: BLE001
        raise ContextLost(f"{type(error).__name__}: {error}") from error
    return None


def _format(value: float | None, unit: str = "") -> str:
    if value is None:
        return "error"
    return f"{value:.4g} {unit}".strip() if unit else f"{value:.2e}"


def _environment(device: torch.device) -> dict[str, object]:
    environment = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                   "cuda": torch.version.cuda, "triton": None, "python": sys.version.split()[0]}
    if triton_kernels.AVAILABLE:
        environment["triton"] = triton_kernels.triton.__version__
    return environment


def _table(rows: list[dict], columns: list[str]) -> str:
    return markdown_table([{key: "—" if value is None else value for key, value in row.items()} for row in rows],
                          columns)


def _tables(report: dict) -> str:
    environment = report["environment"]
    exactness = _exactness_by_layer(report["exactness"])
    passed = sum(row["checks passed"] for row in exactness)
    worst = {dtype: max((row[dtype] for row in exactness if row[dtype] is not None), default=None)
             for dtype in ("float64", "float32")}
    timings = sorted(report["timings"], key=lambda row: (row["l3_paths"], row["rule"], row["scorer"]))
    lines = [
        f"Triton link-prediction check on {environment['device']} (torch {environment['torch']}, "
        f"triton {environment['triton']}).",
        "",
        f"Exactness: {passed}/{len(report['exactness'])} checks passed; worst relative error vs torch float64: "
        + ", ".join(f"{dtype} {_format(error)}" for dtype, error in worst.items()) + ".",
        "",
        "Worst relative error per layer, over all rules (tolerance: float64 1e-9, float32 1e-5):",
        "",
        _table(exactness, ["layer", "float64", "float32", "checks passed", "checks"]),
        "",
        "Speed at 1% density (median seconds; peak memory in MiB):",
        "",
        _table(timings, ["layer", "rule", "scorer", "l3_paths", "seconds_median", "paths_per_second",
                         "speedup_vs_torch", "peak_memory_mib"]),
        "",
        "Triton tile sweep, CH3-L3 (median seconds):",
        "",
        _table(report["tile_sweep"], ["layer", "tile_paths", "paths_per_thread", "seconds_median"]),
    ]
    if report["profile"]:
        lines += ["", "GPU time per kernel, one triton CH3-L3 call at 3072x3072:", "",
                  _table(report["profile"], ["name", "calls", "device_ms"])]
    if report["errors"]:
        messages = {}
        for entry in report["errors"]:
            messages.setdefault(entry["message"], []).append(entry["what"])
        lines += ["", f"Errors: {len(report['errors'])} failed calls, {len(messages)} distinct messages:"]
        lines += [f"- {message[:200]} ({len(whats)}x, first: {whats[0]})" for message, whats in messages.items()]
    return "\n".join(lines)


def _exactness_by_layer(rows: list[dict]) -> list[dict]:
    """Worst relative error per layer and dtype over the rules (None where a call failed)."""
    by_layer = {}
    for row in rows:
        summary = by_layer.setdefault(row["layer"], {"layer": row["layer"], "float64": 0.0, "float32": 0.0,
                                                     "checks passed": 0, "checks": 0})
        summary["checks"] += 1
        summary["checks passed"] += row["ok"] is True
        if row["max_rel_error"] is None or summary[row["dtype"]] is None:
            summary[row["dtype"]] = None
        else:
            summary[row["dtype"]] = max(summary[row["dtype"]], row["max_rel_error"])
    return list(by_layer.values())


if __name__ == "__main__":
    sys.exit(main())
