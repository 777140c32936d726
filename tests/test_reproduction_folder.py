"""`cht compare` on folders of finished runs: new runs join the collected ones, a run found twice with
different results is refused, the runs are listed seed by seed, the diagnostics beside them, and README blocks
are rewritten in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cht.analysis.reproduction import (LATE_FRACTION, collect_runs, compare_folder, diagnostic_listing,
                                       fill_readme)
from cht.cli import main

SETTING_PATH = Path("fashion_mnist", "mlp-dim2", "density0.01", "neurips2025")


def write_run(root: Path, method: str, seed: int, accuracy: list[float], *, dense: bool = False,
              anp: float = 0.4, train_time_s: float = 600.0, updates: int = 3, folder: Path | None = None) -> None:
    """A finished run as the pipeline leaves it below ``root`` (or in ``folder``): metrics.json and
    topology.json."""
    folder = root / SETTING_PATH / method / f"seed{seed}" if folder is None else folder
    folder.mkdir(parents=True)
    metrics = {"dataset": "fashion_mnist", "model": "mlp", "dim": 2, "density": 0.01, "protocol": "neurips2025",
               "method": method, "seed": seed, "epochs": len(accuracy), "test_accuracy": accuracy,
               "final_test_accuracy": accuracy[-1], "best_test_accuracy": max(accuracy),
               "final_anp": 1.0 if dense else anp, "links_per_layer": [] if dense else [100, 100, 100],
               "train_time_s": train_time_s, "evolution": [{"epoch": epoch} for epoch in range(updates)]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "topology.json").write_text(json.dumps({} if dense else {"gamma": 2.5}))


def write_readme(path: Path, block: str) -> str:
    text = f"# Title\n\nBefore.\n\n<!-- {block} -->\nstale numbers\n<!-- /{block} -->\n\nAfter.\n"
    path.write_text(text)
    return text


def test_new_runs_join_the_collected_ones_and_both_readmes_are_filled(tmp_path) -> None:
    out, new = tmp_path / "reproduction", tmp_path / "pipeline" / "runs"
    write_run(out / "runs", "set", 0, [0.85, 0.8926])
    write_run(out / "runs", "set", 1, [0.86, 0.8921], anp=0.995, train_time_s=359.0)
    write_run(new, "set", 2, [0.87, 0.8921], train_time_s=421.0)
    write_run(new, "fc", 0, [0.88, 0.9098], dense=True, train_time_s=9120.0)
    write_run(out, "set", 0, [0.5, 0.9, 0.6, 0.85, 0.8], folder=out / "diagnostics" / "set_probe" / "seed0")
    folder_readme, top_readme = out / "README.md", tmp_path / "README.md"
    write_readme(folder_readme, "results")
    write_readme(top_readme, "reproduction-table")

    table = compare_folder([out / "runs", new], out, readmes=[folder_readme, top_readme])

    assert sorted(table["method"]) == ["fc", "set"]
    assert table.set_index("method").loc["set", "reproduced_n"] == 3
    assert (out / "runs" / SETTING_PATH / "set" / "seed2" / "topology.json").exists()
    runs = (out / "tables" / "runs.md").read_text()
    fc_line = next(line for line in runs.splitlines() if line.startswith("| fc "))
    set_line = next(line for line in runs.splitlines() if line.startswith("| set "))
    assert runs.index("| fc ") < runs.index("| set ")  # the published table's order
    assert [cell.strip() for cell in fc_line.strip("|").split("|")] == ["fc", "0", "90.98", "–", "152"]
    assert [cell.strip() for cell in set_line.strip("|").split("|")] == [
        "set", "0, 1, 2", "89.26, 89.21, 89.21", "40.0%, 99.5%, 40.0%", "10, 6, 7"]
    text = folder_readme.read_text()
    assert text.startswith("# Title\n\nBefore.\n\n<!-- results -->\n## Results\n") and text.endswith(
        "\n<!-- /results -->\n\nAfter.\n")
    assert "stale numbers" not in text and "![published against reproduced](figures/reproduction.png)" in text
    assert "### Runs\n\n" + runs.strip() in text and "### Diagnostic runs (outside the grid)" in text
    probe_line = next(line for line in text.splitlines() if line.startswith("| set_probe "))
    assert [cell.strip() for cell in probe_line.strip("|").split("|")] == [
        "set_probe", "set", "0", "80.00", "85.00", "40.0%", "3", "600"]  # the best of epochs 4 and 5
    comparison = (out / "tables" / "reproduction.md").read_text().strip()
    assert top_readme.read_text() == f"# Title\n\nBefore.\n\n<!-- reproduction-table -->\n{comparison}\n" \
                                     "<!-- /reproduction-table -->\n\nAfter.\n"

    figures = {path.name: path.read_bytes() for path in (out / "figures").iterdir()}
    compare_folder(out / "runs", out, readmes=[folder_readme])  # again, from the collected runs alone
    assert folder_readme.read_text() == text
    assert {path.name: path.read_bytes() for path in (out / "figures").iterdir()} == figures


def test_a_run_with_different_results_in_two_folders_is_refused(tmp_path) -> None:
    write_run(tmp_path / "a", "set", 0, [0.89])
    write_run(tmp_path / "b", "set", 0, [0.88])
    with pytest.raises(ValueError, match="differs between .*keep one of them"):
        collect_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_collected_before_and_still_in_the_pipeline_folder_is_taken_once(tmp_path) -> None:
    write_run(tmp_path / "pipeline", "set", 0, [0.89])
    first = collect_runs(tmp_path / "pipeline", tmp_path / "out")
    write_run(tmp_path / "pipeline", "set", 1, [0.88])
    again = collect_runs([tmp_path / "out" / "runs", tmp_path / "pipeline"], tmp_path / "out")
    assert [path.parent.name for path in first] == ["seed0"] and [path.parent.name for path in again] == [
        "seed0", "seed1"]


def test_a_readme_without_a_block_is_refused_before_anything_is_written(tmp_path, capsys) -> None:
    write_run(tmp_path / "runs", "set", 0, [0.89])
    readme = tmp_path / "README.md"
    readme.write_text("# No block here\n")
    with pytest.raises(SystemExit) as stop:
        main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--readme", str(readme)])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert "holds no block to fill" in error and "<!-- results -->" in error and str(readme) in error
    assert not (tmp_path / "out").exists() and readme.read_text() == "# No block here\n"


@pytest.mark.parametrize("text, found", [
    ("<!-- results -->\n<!-- results -->\n<!-- /results -->\n", "found 2 and 1"),
    ("<!-- /results -->\nx\n<!-- results -->\n", "found 1 and 1"),
])
def test_a_malformed_block_is_refused_and_the_file_kept(tmp_path, text, found) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(ValueError, match=f"needs one <!-- results --> followed by one <!-- /results -->, {found}"):
        fill_readme(readme, {"results": "new"})
    assert readme.read_text() == text


def test_the_cli_fills_a_readme_and_says_so(tmp_path, capsys) -> None:
    write_run(tmp_path / "runs", "set", 0, [0.89])
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    write_readme(readme, "results")
    assert main(["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--readme", str(readme)]) == 0
    assert f"filled {readme}" in capsys.readouterr().out
    assert "](../out/figures/reproduction.png)" in readme.read_text()  # relative to the README


@pytest.mark.parametrize("seed", range(3))
def test_diagnostics_report_the_best_accuracy_of_the_late_epochs(tmp_path, seed) -> None:
    rng = np.random.default_rng(seed)
    expected = {}
    for name in ("probe_a", "probe_b"):
        epochs = int(rng.integers(1, 40))
        accuracy = rng.uniform(0.5, 0.95, epochs).round(4).tolist()
        updates = int(rng.integers(0, 10))
        folder = tmp_path / name / "seed3"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "method": "set", "seed": 3, "test_accuracy": accuracy, "final_test_accuracy": accuracy[-1],
            "final_anp": 0.25, "evolution": [{}] * updates, "train_time_s": 61.4}))
        late = [value for epoch, value in enumerate(accuracy, start=1) if epoch > LATE_FRACTION * epochs]
        expected[name] = (f"{100 * accuracy[-1]:.2f}", f"{100 * max(late):.2f}", updates)
    listing = diagnostic_listing(tmp_path).set_index("diagnostic")
    for name, (final, best, updates) in expected.items():
        row = listing.loc[name]
        assert (row["final accuracy (%)"], row["best after 75% (%)"], row["updates"]) == (final, best, updates)
        assert (row["method"], row["seed"], row["ANP"], row["train time (s)"]) == ("set", 3, "25.0%", "61")
    assert diagnostic_listing(tmp_path / "absent").empty
