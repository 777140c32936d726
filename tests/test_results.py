"""Aggregation of run results into tables: checked against obvious per-group loops on random runs."""

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cht.config import RUN_KEY
from cht.results import (PERFORMANCE_COLUMNS, TOPOLOGY_COLUMNS, Column, DamagedResultError, anp_curves,
                         format_summary, learning_curves, numbers, read_table, run_table, scalar_metrics, select,
                         summarise, write_tables)

METHODS = ["static", "set", "cht"]


def fake_metrics(rng: np.random.Generator, method: str, seed: int, dataset: str = "fashion_mnist",
                 epochs: int = 4, evolving: bool = True, dense: bool = False) -> dict:
    """A metrics.json as cht.train writes it, with random numbers."""
    accuracy = rng.uniform(0.5, 0.9, epochs).tolist()
    evolution = [{"epoch": e, "step": 10 * e, "anp": float(rng.uniform(0.3, 1.0))}
                 for e in range(1, epochs)] if evolving else []
    initial_anp = [] if dense else [float(rng.uniform(0.3, 1.0))]  # ANP at initialisation, sparse models only
    return {
        "method": method, "dataset": dataset, "model": "mlp", "dim": 1, "density": 0.01, "seed": seed,
        "epochs": epochs, "test_accuracy": accuracy, "train_loss": rng.uniform(0.1, 2.0, epochs).tolist(),
        "final_test_accuracy": accuracy[-1], "best_test_accuracy": max(accuracy),
        "aae": sum(accuracy) / epochs, "links_per_layer": [] if dense else rng.integers(100, 200, 3).tolist(),
        "anp": initial_anp + [record["anp"] for record in evolution],
        "final_anp": float(rng.uniform(0.3, 1.0)),
        "active_per_layer": [784, 500, 400, 300], "evolution": evolution,
        "train_time_s": float(rng.uniform(1, 100)), "config": {"lr": 0.01}, "device": "cpu",
    }


def write_runs(folder: Path, runs: list[dict], topology: bool = True) -> tuple[list[Path], list[Path]]:
    metrics_paths, topology_paths = [], []
    for index, run in enumerate(runs):
        run_dir = folder / f"run{index}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(run))
        metrics_paths.append(run_dir / "metrics.json")
        if topology:
            values = {} if not run["links_per_layer"] else {
                "anp": run["final_anp"], "gamma": math.nan if run["seed"] == 0 else 2.0 + run["seed"],
                "modularity": 0.1 * run["seed"], "n_communities": 3 + run["seed"], "char_path_length": 4.0,
                "square_clustering": 0.01, "layer_sizes": [784, 784], "char_path_length_exact": False,
                "aae": -1.0}
            (run_dir / "topology.json").write_text(json.dumps(values))
            topology_paths.append(run_dir / "topology.json")
    return metrics_paths, topology_paths


@pytest.fixture
def random_runs() -> list[dict]:
    rng = np.random.default_rng(7)
    return [fake_metrics(rng, method, seed, evolving=method != "static")
            for method in METHODS for seed in range(3)]


def test_run_table_has_one_row_per_run_with_results_and_topology(tmp_path, random_runs) -> None:
    metrics_paths, topology_paths = write_runs(tmp_path, random_runs)
    table = run_table(metrics_paths, topology_paths)
    assert len(table) == len(random_runs)
    for run, (_, row) in zip(random_runs, table.iterrows()):
        assert (row["method"], row["seed"]) == (run["method"], run["seed"])
        assert row["final_test_accuracy"] == run["final_test_accuracy"]
        assert row["links"] == sum(run["links_per_layer"])
        assert row["modularity"] == pytest.approx(0.1 * run["seed"])
        # A topology value named like a metrics value keeps both, the topology one prefixed.
        assert row["aae"] == run["aae"] and row["topology.aae"] == -1.0
    assert "layer_sizes" not in table.columns and "char_path_length_exact" not in table.columns
    assert table.loc[table["seed"] == 0, "gamma"].isna().all()


def test_run_table_of_a_dense_run_has_no_links(tmp_path) -> None:
    dense = fake_metrics(np.random.default_rng(0), "fc", 0, evolving=False, dense=True)
    metrics_paths, topology_paths = write_runs(tmp_path, [dense])
    table = run_table(metrics_paths, topology_paths)
    assert math.isnan(table.loc[0, "links"])
    assert "modularity" not in table.columns


def test_run_table_rejects_bad_input(tmp_path, random_runs) -> None:
    metrics_paths, topology_paths = write_runs(tmp_path, random_runs[:2])
    with pytest.raises(ValueError, match="one topology file per run"):
        run_table(metrics_paths, topology_paths[:1])
    with pytest.raises(ValueError, match="same run"):
        run_table([metrics_paths[0], metrics_paths[0]])
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(ValueError, match="lacks"):
        run_table([stray])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        run_table([broken])


def reference_summary(runs: list[dict], metric: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Mean, sample standard deviation and count per (dataset, method), by plain loops."""
    groups: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        value = sum(run["links_per_layer"]) if metric == "links" else run[metric]
        groups.setdefault((run["dataset"], run["method"]), []).append(value)
    return {key: (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values))
            for key, values in groups.items()}


@pytest.mark.parametrize("trial", range(5))
def test_summarise_matches_per_group_loops(tmp_path, trial) -> None:
    rng = np.random.default_rng(100 + trial)
    runs = [fake_metrics(rng, method, seed, dataset=dataset)
            for dataset in ("fashion_mnist", "mnist") for method in METHODS
            for seed in range(int(rng.integers(1, 5)))]
    table = run_table(write_runs(tmp_path, runs, topology=False)[0])
    metrics = ["final_test_accuracy", "aae", "links", "train_time_s"]
    summary = summarise(table, metrics, method_order=METHODS)
    for metric in metrics:
        expected = reference_summary(runs, metric)
        for _, row in summary.iterrows():
            mean, std, count = expected[(row["dataset"], row["method"])]
            assert row["seeds"] == count
            assert row[f"{metric}_mean"] == pytest.approx(mean)
            if count > 1:
                assert row[f"{metric}_std"] == pytest.approx(std)
            else:
                assert math.isnan(row[f"{metric}_std"])


def test_summarise_orders_methods_as_asked_and_checks_the_order(tmp_path, random_runs) -> None:
    table = run_table(write_runs(tmp_path, random_runs, topology=False)[0])
    assert summarise(table, ["aae"], method_order=["cht", "static", "set"])["method"].tolist() == [
        "cht", "static", "set"]
    assert summarise(table, ["aae"])["method"].tolist() == sorted(METHODS)
    with pytest.raises(ValueError, match="lacks"):
        summarise(table, ["aae"], method_order=["set"])
    with pytest.raises(ValueError, match="no column"):
        summarise(table, ["accuracy"])


def test_format_summary_scales_rounds_and_marks_missing_values() -> None:
    summary = pd.DataFrame({
        "dataset": ["d", "d"], "model": ["mlp", "mlp"], "dim": [1, 1], "density": [0.01, 0.01],
        "protocol": ["uniform", "uniform"], "method": ["a", "b"], "seeds": [3, 1], "acc_mean": [0.91234, math.nan],
        "acc_std": [0.00456, math.nan],
        "links_mean": [1500.4, 10.0], "links_std": [math.nan, math.nan]})
    text = format_summary(summary, {"acc": Column("Acc (%)", 100.0, 2), "links": Column("Links", 1.0, 0)})
    assert text["Acc (%)"].tolist() == ["91.23 ± 0.46", "–"]
    assert text["Links"].tolist() == ["1500", "10"]
    assert text["density"].tolist() == ["0.01", "0.01"]


def test_write_tables_writes_every_format(tmp_path, random_runs) -> None:
    table = run_table(*write_runs(tmp_path / "runs", random_runs))
    summary = summarise(table, PERFORMANCE_COLUMNS, method_order=METHODS)
    paths = write_tables(summary, PERFORMANCE_COLUMNS, tmp_path / "tables" / "summary")
    assert [path.name for path in paths] == ["summary.csv", "summary.md", "summary.tex", "summary.html"]
    numeric = pd.read_csv(paths[0])
    assert numeric["aae_mean"].tolist() == pytest.approx(summary["aae_mean"].tolist())
    markdown = paths[1].read_text().splitlines()
    assert len(markdown) == 2 + len(METHODS) and "Final accuracy (%)" in markdown[0]
    latex = paths[2].read_text()
    assert r"fashion\_mnist" in latex and r"$\pm$" in latex and r"\toprule" in latex
    assert "<table" in paths[3].read_text()


def test_topology_summary_keeps_undefined_exponents_out_of_the_mean(tmp_path, random_runs) -> None:
    table = run_table(*write_runs(tmp_path, random_runs))
    summary = summarise(table, TOPOLOGY_COLUMNS, method_order=METHODS)
    # Seed 0 has no exponent (NaN): the mean is over seeds 1 and 2 only.
    assert summary["gamma_mean"].tolist() == pytest.approx([3.5] * len(METHODS))


def test_learning_and_anp_curves_are_long_tables(tmp_path, random_runs) -> None:
    metrics_paths, _ = write_runs(tmp_path, random_runs, topology=False)
    curves = learning_curves(metrics_paths)
    assert len(curves) == sum(len(run["test_accuracy"]) for run in random_runs)
    first = curves[(curves["method"] == "set") & (curves["seed"] == 1)]
    run = next(r for r in random_runs if r["method"] == "set" and r["seed"] == 1)
    assert first["epoch"].tolist() == list(range(1, 5)) and first["test_accuracy"].tolist() == run["test_accuracy"]
    anp = anp_curves(metrics_paths)
    assert set(anp["method"]) == {"set", "cht"}  # static never evolves
    # The ANP at initialisation (step 0), then one entry per update.
    assert anp[(anp["method"] == "cht") & (anp["seed"] == 2)]["anp"].tolist() == next(
        r["anp"] for r in random_runs if r["method"] == "cht" and r["seed"] == 2)
    assert anp_curves(metrics_paths[:3]).empty


def test_select_converts_text_values_to_the_column_type(tmp_path, random_runs) -> None:
    curves = learning_curves(write_runs(tmp_path, random_runs, topology=False)[0])
    chosen = select(curves, dataset="fashion_mnist", dim="1", density="0.01", method="cht")
    assert len(chosen) == 3 * 4 and set(chosen["method"]) == {"cht"}
    assert select(curves, density="0.05").empty
    with pytest.raises(ValueError, match="no column"):
        select(curves, width="1")


def test_numbers_keep_nan_and_scalar_metrics_drop_it() -> None:
    values = {"a": 1, "b": 2.5, "c": math.nan, "d": True, "e": [1, 2], "f": "x", "g": math.inf}
    assert numbers(values).keys() == {"a", "b", "c", "g"}
    assert scalar_metrics(values) == {"a": 1.0, "b": 2.5}


def test_runs_without_a_protocol_count_as_uniform_and_protocols_are_separate_settings(tmp_path) -> None:
    rng = np.random.default_rng(3)
    old = fake_metrics(rng, "set", 0)
    released = {**fake_metrics(rng, "set", 0), "protocol": "released"}
    table = run_table(write_runs(tmp_path, [old, released], topology=False)[0])
    assert table["protocol"].tolist() == ["uniform", "released"]
    assert len(summarise(table, ["aae"])) == 2


def test_anp_curves_start_at_initialisation_when_recorded(tmp_path) -> None:
    rng = np.random.default_rng(4)
    with_initial = fake_metrics(rng, "cht", 0)
    with_initial["anp"] = [0.95, *(record["anp"] for record in with_initial["evolution"])]
    static = fake_metrics(rng, "static", 0, evolving=False)
    static["anp"] = [1.0]
    curves = anp_curves(write_runs(tmp_path, [with_initial, static], topology=False)[0])
    assert curves["method"].unique().tolist() == ["cht"]
    assert curves["step"].tolist() == list(range(len(with_initial["evolution"]) + 1))
    assert curves.iloc[0][["epoch", "train_step", "anp"]].tolist() == [0, 0, 0.95]


# --- damaged results: every reader names the file and how to regenerate it ------------------------------------

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "foreign": lambda text: json.dumps({"accuracy": [0.9]}),
    "not an object": lambda text: json.dumps([1, 2, 3]),
    "not text": lambda text: "\udcff",
}


def damage(path: Path, kind: str) -> None:
    text = DAMAGE[kind](path.read_text())
    if kind == "not text":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(text)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("reader", ["run_table", "learning_curves", "anp_curves"])
def test_a_damaged_metrics_file_is_named_with_the_fix(tmp_path, random_runs, kind, reader) -> None:
    metrics_paths, topology_paths = write_runs(tmp_path, random_runs[:3])
    damage(metrics_paths[1], kind)
    read = {"run_table": lambda: run_table(metrics_paths, topology_paths),
            "learning_curves": lambda: learning_curves(metrics_paths), "anp_curves": lambda: anp_curves(metrics_paths)}
    with pytest.raises(DamagedResultError, match="delete it and rerun the pipeline") as error:
        read[reader]()
    assert error.value.path == metrics_paths[1] and str(metrics_paths[1]) in str(error.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "not an object", "not text"])
def test_a_damaged_topology_file_is_named_with_the_fix(tmp_path, random_runs, kind) -> None:
    metrics_paths, topology_paths = write_runs(tmp_path, random_runs[:3])
    damage(topology_paths[2], kind)
    with pytest.raises(DamagedResultError, match="delete it and rerun") as error:
        run_table(metrics_paths, topology_paths)
    assert error.value.path == topology_paths[2]


def test_a_missing_or_damaged_table_is_named_with_the_fix(tmp_path, random_runs) -> None:
    metrics_paths, topology_paths = write_runs(tmp_path, random_runs)
    path = tmp_path / "runs.csv"
    run_table(metrics_paths, topology_paths).to_csv(path, index=False)
    assert len(read_table(path, RUN_KEY)) == len(random_runs)
    text = path.read_text()
    for content, reason in [("", "not a readable CSV"), ('a,b\n"1,2\n', "not a readable CSV"),
                            (text.replace("method", "technique"), "lacks column")]:
        path.write_text(content)
        with pytest.raises(DamagedResultError, match=reason):
            read_table(path, RUN_KEY)
    with pytest.raises(DamagedResultError, match="missing"):
        read_table(tmp_path / "absent.csv")
