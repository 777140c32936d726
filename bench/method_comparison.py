"""Same seed, same budget, every method: accuracy, ANP and time on a real dataset.

    python bench/method_comparison.py --methods fc set rigl mest cht chts --epochs 5 [--device auto]
                                      [--storage auto|masked|sparse]

Each method trains the paper MLP through :func:`cht.train.train` (no tracking); the table lists the
sparse layers' storage, final and best test accuracy, the area across epochs (mean accuracy over
epochs), final ANP and seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, markdown_table, pick_device, write_results  # noqa: E402

from cht.config import TrainConfig  # noqa: E402
from cht.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["fc", "set", "rigl", "mest", "cht", "chts"])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--dim", type=int, default=1)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int)
    parser.add_argument("--max-test-samples", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--storage", default="auto", choices=TrainConfig.json_schema()["properties"]["storage"]["enum"],
                        help="sparse-layer storage; auto picks as training does")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-source", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--runs-dir", type=Path, help="where the training runs go (default: <out>/method_comparison)")
    args = parser.parse_args()

    device = pick_device(args.device)
    rows = []
    for method in args.methods:
        config = TrainConfig(method=method, dataset=args.dataset, dim=args.dim, density=args.density,
                             epochs=args.epochs, seed=args.seed, device=str(device), storage=args.storage,
                             max_train_samples=args.max_train_samples, max_test_samples=args.max_test_samples,
                             data_root=args.data_root,
                             data_sources=args.data_source, tracking=False, progress=False)
        runs_dir = args.runs_dir or args.out / "method_comparison"
        run_dir = runs_dir / f"{args.dataset}-dim{args.dim}-{method}-s{args.seed}"
        metrics = train(config, run_dir)
        rows.append({"method": method, "storage": metrics["storage"], "final_acc": metrics["final_test_accuracy"],
                     "best_acc": metrics["best_test_accuracy"], "aae": metrics["aae"],
                     "final_anp": metrics["final_anp"], "seconds": metrics["train_time_s"],
                     "evolution_steps": len(metrics["evolution"])})
        print(rows[-1], flush=True)
    header = (f"{args.dataset}, MLP dim {args.dim}, density {args.density}, {args.epochs} epochs, seed {args.seed}, "
              f"{device_name(device)}")
    table = header + "\n\n" + markdown_table(rows, ["method", "storage", "final_acc", "best_acc", "aae", "final_anp",
                                                    "seconds", "evolution_steps"])
    write_results(args.out, f"method_comparison_{device.type}", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                                 "rows": rows}, table)


if __name__ == "__main__":
    main()
