"""Command line: ``python -m cht <command>``.

Precedence of settings: the config's defaults, then a YAML file (``--config``), then explicit flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from cht.config import RUN_LAYOUT, ConfigError, TrainConfig, describe, key_schema, training_run_name
from cht.processes import TrainingStopped


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors a user can cause (bad input, missing data, unusable folders or servers): a message, no traceback."""
    from cht.data import DatasetError
    from cht.io import CheckpointError, OutputError
    from cht.memory import MemoryRequirementError
    from cht.tracking import TrackingError
    from cht.run.lifecycle import TrainingDiverged

    return (ConfigError, DatasetError, TrackingError, CheckpointError, OutputError, TrainingDiverged,
            MemoryRequirementError, OSError)


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train one model and write metrics.json, masks and checkpoints",
                                 description="Train one model. Flags override values from --config.")
    parser.add_argument("--config", type=Path, help="YAML file of training settings (keys as the flags, with _)")
    for key in fields(TrainConfig):
        _add_key(parser, key)
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="folder of the default output and of the embedded mlflow store (default: results)")
    parser.add_argument("--out", type=Path,
                        help=f"output folder (default: RESULTS_DIR/runs/{RUN_LAYOUT.replace('{', '').replace('}', '')})")


def _add_key(parser: argparse.ArgumentParser, key: Field) -> None:
    """The flag of one TrainConfig key, typed and documented from its declaration (ranges checked by TrainConfig)."""
    schema = key_schema(key)
    flag = key.metadata["flag"] or "--" + key.name.replace("_", "-")
    kind = schema["type"][0] if isinstance(schema["type"], list) else schema["type"]
    if kind == "boolean" and key.default is None:  # automatic unless set either way
        parser.add_argument(flag, dest=key.name, action=argparse.BooleanOptionalAction, help=key.metadata["help"])
        return
    if kind == "boolean":
        negate = key.default is True
        parser.add_argument(f"--no-{flag[2:]}" if negate else flag, dest=key.name, action="store_const",
                            const=not negate, help=("do not " if negate else "") + key.metadata["help"])
        return
    parse = {"integer": int, "number": float, "string": str, "array": str}[kind]
    choices = [value for value in schema.get("enum", []) if value is not None] or None
    parser.add_argument(flag, dest=key.name, type=parse, choices=choices,
                        action="append" if kind == "array" else "store",
                        help=describe(schema) if choices is None else schema["description"])


def _train(args: argparse.Namespace) -> int:
    from cht.io import ensure_folder, remove_empty_folders
    from cht.tracking import Tracker, check_reachable, resolve_tracking_uri
    from cht.train import resolve_device, train

    flags = {key.name: option for key in fields(TrainConfig)
             for option in [key.metadata["flag"] or "--" + key.name.replace("_", "-")]}
    overrides = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    try:
        config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig.from_dict(overrides)
        resolve_device(config.device)
    except ConfigError as error:
        if error.field in overrides:
            reason = str(error).removeprefix(f"{error.field}: ")
            raise ConfigError(f"argument {flags[error.field]}: {reason}", error.field) from None
        raise
    except RuntimeError as error:  # an explicit CUDA device on a machine without one
        raise ConfigError(str(error), "device") from None
    out = args.out or args.results_dir / "runs" / config.run_path()
    if config.tracking:
        _check_tracking(args.results_dir, resolve_tracking_uri(args.results_dir), check_reachable)
    # An empty output folder is what a run killed from outside (OOM, SIGKILL) before its first checkpoint leaves:
    # it is this run's to remove again if this one fails too.
    leftover = [out] if out.is_dir() and not any(out.iterdir()) else []
    created = leftover + ensure_folder(out, "--out" if args.out else "--results-dir")
    tracker = Tracker(config.experiment, run_name=training_run_name(config),
                      enabled=config.tracking, results_dir=args.results_dir)
    try:
        metrics = train(config, out, tracker)
    except BaseException:
        remove_empty_folders(created)
        raise
    print(json.dumps({k: metrics[k] for k in ("method", "dataset", "final_test_accuracy",
                                              "best_test_accuracy", "final_anp", "train_time_s")}))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _check_tracking(results_dir: Path, uri: str, check_reachable: Any) -> None:
    """Fail before any work when runs cannot be recorded: no mlflow, a dead server, an unwritable store."""
    from cht.io import ensure_folder, remove_empty_folders
    from cht.tracking import TrackingError

    try:
        import mlflow  # noqa: F401 (only whether it is there)
    except ImportError:
        raise TrackingError("tracking needs mlflow, which is not installed: pip install 'cht[pipeline]' "
                            "(scripts/setup.sh installs it), or pass --no-tracking") from None
    check_reachable(uri)
    if uri.startswith("sqlite:"):
        remove_empty_folders(ensure_folder(results_dir, "--results-dir"))


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


def _compare(args: argparse.Namespace) -> int:
    from cht.analysis.reproduction import compare_folder
    from cht.io import OutputError

    try:
        table = compare_folder(args.runs, args.out, path_sources=args.path_sources, seed=args.seed,
                               readmes=args.readmes)
    except ValueError as error:  # runs that do not form a table (the same run twice, a foreign metrics.json)
        raise OutputError(f"{' '.join(map(str, args.runs))}: {error}") from None
    print((args.out / "tables" / "reproduction.md").read_text())
    print(f"wrote {args.out}/tables and {args.out}/figures ({len(table)} cells compared)"
          + "".join(f"; filled {readme}" for readme in args.readmes))
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
    compare = commands.add_parser("compare", help="set the finished runs of a folder beside the published tables "
                                                  "(copies metrics.json and topology.json, writes tables and a figure)")
    compare.add_argument("runs", type=Path, nargs="+",
                         help="runs folders, e.g. results/neurips2025/runs; OUT/runs among them keeps the runs "
                              "collected before")
    compare.add_argument("--readme", dest="readmes", type=Path, action="append", default=[],
                         help="a Markdown file whose <!-- results --> block (the whole section) or "
                              "<!-- reproduction-table --> block (the table) is rewritten; repeatable")
    compare.add_argument("--out", type=Path, required=True, help="folder for runs/, tables/ and figures/")
    compare.add_argument("--path-sources", type=int, default=256,
                         help="path-length sources of the topology analysis (the pipeline's analysis.path_sources)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the topology analysis (analysis.seed)")
    return parser


HANDLERS: dict[str, Any] = {"train": _train, "methods": _methods, "models": _models, "datasets": _datasets,
                            "prepare-data": _prepare, "compare": _compare}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except _user_errors() as error:
        parser.exit(1, f"{parser.prog} {args.command}: error: {_message(error)}\n")
    except TrainingStopped as stop:  # SIGTERM (a scheduler's time limit or preemption): worth a retry
        parser.exit(stop.exit_status, f"{parser.prog} {args.command}: {stop}\n")
    return 1


def _message(error: Exception) -> str:
    """The error's own message; for a bare OSError, the file it concerns and why."""
    from cht.io import OutputError

    if isinstance(error, OSError) and not isinstance(error, OutputError) and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
