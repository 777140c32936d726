"""Training throughput (samples/s) of the paper MLP: dense (FC) against the 1%-dense masked MLP.

Times full optimiser steps (forward, backward, SGD with momentum, mask re-application) on real
Fashion-MNIST batches, for dim 1 and 2 and batch sizes 32 and 256.

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
from cht.sparse import apply_masks, sparse_layers  # noqa: E402
from cht.train import build_sparse_topology  # noqa: E402


def measure(method: str, dim: int, batch_size: int, inputs: torch.Tensor, targets: torch.Tensor,
            device: torch.device, steps: int, data_root: str) -> float:
    config = TrainConfig(method=method, dim=dim, density=0.01, batch_size=batch_size, device=str(device),
                         data_root=data_root, tracking=False, progress=False)
    spec = DATASETS[config.dataset]
    model = build_model("mlp", spec.input_shape, spec.num_classes, dim=dim, sparse=method != "fc")
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
            apply_masks(layers)

    seconds = median_seconds(run_steps, device, repeats=3)
    return steps * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    device = pick_device(args.device)
    prepare_dataset("fashion_mnist", args.data_root, sources=args.data_source)
    inputs, targets = load_tensors("fashion_mnist", args.data_root, train=True, max_samples=20000)
    rows = []
    for dim in (1, 2):
        for batch_size in (32, 256):
            dense = measure("fc", dim, batch_size, inputs, targets, device, args.steps, args.data_root)
            masked = measure("static", dim, batch_size, inputs, targets, device, args.steps, args.data_root)
            rows.append({"device": device_name(device), "dim": dim, "batch": batch_size,
                         "fc_samples_per_s": dense, "masked_1pct_samples_per_s": masked,
                         "masked_over_fc": masked / dense})
    table = markdown_table(rows, ["device", "dim", "batch", "fc_samples_per_s", "masked_1pct_samples_per_s",
                                  "masked_over_fc"])
    write_results(args.out, f"train_throughput_{device.type}", {"torch": torch.__version__, "rows": rows}, table)


if __name__ == "__main__":
    main()
