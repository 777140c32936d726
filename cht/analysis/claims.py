"""The paper's claims, tested on the runs of a grid: paired differences over seeds with t-based intervals.

Every claim is a statistic that the paper says is positive, measured once per seed:

* **accuracy**: final test accuracy of CHT minus that of a baseline (or of the dense FC network), paired
  by seed (same seed = same data order and, where methods share it, the same initial topology);
* **learning speed**: the same for AAE, the *area across epochs*, defined here as the mean of the
  per-epoch test accuracies of a run (the sources give no other definition);
* **percolation**: ``1 − ANP`` of CHT, the share of neurons percolation left without links (the paper
  reports networks that keep down to about 30% of their hidden neurons);
* **power law**: the log-likelihood ratio of a power law against an exponential tail for CHT's degree
  distribution (Clauset–Shalizi–Newman; positive favours the power law), reported with γ;
* **modularity**: CHT's Louvain modularity minus a sparse baseline's (community-layered topology);
* **hyperbolic separation**: CHT's angular separation index of communities in the coalescent hyperbolic
  embedding minus a baseline's (only when the analysis computed the embedding);
* **protocol dependence** (when the grid runs both protocols): CHT's accuracy margin over a baseline
  under ``released`` minus its margin under ``uniform``, paired by seed: positive means the released
  set-up (the baselines' initialisation) widens CHT's margin.

The verdict reads the 95% confidence interval of the mean (Student t with n − 1 degrees of freedom):
*supported* when it lies above 0, *contradicted* when it lies at or below 0, *inconclusive* otherwise and
always with fewer than two seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cht.config import RUN_KEY, SETTING_KEY

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with sample standard deviation and a two-sided t confidence interval."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.n < 2 or math.isnan(self.low):
            return INCONCLUSIVE
        if self.low > 0:
            return SUPPORTED
        if self.high <= 0:
            return CONTRADICTED
        return INCONCLUSIVE


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """``mean ± t_{(1+c)/2, n−1} · s / √n`` of the finite ``values`` (NaN bounds below two values)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    finite = np.array([value for value in values if math.isfinite(value)], dtype=float)
    n = finite.size
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(finite.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def paired_differences(subject: Mapping[int, float], other: Mapping[int, float]) -> list[float]:
    """``subject[seed] − other[seed]`` for every seed both have a finite value for, in seed order."""
    return [subject[seed] - other[seed] for seed in sorted(set(subject) & set(other))
            if math.isfinite(subject[seed]) and math.isfinite(other[seed])]


@dataclass(frozen=True)
class Metric:
    """A per-run column of the runs table and how a claim states it."""

    column: str
    label: str
    scale: float = 1.0
    decimals: int = 2


FINAL_ACCURACY = Metric("final_test_accuracy", "final accuracy (%)", 100.0, 2)
AAE = Metric("aae", "AAE (%)", 100.0, 2)
MODULARITY = Metric("modularity", "modularity", 1.0, 3)
ASI = Metric("embedding_asi_communities", "angular separation of communities", 1.0, 3)
PERCOLATED = Metric("percolated", "neurons percolated (1 − ANP, %)", 100.0, 1)
POWER_LAW = Metric("gamma_loglikelihood_ratio_vs_exponential", "log-likelihood ratio power law vs exponential",
                   1.0, 1)

COLUMNS = [*SETTING_KEY, "claim", "subject", "comparison", "metric", "seeds", "subject_mean", "subject_std",
           "comparison_mean", "comparison_std", "difference", "ci_low", "ci_high", "verdict", "detail"]


def _per_seed(runs: pd.DataFrame, method: str, column: str) -> dict[int, float]:
    rows = runs[runs["method"] == method]
    if column not in rows.columns:
        return {}
    return {int(seed): float(value) for seed, value in zip(rows["seed"], rows[column]) if pd.notna(value)}


def _row(setting: Mapping, claim: str, subject: str, comparison: str, metric: Metric,
         subject_values: Mapping[int, float], comparison_values: Mapping[int, float] | None,
         statistic: Sequence[float], detail: str = "") -> dict:
    interval = mean_interval(statistic)
    own = mean_interval(subject_values.values())
    other = mean_interval(comparison_values.values()) if comparison_values is not None else None
    return {**setting, "claim": claim, "subject": subject, "comparison": comparison, "metric": metric.label,
            "seeds": interval.n, "subject_mean": own.mean, "subject_std": own.std,
            "comparison_mean": other.mean if other else math.nan, "comparison_std": other.std if other else math.nan,
            "difference": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
            "verdict": interval.verdict, "detail": detail}


def _comparisons(setting: Mapping, runs: pd.DataFrame, subject: str, others: Sequence[str],
                 metric: Metric, claim: str) -> list[dict]:
    rows = []
    mine = _per_seed(runs, subject, metric.column)
    if not mine:
        return rows
    for other in others:
        theirs = _per_seed(runs, other, metric.column)
        if other == subject or not theirs:
            continue
        rows.append(_row(setting, claim.format(other=other), subject, other, metric, mine, theirs,
                         paired_differences(mine, theirs)))
    return rows


def setting_claims(setting: Mapping, runs: pd.DataFrame, subject: str, baselines: Sequence[str]) -> list[dict]:
    """Claims of one setting's runs (one protocol); ``baselines`` may include the dense ``fc``."""
    if subject not in set(runs["method"]):
        return []
    rows = _comparisons(setting, runs, subject, baselines, FINAL_ACCURACY, f"{subject} is more accurate than {{other}}")
    rows += _comparisons(setting, runs, subject, baselines, AAE, f"{subject} learns faster (AAE) than {{other}}")
    anp = _per_seed(runs, subject, "final_anp")
    if anp:
        percolated = {seed: 1.0 - value for seed, value in anp.items()}
        lowest = min(anp.values())
        rows.append(_row(setting, f"{subject} percolates neurons away (paper: down to ~30% of hidden neurons "
                                  "kept)", subject, "", PERCOLATED, percolated, None, list(percolated.values()),
                         detail=f"lowest final ANP {lowest:.1%}"))
    ratio = _per_seed(runs, subject, POWER_LAW.column)
    if ratio:
        gamma = mean_interval(_per_seed(runs, subject, "gamma_mle").values())
        p_values = mean_interval(_per_seed(runs, subject, "gamma_p_value_vs_exponential").values())
        accepted = sum(1 for value in _per_seed(runs, subject, "gamma").values() if math.isfinite(value))
        gamma_text = _mean_std(gamma.mean, gamma.std, Metric("gamma_mle", "γ"))
        rows.append(_row(setting, f"{subject} learns a power-law degree distribution", subject, "", POWER_LAW,
                         ratio, None, list(ratio.values()),
                         detail=f"γ = {gamma_text}, mean p = {p_values.mean:.2g}, "
                                f"fit accepted in {accepted}/{len(ratio)} seeds"))
    rows += _comparisons(setting, runs, subject, baselines, MODULARITY,
                         f"{subject} is more modular (community-layered) than {{other}}")
    rows += _comparisons(setting, runs, subject, baselines, ASI,
                         f"{subject} separates communities more in the hyperbolic disk than {{other}}")
    return rows


def protocol_dependence(setting: Mapping, released: pd.DataFrame, uniform: pd.DataFrame, subject: str,
                        baselines: Sequence[str]) -> list[dict]:
    """CHT's final-accuracy margin over each baseline under ``released`` minus under ``uniform``, by seed."""
    rows = []
    for other in baselines:
        if other == subject:
            continue
        margins = [_margins(runs, subject, other) for runs in (released, uniform)]
        if not margins[0] or not margins[1]:
            continue
        rows.append(_row({**setting, "protocol": "released − uniform"},
                         f"{subject}'s margin over {other} grows under the released protocol", subject, other,
                         FINAL_ACCURACY, margins[0], margins[1], paired_differences(margins[0], margins[1]),
                         detail="subject/comparison columns: the margin under released / uniform"))
    return rows


def _margins(runs: pd.DataFrame, subject: str, other: str) -> dict[int, float]:
    """Final accuracy of ``subject`` minus that of ``other``, per seed both ran."""
    mine = _per_seed(runs, subject, FINAL_ACCURACY.column)
    theirs = _per_seed(runs, other, FINAL_ACCURACY.column)
    return {seed: mine[seed] - theirs[seed] for seed in sorted(set(mine) & set(theirs))}


def claims_table(runs: pd.DataFrame, subject: str, baselines: Sequence[str]) -> pd.DataFrame:
    """Every claim the runs can test, one row per claim, comparison and setting (see the module docstring).

    ``runs`` is the runs table of :func:`cht.results.run_table` (one row per run). No row for a setting
    without ``subject`` runs; topology rows only where the topology columns are present.
    """
    missing = [key for key in RUN_KEY if key not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks column(s) {missing}: pass the runs table of cht.results.run_table")
    rows: list[dict] = []
    for values, group in runs.groupby(list(SETTING_KEY), sort=True):
        rows += setting_claims(dict(zip(SETTING_KEY, values)), group, subject, baselines)
    by_protocol = dict(tuple(runs.groupby("protocol")))
    if {"released", "uniform"} <= set(by_protocol):
        keys = [key for key in SETTING_KEY if key != "protocol"]
        released = dict(tuple(by_protocol["released"].groupby(keys)))
        for values, uniform in by_protocol["uniform"].groupby(keys, sort=True):
            if values in released:
                rows += protocol_dependence(dict(zip(keys, values)), released[values], uniform, subject, baselines)
    return pd.DataFrame(rows, columns=COLUMNS)


def _scale(label: str) -> Metric:
    return next(metric for metric in (FINAL_ACCURACY, AAE, MODULARITY, ASI, PERCOLATED, POWER_LAW)
                if metric.label == label)


def _number(value: float, metric: Metric) -> str:
    return "–" if pd.isna(value) else f"{value * metric.scale:.{metric.decimals}f}"


def _mean_std(mean: float, std: float, metric: Metric) -> str:
    text = _number(mean, metric)
    return text if pd.isna(std) or text == "–" else f"{text} ± {_number(std, metric)}"


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """Readable text: ``mean ± std`` per side, the difference with its 95% interval, the verdict."""
    text = []
    for row in table.itertuples(index=False):
        metric = _scale(row.metric)
        interval = "–" if pd.isna(row.ci_low) else f"[{_number(row.ci_low, metric)}, {_number(row.ci_high, metric)}]"
        text.append({**{key: str(getattr(row, key)) for key in SETTING_KEY}, "claim": row.claim,
                     "metric": row.metric,
                     "subject": f"{row.subject}: {_mean_std(row.subject_mean, row.subject_std, metric)}",
                     "comparison": "" if not row.comparison else
                     f"{row.comparison}: {_mean_std(row.comparison_mean, row.comparison_std, metric)}",
                     "difference (95% CI)": f"{_number(row.difference, metric)} {interval}",
                     "seeds": str(row.seeds), "verdict": f"**{row.verdict}**", "detail": row.detail})
    return pd.DataFrame(text, columns=[*SETTING_KEY, "claim", "metric", "subject", "comparison",
                                       "difference (95% CI)", "seeds", "verdict", "detail"])


def write_claims(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """``stem.csv`` (numbers), ``stem.md`` and ``stem.html`` (text); an empty table says why in the text."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{suffix}") for suffix in ("csv", "md", "html")]
    table.to_csv(paths[0], index=False)
    if table.empty:
        message = "No claim can be tested: the grid has no runs of the claims' subject method."
        paths[1].write_text(message + "\n")
        paths[2].write_text(f"<p>{message}</p>\n")
        return paths
    text = format_claims(table)
    counts = table["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(verdict, 0)} {verdict}" for verdict in (SUPPORTED, CONTRADICTED, INCONCLUSIVE))
    paths[1].write_text(f"Claims tested: {len(table)} ({summary}).\n\n"
                        + text.to_markdown(index=False, disable_numparse=True) + "\n")
    paths[2].write_text(f"<p>Claims tested: {len(table)} ({summary}).</p>\n"
                        + text.to_html(index=False, border=0, justify="left").replace("**", ""))
    return paths
