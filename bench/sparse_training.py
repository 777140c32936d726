"""True-sparse training at the paper's scale and far beyond it, on a CPU.

Two measurements (each writes JSON + Markdown to bench/results/):

* ``--check epoch``: one whole CHT epoch (training, evaluation, CH3-L3 evolution of the three sparse
  layers) of the paper MLP at dim 2 and 1% density on the full Fashion-MNIST, through ``cht.train``.
* ``--check scale``: an MLP 784 → 3 × ``--width`` (default 65,536) at ``--density`` (default 0.1%), CHT
  (Erdős–Rényi start, as CSTI needs widths that are multiples of the input, SWI, SET removal,
  percolation, CH3-L3 regrowth), trained for one epoch of Fashion-MNIST and then evolved once; reports
  time and peak resident memory. The masked storage would need ``4 · 2 · width²`` bytes for the two
  square layers' weights and masks alone (> 100 GB at 65,536).

    python bench/sparse_training.py --check epoch
    python bench/sparse_training.py --check scale [--width 65536 --density 0.001 --batch-size 256]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.data import load_tensors, prepare_dataset  # noqa: E402
from cht.data.batches import TensorBatches  # noqa: E402
from cht.dst import Evolution, get_method  # noqa: E402
from cht.init import init_topology, init_weights  # noqa: E402
from cht.init.topology import InitContext  # noqa: E402
from cht.models.mlp import SparseMLP  # noqa: E402
from cht.sparse import after_optimizer_step, link_counts, sparse_layers  # noqa: E402
from cht.train import evaluate, train  # noqa: E402


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def epoch_check(args: argparse.Namespace) -> dict:
    """Seconds of the first epoch of a 2-epoch CHT run (its update follows the first epoch)."""
    config = TrainConfig(method="cht", dim=2, density=0.01, epochs=2, storage="sparse", device="cpu",
                         data_root=args.data_root, data_sources=args.data_source, tracking=False, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        metrics = train(config, folder)
    record = metrics["evolution"][0]
    return {"check": "cht_epoch_dim2_full_fashion_mnist", "device": device_name(torch.device("cpu")),
            "epoch_seconds": metrics["epoch_seconds"][0], "update_seconds": sum(record["seconds"].values()),
            "scoring_seconds": record["seconds"].get("scoring", 0.0), "test_accuracy": metrics["test_accuracy"][0],
            "anp_after_update": record["anp"]}


def scale_check(args: argparse.Namespace) -> dict:
    """One epoch and one CHT update of a very wide MLP on the sparse storage."""
    prepare_dataset("fashion_mnist", args.data_root, sources=args.data_source)
    x, y = load_tensors("fashion_mnist", args.data_root, train=True, max_samples=args.max_train_samples)
    x_test, y_test = load_tensors("fashion_mnist", args.data_root, train=False)
    torch.manual_seed(0)
    model = SparseMLP(x[0].numel(), 10, width=args.width, storage="sparse")
    layers = sparse_layers(model)
    shapes = [(layer.in_features, layer.out_features) for layer in layers]
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for index, (layer, (n_in, n_out), n_links) in enumerate(zip(layers, shapes, link_counts(shapes, args.density))):
        links = init_topology("erdos_renyi", n_in, n_out, n_links, InitContext(index, generator))
        layer.set_links(links, init_weights("swi", layer.shape, links, generator))
    init_seconds = time.perf_counter() - started
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    method = replace(get_method("cht"), topology_init="erdos_renyi")
    evolution = Evolution(method, layers, optimizer, torch.Generator().manual_seed(1))
    loss_function = nn.CrossEntropyLoss()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
    steps = math.ceil(len(x) / args.batch_size)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        index = order[step * args.batch_size:(step + 1) * args.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss_function(model(x[index]), y[index]).backward()
        optimizer.step()
        after_optimizer_step(layers)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    accuracy = evaluate(model, TensorBatches(x_test, y_test, args.batch_size))
    eval_seconds = time.perf_counter() - started
    record = evolution.update(progress=1 / 3, epoch=1, step=steps)
    return {"check": f"cht_scale_784_3x{args.width}", "device": device_name(torch.device("cpu")),
            "density": args.density, "links": sum(layer.n_links for layer in layers),
            "batch_size": args.batch_size, "train_samples": len(x), "init_seconds": init_seconds,
            "epoch_train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "update_seconds": sum(record.seconds.get(k, 0.0) for k in ("removal", "percolation", "regrowth")),
            "scoring_seconds": record.seconds.get("scoring", 0.0), "test_accuracy": accuracy,
            "regrown_per_layer": [change.regrown for change in record.layers], "anp": record.anp,
            "peak_rss_gib": peak_rss_gib(),
            "masked_storage_would_need_gib": 2 * 2 * 4 * args.width**2 / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", choices=["epoch", "scale"], required=True)
    parser.add_argument("--width", type=int, default=65536)
    parser.add_argument("--density", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    row = epoch_check(args) if args.check == "epoch" else scale_check(args)
    row["threads"] = args.threads
    write_results(args.out, f"sparse_training_{args.check}", {"torch": torch.__version__, **row},
                  markdown_table([row], list(row)))


if __name__ == "__main__":
    main()
