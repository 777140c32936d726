"""Every figure writes a non-empty PNG and PDF, and rejects malformed input clearly."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cht.analysis import figures
from cht.analysis.synthetic import stochastic_block_masks

INITIAL = stochastic_block_masks([20, 30, 30], p_in=0.1, p_out=0.1, seed=0)
TRAINED = stochastic_block_masks([20, 30, 30], p_in=0.25, p_out=0.02, seed=1)


def learning_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"dataset": dataset, "method": method, "seed": seed, "epoch": epoch,
             "test_accuracy": 0.9 - 0.3 * np.exp(-epoch / 3) + rng.normal(0, 0.01)}
            for dataset in ("MNIST", "Fashion-MNIST") for method in ("CHT", "SET")
            for seed in range(2) for epoch in range(1, 6)]
    return pd.DataFrame(rows)


def anp_frame() -> pd.DataFrame:
    return pd.DataFrame([{"method": method, "seed": seed, "step": step, "anp": 1.0 - 0.05 * step * (seed + 1)}
                         for method in ("CHT", "SET") for seed in range(2) for step in range(6)])


def anp_epoch_frame() -> pd.DataFrame:
    return anp_frame().assign(epoch=lambda frame: frame["step"] * 2)


def assert_written(paths: list[Path], stem: Path) -> None:
    assert [path.name for path in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    png, pdf = (path.read_bytes() for path in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("degree_distribution",
         lambda stem: figures.plot_degree_distribution(TRAINED, stem, label="trained")),
        ("learning_curves", lambda stem: figures.plot_learning_curves(learning_frame(), stem)),
        ("aae_bars", lambda stem: figures.plot_aae_bars(learning_frame(), stem)),
        ("anp_over_steps", lambda stem: figures.plot_anp_over_steps(anp_frame(), stem)),
        ("anp_over_epochs", lambda stem: figures.plot_anp_over_epochs(anp_epoch_frame(), stem)),
        ("degree_initial_final", lambda stem: figures.plot_degree_initial_final(INITIAL, TRAINED, stem, "CHT")),
        ("hyperbolic_embedding", lambda stem: figures.plot_hyperbolic_embedding(INITIAL, TRAINED, stem)),
        ("hyperbolic_embedding_methods", lambda stem: figures.plot_hyperbolic_embedding_methods(
            {"CHT": (INITIAL, TRAINED), "SET": (INITIAL, INITIAL)}, stem)),
        ("layered_communities", lambda stem: figures.plot_layered_communities(TRAINED, stem)),
    ],
)
def test_figure_files_are_written(tmp_path: Path, name: str, draw) -> None:
    stem = tmp_path / "nested" / name
    assert_written(draw(stem), stem)
    assert figures.CAPTIONS[name]


def test_every_caption_belongs_to_a_plot_function() -> None:
    plotters = {name.removeprefix("plot_") for name in dir(figures) if name.startswith("plot_")}
    assert set(figures.CAPTIONS) == plotters


def test_layered_communities_draws_isolated_neurons(tmp_path: Path) -> None:
    masks = [mask.clone() for mask in TRAINED]
    masks[0][:5] = False  # five inputs without links
    assert_written(figures.plot_layered_communities(masks, tmp_path / "isolated"), tmp_path / "isolated")


@pytest.mark.parametrize("plot", [figures.plot_learning_curves, figures.plot_aae_bars])
def test_learning_figures_reject_missing_columns(tmp_path: Path, plot) -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['test_accuracy'\]"):
        plot(learning_frame().drop(columns="test_accuracy"), tmp_path / "bad")
    with pytest.raises(ValueError, match="no rows"):
        plot(learning_frame().iloc[:0], tmp_path / "bad")
    with pytest.raises(TypeError, match="pandas DataFrame"):
        plot(learning_frame().to_dict("records"), tmp_path / "bad")
    assert not list(tmp_path.iterdir())


def test_anp_figure_rejects_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['step'\]"):
        figures.plot_anp_over_steps(anp_frame().rename(columns={"step": "epoch"}), tmp_path / "bad")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['epoch'\]"):
        figures.plot_anp_over_epochs(anp_frame(), tmp_path / "bad")


def test_topology_figures_reject_unusable_networks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no links"):
        figures.plot_degree_distribution([torch.zeros(4, 5, dtype=torch.bool)], tmp_path / "empty")
    with pytest.raises(ValueError, match="no links"):
        figures.plot_degree_initial_final([torch.zeros(4, 5, dtype=torch.bool)], TRAINED, tmp_path / "empty")
    with pytest.raises(ValueError, match="methods is empty"):
        figures.plot_hyperbolic_embedding_methods({}, tmp_path / "none")
    with pytest.raises(TypeError, match="boolean mask"):
        figures.plot_layered_communities([torch.ones(4, 5)], tmp_path / "float")


def test_every_method_of_a_learning_figure_has_its_own_colour_and_line_style(monkeypatch, tmp_path: Path) -> None:
    methods = [f"method{index:02d}" for index in range(16)]
    df = pd.DataFrame([{"dataset": "fashion_mnist", "model": "mlp", "dim": 1, "density": 0.01, "protocol": "uniform",
                        "method": method, "seed": seed, "epoch": epoch, "test_accuracy": 0.5 + 0.01 * index + 0.001 * epoch,
                        "train_loss": 1.0}
                       for index, method in enumerate(methods) for seed in range(2) for epoch in range(1, 4)])
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, stem: drawn.append(figure) or [])
    figures.plot_learning_curves(df, tmp_path / "curves")
    lines = [line for line in drawn[0].axes[0].get_lines() if len(line.get_xdata()) == 3]
    assert len(lines) == len(methods)
    looks = {(line.get_color() if isinstance(line.get_color(), str) else tuple(np.round(line.get_color(), 4)),
              line.get_linestyle(), tuple(line._dash_pattern[1] or ())) for line in lines}
    assert len(looks) == len(methods)  # no two methods look alike
