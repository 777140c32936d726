"""Every figure writes a PNG and a PDF that show something, draws what its data says (checked on the matplotlib
Figure it saves, against values computed here from the data), and rejects malformed input clearly."""

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from matplotlib.collections import LineCollection, PathCollection
from scipy.sparse import csgraph

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
    assert_not_blank(paths[0])


def assert_not_blank(png: Path) -> None:
    """The PNG, as pixels, is a drawing: large enough for 200 dpi, with ink on it in more than two shades."""
    pixels = matplotlib.image.imread(png)[..., :3]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300, pixels.shape
    ink = (pixels < 0.95).any(axis=-1)
    assert 0.005 < ink.mean() < 0.9, f"{png.name}: {ink.mean():.1%} of the pixels are not white"
    shades = np.unique((pixels[ink] * 255).round().astype(np.uint8), axis=0)
    assert len(shades) > 10, f"{png.name}: only {len(shades)} colours drawn"


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib Figures the plot functions save (saved as usual)."""
    figures_saved = []
    save = figures._save

    def recording(figure, stem):
        figures_saved.append(figure)
        return save(figure, stem)

    monkeypatch.setattr(figures, "_save", recording)
    return figures_saved


def legend_texts(legend) -> list[str]:
    assert legend is not None, "the figure has no legend"
    return [text.get_text() for text in legend.get_texts()]


def scatters(axes) -> list[PathCollection]:
    return [collection for collection in axes.collections if isinstance(collection, PathCollection)]


def slow_degrees(masks) -> np.ndarray:
    """Links of every neuron (inputs, then each layer's outputs), neuron by neuron from the ``(in, out)`` masks."""
    degrees = []
    for layer in range(len(masks) + 1):
        n_neurons = masks[0].shape[0] if layer == 0 else masks[layer - 1].shape[1]
        for neuron in range(n_neurons):
            degree = 0
            if layer > 0:
                degree += int(masks[layer - 1][:, neuron].sum())
            if layer < len(masks):
                degree += int(masks[layer][neuron, :].sum())
            degrees.append(degree)
    return np.array(degrees)


def degree_points(masks) -> np.ndarray:
    """(degree, share of linked neurons with it), the points a degree-distribution panel must show."""
    degree = slow_degrees(masks)
    degree = degree[degree > 0]
    values, counts = np.unique(degree, return_counts=True)
    return np.column_stack([values, counts / degree.size])


def largest_component_size(masks) -> int:
    sizes = [masks[0].shape[0]] + [mask.shape[1] for mask in masks]
    offsets = np.cumsum([0] + sizes)
    rows, cols = [], []
    for layer, mask in enumerate(masks):
        source, target = np.nonzero(mask.numpy())
        rows += list(source + offsets[layer])
        cols += list(target + offsets[layer + 1])
    adjacency = sp.coo_array((np.ones(len(rows)), (rows, cols)), shape=(offsets[-1], offsets[-1]))
    _, labels = csgraph.connected_components(adjacency, directed=False)
    return int(np.bincount(labels).max())


def mean_over_seeds(df: pd.DataFrame, x: str, y: str) -> dict[str, np.ndarray]:
    """Per method, the mean of ``y`` over seeds at each ``x`` (what a mean line must draw)."""
    return {method: group.groupby(x)[y].mean().to_numpy() for method, group in df.groupby("method")}


def assert_mean_lines(axes, expected: dict[str, np.ndarray], n_points: int) -> None:
    """One drawn line per method, through the method's means, each with its standard-deviation band."""
    lines = [line for line in axes.get_lines() if len(line.get_ydata()) == n_points]
    assert len(lines) == len(expected)
    drawn_means = sorted(tuple(np.round(line.get_ydata(), 10)) for line in lines)
    assert drawn_means == sorted(tuple(np.round(values, 10)) for values in expected.values())
    bands = [collection for collection in axes.collections if type(collection).__name__.endswith("PolyCollection")]
    assert len(bands) == len(expected)


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


# --- what each figure shows --------------------------------------------------------------------------------


def test_degree_distribution_shows_the_degree_shares_and_a_named_fit(drawn, tmp_path: Path) -> None:
    figures.plot_degree_distribution(TRAINED, tmp_path / "degrees", label="trained")
    (figure,) = drawn
    (axes,) = figure.axes
    assert (axes.get_xscale(), axes.get_yscale(), axes.get_title()) == ("log", "log", "trained")
    (points,) = scatters(axes)
    np.testing.assert_allclose(points.get_offsets(), degree_points(TRAINED))
    texts = legend_texts(axes.get_legend())
    assert texts[0] == "trained" and re.fullmatch(r"(power law|rejected fit), γ = \d+\.\d\d", texts[1])
    (fit,) = axes.get_lines()
    assert fit.get_xdata()[-1] == degree_points(TRAINED)[-1, 0]  # the fit is drawn up to the largest degree


def test_degree_initial_final_shows_both_networks_hollow_then_filled(drawn, tmp_path: Path) -> None:
    figures.plot_degree_initial_final(INITIAL, TRAINED, tmp_path / "degrees", "CHT")
    (figure,) = drawn
    (axes,) = figure.axes
    assert axes.get_title() == "CHT: initial vs trained"
    initial, trained = scatters(axes)
    np.testing.assert_allclose(initial.get_offsets(), degree_points(INITIAL))
    np.testing.assert_allclose(trained.get_offsets(), degree_points(TRAINED))
    assert initial.get_facecolors().size == 0 or (initial.get_facecolors()[:, 3] == 0).all()  # hollow
    assert (trained.get_facecolors()[:, 3] > 0).all()
    texts = legend_texts(axes.get_legend())
    assert texts[0] == "initial" and texts[2] == "trained" and len(texts) == 4


def test_learning_curves_have_a_panel_per_dataset_and_a_mean_line_per_method(drawn, tmp_path: Path) -> None:
    df = learning_frame()
    figures.plot_learning_curves(df, tmp_path / "curves")
    (figure,) = drawn
    assert [axes.get_title() for axes in figure.axes] == ["Fashion-MNIST", "MNIST"]
    for axes in figure.axes:
        assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "test accuracy")
        assert_mean_lines(axes, mean_over_seeds(df[df["dataset"] == axes.get_title()], "epoch", "test_accuracy"), 5)
    assert figure.axes[0].get_legend() is None
    assert legend_texts(figure.axes[-1].get_legend()) == ["CHT", "SET"]


def test_aae_bars_show_each_methods_mean_over_seeds_and_every_seed(drawn, tmp_path: Path) -> None:
    df = learning_frame()
    figures.plot_aae_bars(df, tmp_path / "aae")
    (figure,) = drawn
    assert [axes.get_title() for axes in figure.axes] == ["Fashion-MNIST", "MNIST"]
    for axes in figure.axes:
        runs = df[df["dataset"] == axes.get_title()].groupby(["method", "seed"])["test_accuracy"].mean()
        assert [label.get_text() for label in axes.get_xticklabels()] == ["CHT", "SET"]
        heights = [bar.get_height() for bar in axes.patches]
        np.testing.assert_allclose(heights, [runs["CHT"].mean(), runs["SET"].mean()])
        dots = scatters(axes)
        assert [len(points.get_offsets()) for points in dots] == [2, 2]  # one dot per seed
        np.testing.assert_allclose(sorted(np.concatenate([points.get_offsets()[:, 1] for points in dots])),
                                   sorted(runs.to_numpy()))
        low, high = axes.get_ylim()
        assert low > 0 and low < runs.min() and high > runs.max()  # zoomed to the data


@pytest.mark.parametrize(("plot", "frame", "x", "xlabel"), [
    (figures.plot_anp_over_steps, anp_frame, "step", "evolution step"),
    (figures.plot_anp_over_epochs, anp_epoch_frame, "epoch", "epoch"),
])
def test_anp_figures_draw_a_mean_line_per_method(drawn, tmp_path: Path, plot, frame, x, xlabel) -> None:
    df = frame()
    plot(df, tmp_path / "anp")
    (figure,) = drawn
    (axes,) = figure.axes
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_ylim()) == (xlabel, "active-neuron proportion", (0, 1.05))
    assert_mean_lines(axes, mean_over_seeds(df, x, "anp"), df[x].nunique())
    assert legend_texts(axes.get_legend()) == ["CHT", "SET"]


def test_hyperbolic_embedding_shows_the_largest_component_by_layer(drawn, tmp_path: Path) -> None:
    figures.plot_hyperbolic_embedding(INITIAL, TRAINED, tmp_path / "embedding")
    (figure,) = drawn
    assert [axes.name for axes in figure.axes] == ["polar", "polar"]
    for axes, (title, masks) in zip(figure.axes, [("Initial", INITIAL), ("Trained", TRAINED)]):
        assert re.fullmatch(rf"{title}\nASI \(layers\) = -?\d\.\d\d", axes.get_title())
        points = scatters(axes)
        assert [collection.get_label() for collection in points] == ["input", "layer 1", "layer 2"]
        assert sum(len(collection.get_offsets()) for collection in points) == largest_component_size(masks)
    (legend,) = figure.legends
    assert legend_texts(legend) == ["input", "layer 1", "layer 2"]


def test_hyperbolic_embedding_of_methods_has_a_column_per_method(drawn, tmp_path: Path) -> None:
    figures.plot_hyperbolic_embedding_methods({"CHT": (INITIAL, TRAINED), "SET": (INITIAL, INITIAL)}, tmp_path / "m")
    (figure,) = drawn
    assert [axes.get_title().split("\n")[0] for axes in figure.axes] == [
        "CHT, initial", "SET, initial", "CHT, trained", "SET, trained"]
    shown = [sum(len(collection.get_offsets()) for collection in scatters(axes)) for axes in figure.axes]
    assert shown == [largest_component_size(masks) for masks in (INITIAL, INITIAL, TRAINED, INITIAL)]


def test_layered_communities_draw_every_neuron_in_its_layer_column_and_every_link(drawn, tmp_path: Path) -> None:
    figures.plot_layered_communities(TRAINED, tmp_path / "communities")
    (figure,) = drawn
    (axes,) = figure.axes
    assert [label.get_text() for label in axes.get_xticklabels()] == ["input", "layer 1", "layer 2"]
    found = re.fullmatch(r"(\d+) communities, modularity (\d\.\d\d)", axes.get_title())
    assert found and int(found[1]) >= 2 and float(found[2]) > 0.2  # the block model has communities
    (neurons,) = scatters(axes)
    columns = neurons.get_offsets()[:, 0]
    assert np.bincount(columns.astype(int)).tolist() == [20, 30, 30]
    (links,) = [collection for collection in axes.collections if isinstance(collection, LineCollection)]
    assert len(links.get_segments()) == sum(int(mask.sum()) for mask in TRAINED)
    assert all(abs(segment[1, 0] - segment[0, 0]) == 1 for segment in links.get_segments())  # next layer only


def test_every_caption_belongs_to_a_plot_function() -> None:
    plotters = {name.removeprefix("plot_") for name in dir(figures) if name.startswith("plot_")}
    assert set(figures.CAPTIONS) == plotters


def test_layered_communities_draws_isolated_neurons(drawn, tmp_path: Path) -> None:
    masks = [mask.clone() for mask in TRAINED]
    masks[0][:5] = False  # five inputs without links
    assert_written(figures.plot_layered_communities(masks, tmp_path / "isolated"), tmp_path / "isolated")
    (neurons,) = scatters(drawn[0].axes[0])
    inputs = neurons.get_offsets()[:, 0] == 0
    grey = np.isclose(neurons.get_facecolors()[:, :3], 0.75).all(axis=1)
    assert int((grey & inputs).sum()) == 5 and int(grey.sum()) == 5
    # Sorted last in their column: the five lowest inputs.
    heights = neurons.get_offsets()[inputs, 1]
    assert sorted(heights[grey[inputs]]) == sorted(np.sort(heights)[:5])


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
