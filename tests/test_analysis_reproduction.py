"""Published tables beside reproduced runs: the shipped data, Δ and verdicts against a hand computation,
Kendall's τ against a pairwise count, the written tables and the figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from cht.analysis.reproduction import (ABOVE, AGREES, BELOW, PUBLISHED_COLUMNS, PublishedTableError,
                                       published_counterparts, published_results, rank_agreement,
                                       reproduction_figure, reproduction_table, write_reproduction)
from cht.data import available_datasets
from cht.dst import available_methods

TABLE7_METHODS = ["fc", "chtsp", "chtsn", "cht", "rigl", "set", "chtssn", "granet", "gmp"]


def test_shipped_tables_hold_every_cell_of_table_7_and_table_1() -> None:
    published = published_results()
    table7 = published[published["table"] == 7]
    assert sorted(table7["dataset"].unique()) == ["emnist", "fashion_mnist", "mnist"]
    for dataset, cells in table7.groupby("dataset"):
        assert list(cells["method"]) == TABLE7_METHODS, dataset
    assert len(published[published["table"] == 1]) == 8
    assert set(published["method"]) <= set(available_methods())
    assert set(published["dataset"]) <= set(available_datasets())
    assert (published["n"] == 3).all() and (published["se"] >= 0).all() and published["source"].str.len().min() > 0
    assert published.loc[published["method"] == "fc", "anp"].isna().all()
    assert published["anp"].dropna().between(0, 1).all()
    # Spot checks against the paper's Fashion-MNIST column.
    cht = table7[(table7["dataset"] == "fashion_mnist") & (table7["method"] == "cht")].iloc[0]
    assert (cht["mean"], cht["se"], cht["anp"]) == (88.70, 0.07, 0.30)


def write_published(path, rows: list[dict]) -> None:
    base = {"table": 9, "dataset": "fashion_mnist", "model": "mlp", "dim": 2, "density": 0.01, "anp": 0.5, "n": 3,
            "source": "test"}
    pd.DataFrame([{**base, **row} for row in rows], columns=PUBLISHED_COLUMNS).to_csv(path, index=False)


@pytest.mark.parametrize("fault, rows, message", [
    ("missing column", None, "lacks column"),
    ("negative SE", [{"published_method": "SET", "method": "set", "mean": 89.0, "se": -0.1}], "line 2"),
    ("repeated cell", [{"published_method": "SET", "method": "set", "mean": 89.0, "se": 0.1}] * 2, "repeats a cell"),
])
def test_a_malformed_published_table_is_refused_naming_the_file(tmp_path, fault, rows, message) -> None:
    path = tmp_path / "bad.csv"
    if rows is None:
        pd.DataFrame({"dataset": ["mnist"], "mean": [1.0]}).to_csv(path, index=False)
    else:
        write_published(path, rows)
    with pytest.raises(PublishedTableError, match=message) as error:
        published_results([path])
    assert "bad.csv" in str(error.value)


def runs_of(accuracies: dict[str, list[float]], protocol: str = "neurips2025", anp: float = 0.4) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "fashion_mnist", "model": "mlp", "dim": 2, "density": 0.01, "protocol": protocol,
                          "method": method, "seed": seed, "final_test_accuracy": value, "final_anp": anp}
                         for method, values in accuracies.items() for seed, value in enumerate(values)])


def test_delta_tolerance_and_verdict_match_a_hand_computation(tmp_path) -> None:
    path = tmp_path / "published.csv"
    write_published(path, [{"published_method": "SET", "method": "set", "mean": 89.00, "se": 0.09},
                           {"published_method": "CHT", "method": "cht", "mean": 88.70, "se": 0.07},
                           {"published_method": "RigL", "method": "rigl", "mean": 89.91, "se": 0.07},
                           {"published_method": "GMP", "method": "gmp", "mean": 90.29, "se": 0.19}])
    runs = runs_of({"set": [0.8937, 0.8925, 0.8941], "cht": [0.8907, 0.8899, 0.8912], "rigl": [0.8860, 0.8871, 0.8850],
                    "static": [0.88, 0.88, 0.88]})
    table = reproduction_table(runs, published_results([path])).set_index("method")
    assert list(table.index) == ["set", "cht", "rigl"]  # gmp did not run, static has no published cell
    for method, published_mean, published_se in [("set", 89.00, 0.09), ("cht", 88.70, 0.07), ("rigl", 89.91, 0.07)]:
        values = [100 * v for v in runs.loc[runs["method"] == method, "final_test_accuracy"]]
        mean = sum(values) / 3
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / 2) / math.sqrt(3)
        row = table.loc[method]
        assert row["reproduced_mean"] == pytest.approx(mean) and row["reproduced_se"] == pytest.approx(se)
        assert row["delta"] == pytest.approx(mean - published_mean)
        assert row["tolerance"] == pytest.approx(2 * math.sqrt(published_se ** 2 + se ** 2))
        assert (row["reproduced_n"], row["published_n"]) == (3, 3)
        assert row["reproduced_anp"] == pytest.approx(0.4) and row["published_anp"] == 0.5
    assert table.loc["set", "verdict"] == ABOVE      # +0.34 against a tolerance of about 0.20
    assert table.loc["cht", "verdict"] == ABOVE
    assert table.loc["rigl", "verdict"] == BELOW


def test_verdict_boundaries_and_a_single_seed(tmp_path) -> None:
    path = tmp_path / "published.csv"
    write_published(path, [{"published_method": "SET", "method": "set", "mean": 89.0, "se": 0.5}])
    published = published_results([path])
    for accuracy, expected in [(0.8999, AGREES), (0.8800, AGREES), (0.9000, AGREES), (0.9002, ABOVE), (0.8798, BELOW)]:
        row = reproduction_table(runs_of({"set": [accuracy]}), published).iloc[0]
        assert math.isnan(row["reproduced_se"]) and "one seed" in row["note"]
        assert row["tolerance"] == pytest.approx(1.0) and row["verdict"] == expected, accuracy


def test_each_protocol_is_compared_on_its_own(tmp_path) -> None:
    path = tmp_path / "published.csv"
    write_published(path, [{"published_method": "SET", "method": "set", "mean": 89.0, "se": 0.1}])
    runs = pd.concat([runs_of({"set": [0.89, 0.89]}, "uniform"), runs_of({"set": [0.87, 0.87]}, "neurips2025")])
    table = reproduction_table(runs, published_results([path])).set_index("protocol")
    assert table.loc["uniform", "verdict"] == AGREES and table.loc["neurips2025", "verdict"] == BELOW


def test_counterparts_need_the_same_setting_and_method() -> None:
    grid = pd.DataFrame([{"dataset": "fashion_mnist", "model": "mlp", "dim": dim, "density": density, "method": method}
                         for dim, density, method in [(1, 0.01, "cht"), (2, 0.05, "cht"), (2, 0.010, "static")]])
    assert published_counterparts(grid).empty
    grid.loc[len(grid)] = {"dataset": "fashion_mnist", "model": "mlp", "dim": 2, "density": 0.010, "method": "cht"}
    found = published_counterparts(grid)
    assert list(found["method"]) == ["cht"] and list(found["dataset"]) == ["fashion_mnist"]


def reference_kendall_tau_a(x: list[float], y: list[float]) -> float:
    """(concordant − discordant) / pairs, counted pair by pair (no ties in the inputs)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    sign = [np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs]
    return float(sum(sign)) / len(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_a_pairwise_count(seed: int) -> None:
    generator = np.random.default_rng(seed)
    count = int(generator.integers(2, 10))
    table = pd.DataFrame({"table": 7, "dataset": "mnist", "model": "mlp", "dim": 2, "density": 0.01,
                          "protocol": "neurips2025", "published_mean": generator.permutation(count) + 80.0,
                          "reproduced_mean": generator.normal(85, 2, count)})
    ranks = rank_agreement(table)
    assert len(ranks) == 1 and ranks.iloc[0]["methods"] == count
    expected = reference_kendall_tau_a(list(table["published_mean"]), list(table["reproduced_mean"]))
    assert ranks.iloc[0]["kendall_tau"] == pytest.approx(expected)
    single = rank_agreement(table.iloc[:1])
    assert math.isnan(single.iloc[0]["kendall_tau"])


def test_written_tables_and_figure(tmp_path) -> None:
    published = published_results()
    accuracies = {method: [0.90, 0.901, 0.899] for method in TABLE7_METHODS}
    accuracies["cht"] = [0.80, 0.81, 0.82]
    table = reproduction_table(runs_of(accuracies), published)
    ranks = rank_agreement(table)
    paths = write_reproduction(table, ranks, tmp_path / "tables" / "reproduction")
    assert [path.name for path in paths] == ["reproduction.csv", "reproduction.md", "reproduction.html"]
    markdown = paths[1].read_text()
    counts = table["verdict"].value_counts()
    assert f"Cells compared: 9 ({counts.get(AGREES, 0)} agree" in markdown
    assert "CHT (cht)" in markdown and "**below**" in markdown and "Kendall τ" in markdown
    assert "Kendall τ" in paths[2].read_text() and (tmp_path / "tables" / "reproduction_ranks.csv").exists()
    assert pd.read_csv(paths[0])["verdict"].tolist() == table["verdict"].tolist()

    import matplotlib.image

    figure = tmp_path / "reproduction.png"
    reproduction_figure(table, figure)
    pixels = matplotlib.image.imread(figure)[..., :3]
    blue = np.array([31, 119, 180]) / 255  # tab:blue, the reproduced markers
    grey = np.array([0.35] * 3)
    assert (np.abs(pixels - blue).sum(axis=-1) < 0.05).sum() > 50
    assert (np.abs(pixels - grey).sum(axis=-1) < 0.05).sum() > 50


def test_an_empty_comparison_says_why(tmp_path) -> None:
    table = reproduction_table(runs_of({"static": [0.88]}), published_results())
    assert table.empty
    paths = write_reproduction(table, rank_agreement(table), tmp_path / "reproduction")
    assert "No published counterpart" in paths[1].read_text()
    reproduction_figure(table, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
