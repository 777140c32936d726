"""Epoch time of each DST method against SET on the paper MLP (784 → 3 × 1568, 1% density, batch 32).

An epoch is estimated, not run: the benchmark times ``--steps`` training steps on real Fashion-MNIST
batches (forward, backward, SGD with momentum, the sparse layers' after-step invariant) and ``--updates``
evolution updates
(each after a step that captured dense gradients, at the progress of the first update of a 100-epoch
run, after one untimed warm-up update that compiles kernels), then extrapolates

    epoch = steps_per_epoch · (seconds per step) + updates_per_epoch · (seconds per update)

with 60 000 / 32 = 1875 steps per epoch and the method's own update schedule (one update per epoch for
the paper's settings). Step timings run in ``--rounds`` rounds that visit every method in turn, and
each method keeps its median round, so a burst of load on a shared machine does not land on one
method only. Phase times of the update (removal, percolation, CH scoring and selection, regrowth) are
reported too. The sparse layers use the storage that training would choose (``--storage auto``)
or the one given. Target: a CHT epoch ≤ 1.15 × a SET epoch.

    python bench/evolution_overhead.py [--device auto|cpu|cuda] [--storage auto|masked|sparse]
                                       [--methods set cht ...] [--steps 50] [--rounds 3] [--updates 2]
                                       [--dim 2] [--out bench/results]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, pick_device, synchronize, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.data import DATASETS, load_tensors, prepare_dataset  # noqa: E402
from cht.dst import Evolution, Method, available_methods, get_method  # noqa: E402
from cht.models import build_model  # noqa: E402
from cht.sparse import after_optimizer_step, sparse_layers  # noqa: E402
from cht.train import build_sparse_topology, final_link_counts, resolve_storage, store_layers  # noqa: E402

DATASET = "fashion_mnist"
DENSITY = 0.01
BATCH = 32
EPOCHS = 100
PHASES = ("removal", "percolation", "scoring", "selection", "regrowth")
TARGET_RATIO = 1.15


@dataclass
class Trainee:
    """One method's model, optimiser and evolution engine, ready to step and evolve."""

    method: Method
    evolution: Evolution
    train_step: Callable[[], None]
    storage: str
    step_times: list[float] = field(default_factory=list)


def prepare(method_name: str, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device,
            data_root: str, storage: str, dim: int) -> Trainee:
    """Build the paper MLP for a method as the training loop does (topology, weights, storage, engine)."""
    config = TrainConfig(method=method_name, dataset=DATASET, dim=dim, density=DENSITY, batch_size=BATCH,
                         epochs=EPOCHS, device=str(device), storage=storage, data_root=data_root, tracking=False,
                         progress=False)
    method = get_method(method_name)
    spec = DATASETS[DATASET]
    model = build_model("mlp", spec.input_shape, spec.num_classes, dim=dim, sparse=method.sparse)
    build_sparse_topology(model, config, inputs)
    layers = sparse_layers(model)
    storage = resolve_storage(config, device)
    store_layers(layers, storage)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    evolution = Evolution(method, layers, optimizer, torch.Generator(device=device).manual_seed(1),
                          final_links=final_link_counts(model, config))
    loss_function = nn.CrossEntropyLoss()
    x, y = inputs.to(device), targets.to(device)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
    position = 0

    def train_step() -> None:
        nonlocal position
        index = order[position:position + BATCH]
        position = (position + BATCH) % (len(x) - BATCH)
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(x[index]), y[index]).backward()
        optimizer.step()
        after_optimizer_step(layers)

    return Trainee(method, evolution, train_step, storage)


def seconds_of(work: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def time_updates(trainee: Trainee, updates: int, steps_per_epoch: int, device: torch.device) -> dict[str, float]:
    """Median update time and phase times, after one untimed warm-up update."""
    schedule = trainee.method.schedule
    progress = schedule.interval / (EPOCHS if schedule.unit == "epoch" else EPOCHS * steps_per_epoch)
    totals, phases = [], {phase: [] for phase in PHASES}
    for repeat in range(updates + 1):
        trainee.evolution.capture_gradients(True)
        trainee.train_step()
        records = []
        seconds = seconds_of(lambda: records.append(trainee.evolution.update(progress, 1, steps_per_epoch)), device)
        trainee.evolution.capture_gradients(False)
        if repeat == 0:
            continue
        totals.append(seconds)
        for phase in PHASES:
            phases[phase].append(records[0].seconds.get(phase, 0.0))
    return {"update_s": statistics.median(totals),
            **{f"{phase}_s": statistics.median(times) for phase, times in phases.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--storage", default="auto", choices=TrainConfig.json_schema()["properties"]["storage"]["enum"],
                        help="sparse-layer storage; auto picks as training does")
    parser.add_argument("--dim", type=int, default=2, help="hidden width in multiples of the input size")
    parser.add_argument("--methods", nargs="+", default=["set", "rigl", "mest", "granet", "cht", "cht_iclr",
                                                         "chts", "chtss"],
                        choices=available_methods(), help="methods to time (SET is always included)")
    parser.add_argument("--steps", type=int, default=50, help="training steps timed per method and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of step timings (median kept)")
    parser.add_argument("--updates", type=int, default=2, help="evolution updates timed per method (median)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if min(args.steps, args.rounds, args.updates, args.dim) < 1:
        parser.error("--steps, --rounds, --updates and --dim must be positive")

    device = pick_device(args.device)
    prepare_dataset(DATASET, args.data_root, sources=args.data_source)
    inputs, targets = load_tensors(DATASET, args.data_root, train=True)
    steps_per_epoch = math.ceil(len(inputs) / BATCH)
    names = ["set"] + [m for m in args.methods if m != "set"]
    trainees = {name: prepare(name, inputs, targets, device, args.data_root, args.storage, args.dim)
                for name in names}
    storage = trainees["set"].storage

    for trainee in trainees.values():
        trainee.train_step()  # warm-up: allocates optimiser state and gradient buffers
    for _ in range(args.rounds):
        for trainee in trainees.values():
            trainee.step_times.append(seconds_of(lambda: [trainee.train_step() for _ in range(args.steps)],
                                                 device) / args.steps)

    rows = []
    for name, trainee in trainees.items():
        step_seconds = statistics.median(trainee.step_times)
        schedule = trainee.method.schedule
        if trainee.method.evolves:
            update = time_updates(trainee, args.updates, steps_per_epoch, device)
            updates_per_epoch = (1 / schedule.interval if schedule.unit == "epoch"
                                 else steps_per_epoch / schedule.interval)
        else:
            update, updates_per_epoch = {"update_s": 0.0, **{f"{p}_s": 0.0 for p in PHASES}}, 0.0
        epoch = step_seconds * steps_per_epoch + updates_per_epoch * update["update_s"]
        rows.append({"method": name, "device": device_name(device), "storage": storage, "step_s": step_seconds,
                     "train_epoch_s": step_seconds * steps_per_epoch, "updates_per_epoch": updates_per_epoch,
                     **update, "epoch_s": epoch,
                     "evolution_share": updates_per_epoch * update["update_s"] / epoch})
        print(f"{name}: epoch ≈ {epoch:.1f} s (update {update['update_s']:.2f} s)", flush=True)
    for row in rows:
        row["epoch_over_set"] = row["epoch_s"] / rows[0]["epoch_s"]

    columns = ["method", "device", "storage", "step_s", "train_epoch_s", "update_s", *[f"{p}_s" for p in PHASES],
               "epoch_s", "evolution_share", "epoch_over_set"]
    cht_row = next((row for row in rows if row["method"] == "cht"), None)
    verdict = ("" if cht_row is None else
               f"\n\nCHT epoch / SET epoch = {cht_row['epoch_over_set']:.3f} (target ≤ {TARGET_RATIO}): "
               f"{'met' if cht_row['epoch_over_set'] <= TARGET_RATIO else 'NOT met'}.")
    note = (f"\n\nPaper MLP 784→3×{784 * args.dim}, density {DENSITY}, batch {BATCH}, real Fashion-MNIST. Epoch = "
            f"{steps_per_epoch} × step_s (median of {args.rounds} interleaved rounds of {args.steps} steps) + "
            f"updates per epoch × update_s (median of {args.updates} after a warm-up, at the first update of a "
            f"{EPOCHS}-epoch run).")
    payload = {"torch": torch.__version__, "device": device_name(device), "storage": storage, "dim": args.dim,
               "steps": args.steps,
               "rounds": args.rounds, "updates": args.updates, "target_ratio": TARGET_RATIO, "rows": rows}
    table = markdown_table(rows, columns) + verdict + note
    write_results(args.out, f"evolution_overhead_{device.type}", payload, table)


if __name__ == "__main__":
    main()
