"""Training throughput of the CNN backbones, dense head against CHT head, and CH scoring per update.

For each backbone, two models are built as the training loop builds them: ``fc`` (the dense head) and
``cht`` (the sparse head at ``--density``, CSTI request falling back to Erdős–Rényi as released). Each
times ``--steps`` training steps (forward, backward, SGD with momentum, mask re-application) on real
batches of ``--dataset`` already on the device (data loading is not timed), after warm-up steps, and
reports images/s. The CHT model then runs ``--updates`` evolution updates (after one untimed warm-up
update), whose CH scoring time is set against an epoch of the dataset's training split at this speed
(one update per epoch, the released ``--update_interval 1``):

    scoring share = scoring seconds per update / (steps per epoch · seconds per step)

Mixed precision (bf16 autocast of the trunk) and channels-last memory follow the training defaults:
on with CUDA, off on the CPU. ``--quick`` (default sizes for a CPU, or < 2 minutes on an H200) times
fewer steps.

    python bench/cnn_throughput.py [--device auto|cpu|cuda] [--dataset fashion_mnist|cifar10|...]
        [--models vgg16 googlenet resnet50 resnet152] [--batch-size 128] [--steps 20] [--updates 2]
        [--quick] [--data-root data] [--data-source DIR] [--out bench/results]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, pick_device, synchronize, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.data import DATASETS, prepare_dataset  # noqa: E402
from cht.data.batches import batch_sources  # noqa: E402
from cht.dst import Evolution, get_method  # noqa: E402
from cht.models import BACKBONES, build_model, configure_performance  # noqa: E402
from cht.sparse import after_optimizer_step, sparse_layers  # noqa: E402
from cht.train import build_sparse_topology, final_link_counts  # noqa: E402

HEADS = ("fc", "cht")
EPOCHS = 200  # the released CNN schedule: the update timed is the first of a 200-epoch run


def real_batches(dataset: str, root: str, sources: list[str], batch_size: int, count: int,
                 device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` shuffled training batches of the real dataset, on the device."""
    source, _ = batch_sources(dataset, root, batch_size=batch_size, seed=0, augment=False, sources=sources)
    batches = []
    for inputs, targets in source.epoch(0):
        batches.append((inputs.to(device), targets.to(device)))
        if len(batches) == count:
            break
    return batches


def measure(backbone: str, head: str, batches: list, args: argparse.Namespace, device: torch.device,
            steps_per_epoch: int) -> dict:
    config = TrainConfig(method=head, model=backbone, dataset=args.dataset, dim=args.dim, density=args.density,
                         batch_size=args.batch_size, epochs=EPOCHS, lr=0.1, device=str(device),
                         data_root=args.data_root, tracking=False, progress=False)
    method = get_method(head)
    spec = DATASETS[args.dataset]
    torch.manual_seed(0)
    model = build_model(backbone, spec.input_shape, spec.num_classes, dim=args.dim, sparse=method.sparse)
    build_sparse_topology(model, config, None)
    model.to(device)
    configure_performance(model, device, None, None)
    layers = sparse_layers(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    loss_function = nn.CrossEntropyLoss()
    model.train()

    def step(index: int) -> None:
        inputs, targets = batches[index % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(inputs), targets).backward()
        optimizer.step()
        after_optimizer_step(layers)

    for index in range(args.warmup):
        step(index)
    synchronize(device)
    started = time.perf_counter()
    for index in range(args.steps):
        step(index)
    synchronize(device)
    step_seconds = (time.perf_counter() - started) / args.steps
    row = {"backbone": backbone, "head": head, "images_per_s": args.batch_size / step_seconds,
           "step_s": step_seconds, "epoch_s": step_seconds * steps_per_epoch,
           "sparse_layers": " ".join(f"{layer.in_features}x{layer.out_features}" for layer in layers)}
    if method.evolves:
        evolution = Evolution(method.with_schedule(interval=1), layers, optimizer,
                              torch.Generator(device=device).manual_seed(1),
                              final_links=final_link_counts(model, config))
        updates, scoring = [], []
        for repeat in range(args.updates + 1):
            evolution.capture_gradients(True)
            step(repeat)
            synchronize(device)
            started = time.perf_counter()
            record = evolution.update(1 / EPOCHS, epoch=1, step=steps_per_epoch)
            synchronize(device)
            evolution.capture_gradients(False)
            if repeat:
                updates.append(time.perf_counter() - started)
                scoring.append(record.seconds.get("scoring", 0.0))
        row.update(update_s=statistics.median(updates), scoring_s=statistics.median(scoring))
        row["scoring_share"] = row["scoring_s"] / row["epoch_s"]
        row["update_share"] = row["update_s"] / row["epoch_s"]
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATASETS),
                        help="real images to time on (their shape picks the stem; CIFAR for the paper's setting)")
    parser.add_argument("--models", nargs="+", default=sorted(BACKBONES), choices=sorted(BACKBONES))
    parser.add_argument("--dim", type=int, default=2, help="head width multiple (released: 2)")
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, help="default: 128 on CUDA, 16 on CPU")
    parser.add_argument("--steps", type=int, help="timed training steps (default: 30 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--updates", type=int, default=2, help="timed evolution updates of the CHT head")
    parser.add_argument("--quick", action="store_true", help="fewer steps (10 on CUDA, 2 on CPU), one update")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 16)
    args.steps = args.steps or ((10 if on_cuda else 2) if args.quick else (30 if on_cuda else 3))
    if args.quick:
        args.updates = 1
    if min(args.batch_size, args.steps, args.updates) < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --updates must be positive, --warmup ≥ 0")

    prepare_dataset(args.dataset, args.data_root, sources=args.data_source)
    batches = real_batches(args.dataset, args.data_root, args.data_source, args.batch_size,
                           args.warmup + args.steps, device)
    spec = DATASETS[args.dataset]
    steps_per_epoch = math.ceil(spec.split_sizes[0] / args.batch_size)
    rows = []
    for backbone in args.models:
        for head in HEADS:
            rows.append(measure(backbone, head, batches, args, device, steps_per_epoch))
            print(f"{backbone} {head}: {rows[-1]['images_per_s']:.1f} images/s", flush=True)
        rows[-1]["cht_over_fc"] = rows[-1]["images_per_s"] / rows[-2]["images_per_s"]

    columns = ["backbone", "head", "sparse_layers", "images_per_s", "cht_over_fc", "epoch_s", "update_s",
               "scoring_s", "scoring_share"]
    note = (f"\n\n{device_name(device)}; {args.dataset} {tuple(spec.input_shape)}, batch {args.batch_size}, head dim "
            f"{args.dim} at density {args.density}; mixed precision and channels-last "
            f"{'on (trunk only)' if on_cuda else 'off'}. images/s: mean over {args.steps} training steps "
            f"after {args.warmup} warm-up steps, data already on the device. epoch_s = {steps_per_epoch} steps × "
            f"step time; scoring_share = CH scoring of one update / epoch_s (one update per epoch).")
    payload = {"torch": torch.__version__, "device": device_name(device), "dataset": args.dataset,
               "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "dim": args.dim,
               "density": args.density, "rows": rows}
    write_results(args.out, f"cnn_throughput_{device.type}", payload, markdown_table(rows, columns) + note)


if __name__ == "__main__":
    main()
