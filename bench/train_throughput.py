"""Training throughput (samples/s) of the paper MLP: dense (FC), 1%-dense masked and 1%-dense true-sparse.

Times full optimiser steps (forward, backward, SGD with momentum and weight decay, the layers'
invariant) on real Fashion-MNIST batches, side by side in one process: dim 1 and 2, batch 32 and 256,
and on a CPU with 1 and 2 threads. A density sweep (dim 1, batch 32) locates where the sparse storage
stops beating the masked one, which sets ``cht.config.SPARSE_STORAGE_MAX_DENSITY``.

    python bench/train_throughput.py [--device auto|cpu|cuda] [--steps 100] [--out bench/results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, median_seconds, markdown_table, pick_device, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.data import DATASETS, load_tensors, prepare_dataset  # noqa: E402
from cht.models import build_model  # noqa: E402
from cht.sparse import after_optimizer_step, sparse_layers  # noqa: E402
from cht.train import build_sparse_topology  # noqa: E402


def measure(method: str, storage: str, dim: int, density: float, batch_size: int, inputs: torch.Tensor,
            targets: torch.Tensor, device: torch.device, steps: int, data_root: str) -> float:
    """Samples per second of ``steps`` training steps (median of 3 after a warm-up)."""
    config = TrainConfig(method=method, dim=dim, density=density, batch_size=batch_size, device=str(device),
                         data_root=data_root, tracking=False, progress=False)
    spec = DATASETS[config.dataset]
    model = build_model("mlp", spec.input_shape, spec.num_classes, dim=dim, sparse=method != "fc", storage=storage)
    build_sparse_topology(model, config, inputs)
    model.to(device)
    layers = sparse_layers(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    loss_function = nn.CrossEntropyLoss()
    x, y = inputs.to(device), targets.to(device)

    def run_steps() -> None:
        for step in range(steps):
            start = (step * batch_size) % (len(x) - batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss_function(model(x[start:start + batch_size]), y[start:start + batch_size]).backward()
            optimizer.step()
            after_optimizer_step(layers)

    seconds = median_seconds(run_steps, device, repeats=3)
    return steps * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to compare (comma-separated)")
    parser.add_argument("--densities", default="0.01,0.05,0.1,0.2,0.4", help="density sweep (dim 1, batch 32)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    device = pick_device(args.device)
    prepare_dataset("fashion_mnist", args.data_root, sources=args.data_source)
    inputs, targets = load_tensors("fashion_mnist", args.data_root, train=True, max_samples=20000)
    thread_counts = [int(t) for t in args.threads.split(",")] if device.type == "cpu" else [torch.get_num_threads()]
    rows, sweep = [], []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for dim in (1, 2):
            for batch_size in (32, 256):
                speeds = {name: measure(method, storage, dim, 0.01, batch_size, inputs, targets, device,
                                        args.steps, args.data_root)
                          for name, method, storage in (("fc", "fc", "masked"), ("masked", "static", "masked"),
                                                        ("sparse", "static", "sparse"))}
                rows.append({"device": device_name(device), "threads": threads, "dim": dim, "batch": batch_size,
                             "fc_samples_per_s": speeds["fc"], "masked_1pct_samples_per_s": speeds["masked"],
                             "sparse_1pct_samples_per_s": speeds["sparse"],
                             "sparse_over_masked": speeds["sparse"] / speeds["masked"],
                             "sparse_over_fc": speeds["sparse"] / speeds["fc"]})
        for density in (float(d) for d in args.densities.split(",")):
            masked, sparse = (measure("static", storage, 1, density, 32, inputs, targets, device, args.steps,
                                      args.data_root) for storage in ("masked", "sparse"))
            sweep.append({"device": device_name(device), "threads": threads, "density": density,
                          "masked_samples_per_s": masked, "sparse_samples_per_s": sparse,
                          "sparse_over_masked": sparse / masked})
    table = markdown_table(rows, ["device", "threads", "dim", "batch", "fc_samples_per_s",
                                  "masked_1pct_samples_per_s", "sparse_1pct_samples_per_s", "sparse_over_masked",
                                  "sparse_over_fc"])
    table += "\n\nDensity sweep (dim 1, batch 32):\n\n" + markdown_table(
        sweep, ["device", "threads", "density", "masked_samples_per_s", "sparse_samples_per_s", "sparse_over_masked"])
    write_results(args.out, f"train_throughput_{device.type}",
                  {"torch": torch.__version__, "rows": rows, "density_sweep": sweep}, table)


if __name__ == "__main__":
    main()
