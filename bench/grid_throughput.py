"""Grid throughput: a group of runs trained together (cht.grouped) against the same runs one after another.

The default is the paper grid's Fashion-MNIST dim-1 row: every registered method × 3 seeds (30 runs) of the
1%-dense MLP at batch 32, trained for a few epochs on a subset of the training set. Both sides run the real
training loops (evaluation and topology updates included); the aggregate training samples/s counts every
run's training samples over the summed epoch wall times (set-up, data loading and model building excluded).
``--config`` takes the grid from a pipeline config instead (its methods, seeds, first dim, density and protocol, and
its ``train`` settings: learning rate, weight decay, schedules), e.g. the NeurIPS 2025 Table 7 grid,
``--config config/neurips2025_mlp.yaml --dataset mnist --runs 27``. ``--compile`` adds grouped variants with ``torch.compile`` (``reduce-overhead`` = CUDA graphs) to compare.
``--paper-budget`` trains on the full training set and extrapolates the row's cost at the paper's 100 epochs
from the measured epochs: first epoch (warm-up, compilation) + 99 × the mean of the steady ones (after the first
and, with 3 or more epochs, before the last, which has no topology update).

    python bench/grid_throughput.py [--device auto] [--runs 30] [--max-train-samples 15000] [--epochs 3]
        [--compile off reduce-overhead] [--paper-budget] [--out bench/results]

The training subset should be large enough that steps, not the members' topology updates (which a group
runs one after another, as the sequential runs do), dominate an epoch: 15000 samples = 469 steps per epoch.
On a small CPU: ``--device cpu --runs 4 --max-train-samples 640 --epochs 3``.

Writes ``grid_throughput_<device>[_paper].json`` and ``.md`` and prints the table; exits non-zero on error.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, pick_device, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.data import DATASETS, prepare_dataset  # noqa: E402
from cht.dst import available_methods  # noqa: E402
from cht.grouped import COMPILE_MODES, train_group  # noqa: E402
from cht.train import train  # noqa: E402

PAPER_EPOCHS = 100


# Keys of a pipeline config's ``train`` section that shape the training; epochs, sample counts and the device
# stay the benchmark's.
TRAINING_KEYS = ("lr", "momentum", "weight_decay", "lr_final_factor", "lr_decay_fraction", "update_interval",
                 "update_unit", "zeta", "zeta_decay", "end_fraction", "batch_size")


def apply_pipeline_config(args: argparse.Namespace) -> dict:
    """Take the grid and training settings of ``args.config`` (a pipeline YAML); returns the training keys."""
    config = yaml.safe_load(args.config.read_text())
    args.methods = config.get("methods", args.methods)
    args.seeds = len(config.get("seeds", range(args.seeds)))
    args.dim, args.density = config["dims"][0], config["densities"][0]
    args.protocol = config.get("protocols", [args.protocol])[0]
    settings = {**config.get("train", {}), **config.get("train_per_dataset", {}).get(args.dataset, {})}
    return {key: settings[key] for key in TRAINING_KEYS if key in settings}


def grid_configs(args: argparse.Namespace, device: torch.device, training: dict | None = None) -> list[TrainConfig]:
    """The first ``--runs`` of methods × seeds (method-major, as the pipeline groups them)."""
    members = list(itertools.product(args.methods, range(args.seeds)))[:args.runs]
    settings = {"batch_size": args.batch_size, **(training or {})}
    return [TrainConfig(method=method, seed=seed, dataset=args.dataset, dim=args.dim, density=args.density,
                        protocol=args.protocol, epochs=args.epochs, device=str(device),
                        max_train_samples=args.max_train_samples, data_root=args.data_root,
                        data_sources=args.data_source, tracking=False, progress=False, **settings)
            for method, seed in members]


def summarise_times(epoch_seconds: list[list[float]], samples: int, paper_budget: bool) -> dict[str, float]:
    """Throughput over all epochs and over the steady ones (after the first); with ``paper_budget`` the cost
    of 100 epochs (meaningful on the full training set only)."""
    epochs = len(epoch_seconds[0])
    per_epoch = [sum(run[epoch] for run in epoch_seconds) for epoch in range(epochs)]
    total, first = sum(per_epoch), per_epoch[0]
    # Steady epochs: after the first (warm-up, compilation) and, with 3 or more, before the last, which has no
    # topology update after it (a 100-epoch run updates after 99 of its epochs).
    later = per_epoch[1:-1] if epochs >= 3 else per_epoch[1:]
    steady = statistics.mean(later) if later else first
    times = {"seconds": total, "samples_per_s": samples * epochs / total, "steady_samples_per_s": samples / steady}
    if paper_budget:
        times["paper_budget_hours"] = (first + (PAPER_EPOCHS - 1) * steady) / 3600
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=30, help="members of the group (methods × seeds, in order)")
    parser.add_argument("--methods", nargs="+", default=available_methods())
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--dim", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--protocol", default="uniform")
    parser.add_argument("--config", type=Path, help="take the grid and training settings from this pipeline config")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train-samples", type=int, default=15000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", nargs="+", default=["off"], choices=COMPILE_MODES,
                        help="grouped variants to time (off = eager)")
    parser.add_argument("--skip-sequential", action="store_true", help="time only the grouped variants")
    parser.add_argument("--paper-budget", action="store_true",
                        help="full training set; extrapolate the row's cost at 100 epochs from the measured epochs")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.paper_budget:
        args.max_train_samples = None
    if args.runs < 1 or args.epochs < 1:
        parser.error("--runs and --epochs must be positive")

    training = apply_pipeline_config(args) if args.config else {}
    device = pick_device(args.device)
    prepare_dataset(args.dataset, args.data_root, sources=args.data_source)
    configs = grid_configs(args, device, training)
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        sequential = None
        if not args.skip_sequential:
            started = time.perf_counter()
            results = [train(config, scratch / "sequential" / f"{config.method}_{config.seed}") for config in configs]
            wall = time.perf_counter() - started
            samples = len(configs) * _train_samples(results[0])
            sequential = summarise_times([r["epoch_seconds"] for r in results], samples, args.paper_budget)
            rows.append({"mode": "sequential", "runs": len(configs), **sequential, "wall_s": wall,
                         "final_accuracy_mean": statistics.mean(r["final_test_accuracy"] for r in results)})
        for mode in args.compile:
            folder = scratch / f"group_{mode}"
            started = time.perf_counter()
            try:
                results = train_group(configs, [folder / f"{c.method}_{c.seed}" for c in configs],
                                      folder / "group.pt", compile_mode=mode)
            except Exception as error:  # one failing variant (e.g. a compiler missing) must not hide the others
                traceback.print_exc()
                rows.append({"mode": f"grouped ({mode})", "runs": len(configs), "error": repr(error)[:300]})
                failed = True
                continue
            wall = time.perf_counter() - started
            samples = len(configs) * _train_samples(results[0])
            grouped = summarise_times([results[0]["epoch_seconds"]], samples, args.paper_budget)
            row = {"mode": f"grouped ({mode})", "runs": len(configs), **grouped, "wall_s": wall,
                   "final_accuracy_mean": statistics.mean(r["final_test_accuracy"] for r in results)}
            if sequential:
                row["speedup"] = grouped["samples_per_s"] / sequential["samples_per_s"]
                row["steady_speedup"] = grouped["steady_samples_per_s"] / sequential["steady_samples_per_s"]
            rows.append(row)

    columns = ["mode", "runs", "samples_per_s", "steady_samples_per_s", "speedup", "steady_speedup",
               "paper_budget_hours", "seconds", "wall_s", "final_accuracy_mean"]
    if failed:
        columns.append("error")
    table = markdown_table(rows, columns)
    heading = (f"{device_name(device)}: {len(configs)} runs of {args.dataset} MLP dim {args.dim}, density "
               f"{args.density}, protocol {args.protocol}, batch {configs[0].batch_size}, {args.epochs} epochs on "
               f"{args.max_train_samples or 'all'} training samples; torch {torch.__version__}")
    payload = {"torch": torch.__version__, "device": device_name(device), "arguments": {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}, "rows": rows}
    label = f"_{args.config.stem}_{args.dataset}" if args.config else ""
    name = f"grid_throughput_{device.type}{label}{'_paper' if args.paper_budget else ''}"
    write_results(args.out, name, payload, f"{heading}\n\n{table}")
    return 1 if failed else 0


def _train_samples(metrics: dict) -> int:
    """Training samples per epoch of a run (its ``max_train_samples`` prefix, at most the whole split)."""
    config = metrics["config"]
    full = DATASETS[config["dataset"]].split_sizes[0]
    return min(config["max_train_samples"] or full, full)


if __name__ == "__main__":
    sys.exit(main())
