"""Collect the ``metrics.json`` (and ``topology.json``) files of many runs into tables.

A run is identified by its key (:data:`cht.config.RUN_KEY`: dataset, model, width multiplier, density,
protocol, method and seed); a *setting* is everything but method and seed (runs written before protocols
existed count as ``uniform``).
Summaries give, per setting and method, the mean and standard deviation over seeds, written as CSV
(numbers) and as Markdown, LaTeX and HTML (``mean ± std`` text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from cht.config import DEFAULT_PROTOCOL, RUN_KEY, SETTING_KEY



@dataclass(frozen=True)
class Column:
    """How one summary metric is shown: header text, scale factor and decimals."""

    header: str
    scale: float = 1.0
    decimals: int = 2


PERFORMANCE_COLUMNS: dict[str, Column] = {
    "final_test_accuracy": Column("Final accuracy (%)", 100.0, 2),
    "best_test_accuracy": Column("Best accuracy (%)", 100.0, 2),
    "aae": Column("AAE (%)", 100.0, 2),
    "final_anp": Column("ANP (%)", 100.0, 1),
    "links": Column("Links", 1.0, 0),
    "train_time_s": Column("Training time (s)", 1.0, 1),
}
TOPOLOGY_COLUMNS: dict[str, Column] = {
    "gamma": Column("Power-law gamma", 1.0, 2),
    "modularity": Column("Modularity", 1.0, 3),
    "n_communities": Column("Communities", 1.0, 1),
    "char_path_length": Column("Char. path length", 1.0, 2),
    "square_clustering": Column("Square clustering", 1.0, 4),
}


REGENERATE = "delete it and rerun the pipeline: Snakemake reruns the job that writes it"


class DamagedResultError(ValueError):
    """A results file is truncated, foreign or unreadable; the message names it and how to regenerate it."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path} is damaged ({reason}); {REGENERATE}")
        self.path = Path(path)


def read_json(path: str | Path) -> dict[str, Any]:
    """One JSON object from a results file; :class:`DamagedResultError` when it is unreadable or not an object."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedResultError(path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedResultError(path, f"not readable JSON: {error}") from None
    if not isinstance(value, dict):
        raise DamagedResultError(path, f"holds a JSON {type(value).__name__}, not an object")
    return value


def read_table(path: str | Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV table of the pipeline (runs, curves), checked for the columns its reader needs."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DamagedResultError(path, "missing") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DamagedResultError(path, f"not a readable CSV table: {str(error).strip()}") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DamagedResultError(path, f"lacks column(s) {missing}")
    return table


def numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The real numbers among ``values`` (NaN for undefined ones kept; booleans, text and lists left out)."""
    return {key: float(value) for key, value in values.items()
            if isinstance(value, Real) and not isinstance(value, bool)}


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite real numbers among ``values``, e.g. for mlflow metrics (which reject NaN)."""
    return {key: value for key, value in numbers(values).items() if math.isfinite(value)}


def _identity(metrics: Mapping[str, Any], path: Path) -> dict[str, Any]:
    if "protocol" not in metrics:
        metrics = {**metrics, "protocol": metrics.get("config", {}).get("protocol", DEFAULT_PROTOCOL)}
    missing = [key for key in RUN_KEY if key not in metrics]
    if missing:
        raise DamagedResultError(path, f"lacks {missing}: not a metrics.json written by cht.train")
    return {key: metrics[key] for key in RUN_KEY}


def run_table(metrics_paths: Sequence[str | Path],
              topology_paths: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """One row per run: its identity, the scalar results of ``metrics.json`` and of ``topology.json``.

    ``topology_paths[i]`` belongs to ``metrics_paths[i]``; a dense run's empty topology adds nothing.
    ``links`` is the run's total number of sparse links (missing for a dense model).
    """
    if topology_paths is not None and len(topology_paths) != len(metrics_paths):
        raise ValueError(f"topology_paths has {len(topology_paths)} files but metrics_paths has "
                         f"{len(metrics_paths)}; pass one topology file per run, in the same order")
    rows = []
    for index, path in enumerate(metrics_paths):
        metrics = read_json(path)
        row = _identity(metrics, Path(path))
        row.update(numbers({k: v for k, v in metrics.items() if k not in RUN_KEY}))
        links = metrics.get("links_per_layer") or []
        row["links"] = float(sum(links)) if links else math.nan
        if topology_paths is not None:
            topology = numbers(read_json(topology_paths[index]))
            row.update({f"topology.{key}" if key in row else key: value for key, value in topology.items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    duplicated = table.duplicated(list(RUN_KEY))
    if duplicated.any():
        first = table.loc[duplicated, list(RUN_KEY)].iloc[0].to_dict()
        raise ValueError(f"two metrics files describe the same run {first}; pass each run once")
    return table


def learning_curves(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Long table: one row per run and epoch with test accuracy and training loss."""
    frames = []
    for path in metrics_paths:
        metrics = read_json(path)
        identity = _identity(metrics, Path(path))
        if not isinstance(metrics.get("test_accuracy"), list) or not isinstance(metrics.get("train_loss"), list):
            raise DamagedResultError(path, "lacks the per-epoch test_accuracy and train_loss lists")
        accuracy = metrics["test_accuracy"]
        frames.append(pd.DataFrame({
            **identity, "epoch": range(1, len(accuracy) + 1),
            "test_accuracy": accuracy, "train_loss": metrics["train_loss"]}))
    return pd.concat(frames, ignore_index=True)


def anp_curves(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """Long table: one row per run and topology-evolution step (numbered from 1) with its active-neuron
    proportion, the epoch and the training step it happened at.

    When ``metrics["anp"]`` holds one entry more than the evolution records, the first is the ANP at
    initialisation: it becomes step 0 at epoch 0. Runs whose topology never evolves (dense, static) have
    no rows.
    """
    rows = []
    for path in metrics_paths:
        metrics = read_json(path)
        identity = _identity(metrics, Path(path))
        evolution = metrics.get("evolution", [])
        anp = metrics.get("anp", [])
        if evolution and len(anp) == len(evolution) + 1:
            rows.append({**identity, "step": 0, "epoch": 0, "train_step": 0, "anp": anp[0]})
        for number, record in enumerate(evolution, start=1):
            rows.append({**identity, "step": number, "epoch": record["epoch"], "train_step": record["step"],
                         "anp": record["anp"]})
    return pd.DataFrame(rows, columns=[*RUN_KEY, "step", "epoch", "train_step", "anp"])


def select(table: pd.DataFrame, **values: Any) -> pd.DataFrame:
    """Rows whose columns equal ``values``; text values (e.g. wildcards) are converted to each column's type."""
    keep = pd.Series(True, index=table.index)
    for column, value in values.items():
        if column not in table.columns:
            raise ValueError(f"table has no column {column!r}; available: {list(table.columns)}")
        if pd.api.types.is_numeric_dtype(table[column]):
            value = float(value)
        keep &= table[column] == value
    return table[keep]


def summarise(runs: pd.DataFrame, metrics: Iterable[str],
              method_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per setting and method.

    Columns: the setting keys, ``method``, ``seeds`` (number of runs), then ``<metric>_mean`` and
    ``<metric>_std`` for every metric. Rows follow ``method_order`` within each setting (default:
    alphabetical). A single seed has a standard deviation of NaN.
    """
    metrics = list(metrics)
    missing = [name for name in metrics if name not in runs.columns]
    if missing:
        raise ValueError(f"runs has no column(s) {missing}; available: {sorted(runs.columns)}")
    group_keys = [*SETTING_KEY, "method"]
    grouped = runs.groupby(group_keys, sort=True)
    summary = grouped[metrics].agg(["mean", "std"])
    summary.columns = [f"{name}_{statistic}" for name, statistic in summary.columns]
    summary.insert(0, "seeds", grouped.size())
    summary = summary.reset_index()
    order = list(method_order) if method_order is not None else sorted(runs["method"].unique())
    unknown = sorted(set(summary["method"]) - set(order))
    if unknown:
        raise ValueError(f"method_order lacks {unknown}; list every method present in runs")
    summary["method"] = pd.Categorical(summary["method"], categories=order, ordered=True)
    summary = summary.sort_values([*SETTING_KEY, "method"], ignore_index=True)
    summary["method"] = summary["method"].astype(str)
    return summary


def format_summary(summary: pd.DataFrame, columns: Mapping[str, Column], plus_minus: str = " ± ") -> pd.DataFrame:
    """``mean ± std`` text per metric (scaled and rounded as ``columns`` says); missing values as ``–``."""
    table = summary[[*SETTING_KEY, "method", "seeds"]].astype(str)
    for name, column in columns.items():
        means, stds = summary[f"{name}_mean"], summary[f"{name}_std"]
        table[column.header] = [_mean_std(mean, std, column, plus_minus) for mean, std in zip(means, stds)]
    return table


def _mean_std(mean: float, std: float, column: Column, plus_minus: str) -> str:
    if pd.isna(mean):
        return "–"
    text = f"{mean * column.scale:.{column.decimals}f}"
    if pd.isna(std):
        return text
    return f"{text}{plus_minus}{std * column.scale:.{column.decimals}f}"


def write_tables(summary: pd.DataFrame, columns: Mapping[str, Column], stem: str | Path) -> list[Path]:
    """Write ``stem.csv`` (numbers), ``stem.md``, ``stem.tex`` and ``stem.html`` (formatted text)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{suffix}") for suffix in ("csv", "md", "tex", "html")]
    numeric = [f"{name}_{statistic}" for name in columns for statistic in ("mean", "std")]
    summary[[*SETTING_KEY, "method", "seeds", *numeric]].to_csv(paths[0], index=False)
    text = format_summary(summary, columns)
    labels = [*SETTING_KEY, "method"]
    alignment = ["left"] * len(labels) + ["right"] * (text.shape[1] - len(labels))
    paths[1].write_text(text.to_markdown(index=False, disable_numparse=True, colalign=alignment) + "\n")
    latex = format_summary(summary, columns, plus_minus=r" $\pm$ ")
    paths[2].write_text(latex.style.hide(axis="index").format(escape="latex", subset=labels)
                        .format_index(escape="latex", axis=1)
                        .to_latex(hrules=True, column_format="l" * len(labels) + "r" * (latex.shape[1] - len(labels))))
    paths[3].write_text(text.to_html(index=False, border=0, justify="left"))
    return paths
