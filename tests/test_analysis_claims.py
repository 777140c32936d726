"""The claims report: t intervals against scipy's one-sample t test, verdict rules, and the claims of a
runs table built from known per-seed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cht.analysis.claims import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, Interval, claims_table, mean_interval,
                                 paired_differences, write_claims)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_mean_interval_equals_scipys_one_sample_t_interval(n) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        values = rng.normal(rng.uniform(-1, 1), rng.uniform(0.01, 2), n)
        interval = mean_interval(values)
        reference = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert interval.n == n and interval.mean == pytest.approx(values.mean())
        assert interval.std == pytest.approx(values.std(ddof=1))
        assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))


def test_mean_interval_of_known_values() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} · s / √n with s = 1
    assert (interval.low, interval.high) == pytest.approx((2 - half, 2 + half))


def test_verdicts() -> None:
    assert mean_interval([0.5]).verdict == INCONCLUSIVE  # one seed: never a verdict
    assert mean_interval([]).verdict == INCONCLUSIVE and mean_interval([math.nan, 1.0]).n == 1
    assert mean_interval([0.10, 0.11, 0.12]).verdict == SUPPORTED
    assert mean_interval([-0.10, -0.11, -0.12]).verdict == CONTRADICTED
    assert mean_interval([0.0, 0.0, 0.0]).verdict == CONTRADICTED  # exactly nothing, in every seed
    assert mean_interval([-0.1, 0.3, 0.05]).verdict == INCONCLUSIVE
    assert Interval(3, 1.0, 0.1, math.nan, math.nan).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=95)


def test_paired_differences_pair_by_seed_and_skip_missing_values() -> None:
    subject = {0: 0.9, 1: 0.8, 2: math.nan, 4: 0.7}
    other = {4: 0.5, 0: 0.6, 1: 0.85, 2: 0.5, 3: 0.4}
    assert paired_differences(subject, other) == pytest.approx([0.3, -0.05, 0.2])


def runs_table(values: dict[str, list[float]], protocol: str = "uniform", **columns: dict[str, list[float]]):
    """A runs table: ``values[method][seed]`` as final accuracy (AAE 0.01 lower), extra columns per method."""
    rows = []
    for method, accuracies in values.items():
        for seed, accuracy in enumerate(accuracies):
            row = {"dataset": "fashion_mnist", "model": "mlp", "dim": 1, "density": 0.01, "protocol": protocol,
                   "method": method, "seed": seed, "final_test_accuracy": accuracy, "aae": accuracy - 0.01,
                   "final_anp": 1.0}
            for column, per_method in columns.items():
                if method in per_method:
                    row[column] = per_method[method][seed]
            rows.append(row)
    return pd.DataFrame(rows)


def test_claims_of_a_grid() -> None:
    runs = runs_table(
        {"cht": [0.85, 0.86, 0.87], "set": [0.82, 0.83, 0.83], "fc": [0.90, 0.91, 0.90], "rigl": [0.86, 0.85, 0.88]},
        modularity={"cht": [0.6, 0.65, 0.62], "set": [0.3, 0.31, 0.29], "rigl": [0.35, 0.3, 0.33]},
        gamma_loglikelihood_ratio_vs_exponential={"cht": [12.0, 15.0, 9.0]},
        gamma_mle={"cht": [2.0, 2.1, 1.9]}, gamma={"cht": [2.0, math.nan, 1.9]},
        gamma_p_value_vs_exponential={"cht": [0.01, 0.02, 0.03]})
    runs.loc[runs["method"] == "cht", "final_anp"] = [0.7, 0.8, 0.75]
    table = claims_table(runs, "cht", ["fc", "set", "rigl"]).set_index(["claim"])
    accuracy = table.loc["cht is more accurate than set"]
    assert accuracy["difference"] == pytest.approx(np.mean([0.03, 0.03, 0.04]))
    assert accuracy["verdict"] == SUPPORTED and accuracy["seeds"] == 3
    assert accuracy["subject_mean"] == pytest.approx(0.86) and accuracy["comparison_mean"] == pytest.approx(0.8266666)
    assert table.loc["cht is more accurate than fc", "verdict"] == CONTRADICTED
    assert table.loc["cht is more accurate than rigl", "verdict"] == INCONCLUSIVE
    assert table.loc["cht learns faster (AAE) than set", "difference"] == pytest.approx(accuracy["difference"])
    percolation = table.loc[[claim for claim in table.index if "percolates" in claim][0]]
    assert percolation["difference"] == pytest.approx(0.25) and percolation["verdict"] == SUPPORTED
    assert "70.0%" in percolation["detail"]
    power_law = table.loc["cht learns a power-law degree distribution"]
    assert power_law["verdict"] == SUPPORTED and "2/3 seeds" in power_law["detail"]
    assert table.loc["cht is more modular (community-layered) than set", "verdict"] == SUPPORTED
    assert not any("fc" in claim for claim in table.index if "modular" in claim)  # a dense net has no topology
    assert not any("hyperbolic" in claim for claim in table.index)  # no embedding computed
    assert set(table["protocol"]) == {"uniform"}


def test_one_seed_is_always_inconclusive_and_a_missing_subject_gives_no_rows() -> None:
    table = claims_table(runs_table({"cht": [0.95], "set": [0.10]}), "cht", ["set"])
    assert len(table) > 0 and set(table["verdict"]) == {INCONCLUSIVE}
    assert claims_table(runs_table({"set": [0.8, 0.9]}), "cht", ["set"]).empty


def test_protocol_dependence_when_both_protocols_ran() -> None:
    uniform = runs_table({"cht": [0.85, 0.86, 0.87], "set": [0.84, 0.85, 0.86]})
    released = runs_table({"cht": [0.85, 0.86, 0.87], "set": [0.80, 0.80, 0.82]}, protocol="released")
    table = claims_table(pd.concat([uniform, released]), "cht", ["set"])
    assert set(table["protocol"]) == {"uniform", "released", "released − uniform"}
    dependence = table[table["protocol"] == "released − uniform"].iloc[0]
    assert dependence["difference"] == pytest.approx(np.mean([0.04, 0.05, 0.04]))
    assert dependence["verdict"] == SUPPORTED and dependence["comparison"] == "set"


def test_claims_files(tmp_path) -> None:
    table = claims_table(runs_table({"cht": [0.85, 0.86, 0.87], "set": [0.82, 0.83, 0.83]}), "cht", ["set"])
    paths = write_claims(table, tmp_path / "claims")
    assert [path.name for path in paths] == ["claims.csv", "claims.md", "claims.html"]
    assert pd.read_csv(paths[0])["verdict"].tolist() == table["verdict"].tolist()
    markdown = paths[1].read_text()
    assert markdown.startswith(f"Claims tested: {len(table)} (") and "**supported**" in markdown
    assert "86.00 ± 1.00" in markdown and "<table" in paths[2].read_text()
    empty = write_claims(claims_table(runs_table({"set": [0.8]}), "cht", ["set"]), tmp_path / "empty")
    assert "No claim can be tested" in empty[1].read_text()


def test_claims_need_a_runs_table() -> None:
    with pytest.raises(ValueError, match="protocol"):
        claims_table(pd.DataFrame({"method": ["cht"], "seed": [0]}), "cht", [])
