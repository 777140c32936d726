"""Command line: ``python -m cht <command>``.

Precedence of settings: the config's defaults, then a YAML file (``--config``), then explicit flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cht.config import ConfigError, TrainConfig


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    from cht.data import available_datasets
    from cht.dst import available_methods
    from cht.models import MODELS

    parser = commands.add_parser("train", help="train one model and write metrics.json, masks and checkpoints",
                                 description="Train one model. Flags override values from --config.")
    parser.add_argument("--config", type=Path, help="YAML file of training settings (keys as the flags, with _)")
    parser.add_argument("--method", choices=available_methods())
    parser.add_argument("--dataset", choices=available_datasets())
    parser.add_argument("--model", choices=sorted(MODELS))
    parser.add_argument("--dim", type=_positive_int, help="hidden width as a multiple of the input size")
    parser.add_argument("--density", type=_fraction, help="fraction of links kept in each sparse layer")
    parser.add_argument("--epochs", type=_positive_int)
    parser.add_argument("--batch-size", type=_positive_int)
    parser.add_argument("--lr", type=_positive_float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--max-train-samples", type=_positive_int, help="use only the first N training samples")
    parser.add_argument("--max-test-samples", type=_positive_int, help="use only the first N test samples")
    parser.add_argument("--zeta", type=_fraction, help="fraction of links replaced at each evolution step")
    parser.add_argument("--update-interval", type=_positive_int, help="epochs (or steps) between evolution steps")
    parser.add_argument("--update-unit", choices=["epoch", "step"])
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction,
                        help="augment training images (default: the released augmentation for CNNs, none for the MLP)")
    parser.add_argument("--num-workers", type=int,
                        help="DataLoader workers for streamed datasets (default: the CPUs, at most 8)")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        help="bf16 autocast for a CNN's trunk (default: on with CUDA; the sparse head stays float32)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                        help="NHWC memory for a CNN's trunk (default: on with CUDA)")
    parser.add_argument("--data-root", help="where datasets are prepared (default: data)")
    parser.add_argument("--data-source", dest="data_sources", action="append",
                        help="local directory or mirror URL tried before the official one (repeatable)")
    parser.add_argument("--experiment", help="mlflow experiment name")
    parser.add_argument("--no-tracking", dest="tracking", action="store_const", const=False,
                        help="do not record an mlflow run")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="folder of the embedded mlflow store (default: results)")
    parser.add_argument("--out", type=Path, help="output directory (default: results/runs/<dataset>/<method>/seed<seed>)")


def _train(args: argparse.Namespace) -> int:
    from cht.tracking import Tracker
    from cht.train import train

    cli_only = {"config", "out", "results_dir", "command"}
    overrides = {k: v for k, v in vars(args).items() if k not in cli_only and v is not None}
    config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig.from_dict(overrides)
    out = args.out or Path("results", "runs", config.dataset, config.method, f"seed{config.seed}")
    tracker = Tracker(config.experiment, run_name=f"{config.method}-{config.dataset}-s{config.seed}",
                      enabled=config.tracking, results_dir=args.results_dir)
    metrics = train(config, out, tracker)
    print(json.dumps({k: metrics[k] for k in ("method", "dataset", "final_test_accuracy",
                                              "best_test_accuracy", "final_anp", "train_time_s")}))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from cht.dst import METHODS

    for name in sorted(METHODS):
        print(f"{name:10s} {METHODS[name].description}")
    return 0


def _models(args: argparse.Namespace) -> int:
    import torch

    from cht.data import DATASETS
    from cht.models import MODELS, build_model
    from cht.sparse import sparse_layers

    spec = DATASETS[args.dataset]
    print(f"sparse layers (in × out) for {args.dataset} inputs {tuple(spec.input_shape)}:")
    for name in sorted(MODELS):
        shapes = []
        for dim in (1, 2):
            with torch.device("meta"):  # shapes only: nothing is allocated or initialised
                model = build_model(name, spec.input_shape, spec.num_classes, dim=dim)
            shapes.append(", ".join(f"{layer.in_features}×{layer.out_features}" for layer in sparse_layers(model)))
        print(f"{name:10s} dim 1: {shapes[0]:40s} dim 2: {shapes[1]}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from cht.data import DATASETS

    for name, spec in sorted(DATASETS.items()):
        print(f"{name:14s} {spec.num_classes:5d} classes, input {tuple(spec.input_shape)}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from cht.data import dataset_checksum, prepare_dataset

    path = prepare_dataset(args.dataset, args.data_root, sources=args.data_sources or ())
    print(f"{args.dataset} ready in {path} (sha256 {dataset_checksum(args.dataset, args.data_root)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cht.data import available_datasets

    parser = argparse.ArgumentParser(prog="python -m cht", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(commands)
    commands.add_parser("methods", help="list the registered sparse-training methods")
    models = commands.add_parser("models", help="list the models with their sparse-layer shapes at dim 1 and 2")
    models.add_argument("--dataset", choices=available_datasets(), default="fashion_mnist",
                        help="input shape and classes to build for (the MLP's widths depend on it)")
    commands.add_parser("datasets", help="list the supported datasets")
    prepare = commands.add_parser("prepare-data", help="make a dataset available offline and verify it")
    prepare.add_argument("dataset", choices=available_datasets())
    prepare.add_argument("--data-root", type=Path, default=Path("data"))
    prepare.add_argument("--data-source", dest="data_sources", action="append")
    return parser


HANDLERS: dict[str, Any] = {"train": _train, "methods": _methods, "models": _models, "datasets": _datasets,
                            "prepare-data": _prepare}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
