"""Publication figures of training runs and trained topologies.

Every ``plot_*`` function writes ``<stem>.png`` (200 dpi) and ``<stem>.pdf`` and returns both paths;
``CAPTIONS[name]`` is the matching caption (plain text, usable in a Snakemake report). Figures are
drawn on ``matplotlib.figure.Figure`` objects, never through pyplot, so no global backend or
figure registry is touched and the functions are safe in worker processes without a display.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from cht.analysis.embedding import angular_separation_index, hyperbolic_embedding
from cht.analysis.graph import MaskLike, layered_graph
from cht.analysis.metrics import community_labels, detect_communities
from cht.analysis.power_law import fit_power_law

CAPTIONS: dict[str, str] = {
    "degree_distribution": (
        "Degree distribution of the sparse network (all layers, neurons without links left out) on "
        "log-log axes, with the power law fitted by the Clauset-Shalizi-Newman method (maximum "
        "likelihood, x_min by least Kolmogorov-Smirnov distance) drawn from x_min on. A dashed line "
        "marks a fit that is rejected (too few nodes, or an exponential tail fits better)."),
    "learning_curves": (
        "Test accuracy per epoch, one panel per dataset and one line per method: mean over seeds, "
        "band = one standard deviation across seeds."),
    "aae_bars": (
        "Area across epochs (AAE: mean test accuracy over all epochs of a run, a learning-speed "
        "measure) per method and dataset. Bars: mean over seeds; error bars: one standard deviation "
        "across seeds; dots: single seeds. The accuracy axis is zoomed to the data and does not "
        "start at zero."),
    "anp_over_steps": (
        "Active-neuron proportion (neurons with at least one outgoing link, the last sparse layer's "
        "outputs with at least one incoming link, inputs included) across topology-evolution steps: "
        "mean over seeds, band = one standard deviation across seeds."),
    "anp_over_epochs": (
        "Active-neuron proportion (neurons with at least one link, inputs included) at initialisation "
        "(epoch 0, where the run recorded it) and after the topology update of each epoch, for the "
        "methods whose topology evolves: mean over seeds, band = one standard deviation across seeds. A "
        "line ends when the method's evolution stops (schedule end or early stop)."),
    "degree_initial_final": (
        "Degree distribution of the sparse network (all layers, neurons without links left out) at "
        "initialisation (hollow) and after training (filled), first seed, on log-log axes, each with its "
        "Clauset-Shalizi-Newman power-law fit (dashed: rejected against an exponential tail)."),
    "hyperbolic_embedding": (
        "Coalescent embedding (repulsion-attraction pre-weighting, Laplacian eigenmaps, radii by "
        "degree rank) of the layered network in the hyperbolic disk, before and after training. "
        "Nodes are coloured by neuron layer; ASI is the angular separation index of the layers "
        "(1 = each layer in its own angular sector, 0 = as mixed as random angles). Only the largest "
        "connected component is embedded."),
    "hyperbolic_embedding_methods": (
        "Coalescent hyperbolic embedding of the layered network per method (columns), initial "
        "(top) and trained (bottom) topology; nodes coloured by neuron layer, ASI = angular "
        "separation index of the layers."),
    "layered_communities": (
        "Layered drawing of the sparse network: one column per neuron layer, neurons coloured by "
        "Louvain community (grey: no link) and sorted by community within each layer. Links inside "
        "a community take its colour, links between communities are grey; at most 5000 links, "
        "sampled with a fixed seed, are drawn."),
}

LEARNING_COLUMNS = ("dataset", "method", "seed", "epoch", "test_accuracy")
MAX_DRAWN_LINKS = 5000


@contextmanager
def _style() -> Iterator[None]:
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1):
        yield


def _save(figure: Figure, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.{suffix}" for suffix in ("png", "pdf")]
    for path in paths:
        figure.savefig(path, dpi=200, bbox_inches="tight")
    return paths


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame in long format with columns {list(columns)}, "
                        f"got {type(df).__name__}")
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"df is missing column(s) {missing}; it has {list(df.columns)}. "
                         f"Pass long format with columns {list(columns)}")
    if df.empty:
        raise ValueError("df has no rows: nothing to plot")


#: Line styles of the methods after the palette's first ten colours (solid, dashed, dotted, dash-dot).
METHOD_DASHES = ("", (4, 2), (1, 1.5), (3, 1, 1, 1))
PALETTE_SIZE = 10


def _method_palette(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per method, stable across figures that show the same methods: the colour-blind palette's ten
    colours in turn (methods beyond ten share a colour and differ by :func:`_method_dashes`)."""
    names = sorted(set(methods))
    colours = sns.color_palette("colorblind", PALETTE_SIZE)
    return {name: colours[index % PALETTE_SIZE] for index, name in enumerate(names)}


def _method_dashes(methods: Sequence[str]) -> dict[str, str | tuple[float, ...]]:
    """A line style per method, so that every (colour, style) pair is one method's."""
    names = sorted(set(methods))
    return {name: METHOD_DASHES[(index // PALETTE_SIZE) % len(METHOD_DASHES)] for index, name in enumerate(names)}


def _layer_names(n_layers: int) -> list[str]:
    return ["input"] + [f"layer {index}" for index in range(1, n_layers)]


def _degree_panel(axes: Axes, masks: Sequence[MaskLike], label: str, point_colour: str, fit_colour: str,
                  filled: bool = True) -> None:
    """Degree distribution of ``masks`` (linked neurons) with its CSN power-law fit on log-log ``axes``."""
    degree = layered_graph(masks).degree
    degree = degree[degree > 0]
    if degree.size == 0:
        raise ValueError("masks hold no links: there is no degree distribution to plot")
    values, counts = np.unique(degree, return_counts=True)
    probability = counts / degree.size
    fit = fit_power_law(degree)
    axes.scatter(values, probability, s=14, label=label, zorder=3,
                 **({"color": point_colour} if filled else {"facecolors": "none", "edgecolors": point_colour}))
    if np.isfinite(fit.gamma_mle):
        tail = np.arange(int(fit.xmin), int(values.max()) + 1)
        shape = tail.astype(float) ** -fit.gamma_mle
        line = shape * (fit.n_tail / degree.size) / shape.sum()
        accepted = fit.reason is None
        axes.plot(tail, line, color=fit_colour, linestyle="-" if accepted else "--", linewidth=2,
                  label=(f"power law, γ = {fit.gamma_mle:.2f}" if accepted
                         else f"rejected fit, γ = {fit.gamma_mle:.2f}"))


def plot_degree_distribution(masks: Sequence[MaskLike], stem: str | Path, label: str = "") -> list[Path]:
    """Log-log degree distribution of the whole network with its CSN power-law fit."""
    with _style():
        figure = Figure(figsize=(4.5, 3.6), layout="constrained")
        axes = figure.add_subplot()
        _degree_panel(axes, masks, label or "network", "0.25", "C3")
        axes.set(xscale="log", yscale="log", xlabel="degree k", ylabel="P(k)",
                 title=label or "Degree distribution")
        axes.legend(frameon=False)
        return _save(figure, stem)


def plot_degree_initial_final(initial_masks: Sequence[MaskLike], final_masks: Sequence[MaskLike],
                              stem: str | Path, label: str = "") -> list[Path]:
    """Degree distributions at initialisation (hollow) and after training (filled), each with its fit."""
    with _style():
        figure = Figure(figsize=(4.8, 3.8), layout="constrained")
        axes = figure.add_subplot()
        _degree_panel(axes, initial_masks, "initial", "0.55", "C0", filled=False)
        _degree_panel(axes, final_masks, "trained", "0.15", "C3")
        axes.set(xscale="log", yscale="log", xlabel="degree k", ylabel="P(k)",
                 title=f"{label}: initial vs trained" if label else "Initial vs trained degrees")
        axes.legend(frameon=False, fontsize="small")
        return _save(figure, stem)


def plot_learning_curves(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Test accuracy against epoch: one panel per dataset, one mean line (± sd band) per method."""
    _require_columns(df, LEARNING_COLUMNS)
    datasets = sorted(df["dataset"].unique())
    palette = _method_palette(df["method"])
    with _style():
        figure = Figure(figsize=(4.2 * len(datasets), 3.6), layout="constrained")
        panels = figure.subplots(1, len(datasets), squeeze=False)[0]
        for axes, dataset in zip(panels, datasets):
            sns.lineplot(data=df[df["dataset"] == dataset], x="epoch", y="test_accuracy", hue="method",
                         palette=palette, style="method", dashes=_method_dashes(df["method"]), errorbar="sd",
                         ax=axes, legend=axes is panels[-1])
            axes.set(title=str(dataset), xlabel="epoch", ylabel="test accuracy")
        if len(palette) > 0:
            sns.move_legend(panels[-1], "center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        return _save(figure, stem)


def plot_aae_bars(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Area across epochs per run (mean accuracy over epochs), bars per method with seed spread."""
    _require_columns(df, LEARNING_COLUMNS)
    runs = df.groupby(["dataset", "method", "seed"], as_index=False)["test_accuracy"].mean()
    datasets = sorted(runs["dataset"].unique())
    palette = _method_palette(runs["method"])
    with _style():
        figure = Figure(figsize=(max(3.5, 1.1 * len(palette)) * len(datasets), 3.8), layout="constrained")
        panels = figure.subplots(1, len(datasets), squeeze=False)[0]
        for axes, dataset in zip(panels, datasets):
            _aae_panel(axes, runs[runs["dataset"] == dataset], palette)
            axes.set_title(str(dataset))
        return _save(figure, stem)


def _aae_panel(axes: Axes, runs: pd.DataFrame, palette: Mapping[str, tuple[float, float, float]]) -> None:
    summary = runs.groupby("method")["test_accuracy"].agg(["mean", "std"]).fillna(0.0)
    positions = np.arange(len(summary))
    colours = [palette[method] for method in summary.index]
    axes.bar(positions, summary["mean"], yerr=summary["std"], color=colours, capsize=4, alpha=0.85)
    for position, method in zip(positions, summary.index):
        seeds = runs.loc[runs["method"] == method, "test_accuracy"]
        jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(1)
        axes.scatter(position + jitter, seeds, color="0.15", s=10, zorder=3)
    low = min(runs["test_accuracy"].min(), (summary["mean"] - summary["std"]).min())
    high = max(runs["test_accuracy"].max(), (summary["mean"] + summary["std"]).max())
    margin = max(0.1 * (high - low), 1e-3)
    axes.set_ylim(low - margin, high + margin)
    axes.set_xticks(positions, summary.index, rotation=30, ha="right")
    axes.set_ylabel("AAE (mean test accuracy over epochs)")


def _anp_lines(df: pd.DataFrame, stem: str | Path, x: str, xlabel: str, **line: object) -> list[Path]:
    """Active-neuron proportion against ``x``, one mean line (± sd band) per method."""
    _require_columns(df, ("method", "seed", x, "anp"))
    with _style():
        figure = Figure(figsize=(5.0, 3.6), layout="constrained")
        axes = figure.add_subplot()
        sns.lineplot(data=df, x=x, y="anp", hue="method", palette=_method_palette(df["method"]), style="method",
                     dashes=_method_dashes(df["method"]), errorbar="sd", ax=axes, **line)
        axes.set(xlabel=xlabel, ylabel="active-neuron proportion", ylim=(0, 1.05))
        sns.move_legend(axes, "lower left", frameon=False)
        return _save(figure, stem)


def plot_anp_over_steps(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Active-neuron proportion against evolution step, one mean line (± sd band) per method."""
    return _anp_lines(df, stem, "step", "evolution step")


def plot_anp_over_epochs(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Active-neuron proportion against the epoch of each topology update (epoch 0: initialisation)."""
    return _anp_lines(df, stem, "epoch", "epoch", marker="o", markersize=4, drawstyle="steps-post")


def _embedding_panel(axes: Axes, masks: Sequence[MaskLike], title: str, seed: int) -> None:
    embedding = hyperbolic_embedding(masks, seed=seed)
    shown = embedding.embedded
    n_layers = int(embedding.layer.max()) + 1
    colours = sns.color_palette("viridis", n_layers)
    for layer, name in enumerate(_layer_names(n_layers)):
        chosen = shown & (embedding.layer == layer)
        axes.scatter(embedding.angle[chosen], embedding.radius[chosen], s=4, color=colours[layer],
                     label=name, alpha=0.8, linewidths=0)
    asi = angular_separation_index(embedding.angle, embedding.layer, seed=seed)
    axes.set_title(f"{title}\nASI (layers) = {asi:.2f}")
    axes.set_yticklabels([])
    axes.grid(alpha=0.3)


def _embedding_grid(panels: Sequence[Sequence[tuple[str, Sequence[MaskLike]]]], stem: str | Path,
                    seed: int) -> list[Path]:
    n_rows, n_cols = len(panels), len(panels[0])
    with _style():
        figure = Figure(figsize=(3.6 * n_cols + 1.2, 3.8 * n_rows), layout="constrained")
        for row, entries in enumerate(panels):
            for col, (title, masks) in enumerate(entries):
                axes = figure.add_subplot(n_rows, n_cols, row * n_cols + col + 1, projection="polar")
                _embedding_panel(axes, masks, title, seed)
        handles, labels = figure.axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside right center", frameon=False, markerscale=3)
        return _save(figure, stem)


def plot_hyperbolic_embedding(initial_masks: Sequence[MaskLike], final_masks: Sequence[MaskLike],
                              stem: str | Path, titles: tuple[str, str] = ("Initial", "Trained"),
                              seed: int = 0) -> list[Path]:
    """Initial and trained topology side by side in the hyperbolic disk, nodes coloured by layer."""
    return _embedding_grid([[(titles[0], initial_masks), (titles[1], final_masks)]], stem, seed)


def plot_hyperbolic_embedding_methods(methods: Mapping[str, tuple[Sequence[MaskLike], Sequence[MaskLike]]],
                                      stem: str | Path, seed: int = 0) -> list[Path]:
    """Several methods side by side (e.g. CHT vs SET): ``{name: (initial_masks, final_masks)}``."""
    if not methods:
        raise ValueError("methods is empty: pass {method name: (initial_masks, final_masks)}")
    names = list(methods)
    return _embedding_grid([[(f"{name}, initial", methods[name][0]) for name in names],
                            [(f"{name}, trained", methods[name][1]) for name in names]], stem, seed)


def plot_layered_communities(masks: Sequence[MaskLike], stem: str | Path, seed: int = 0) -> list[Path]:
    """Neurons in layer columns, coloured and sorted by Louvain community."""
    graph = layered_graph(masks)
    linked = np.flatnonzero(graph.degree > 0)
    communities, modularity = detect_communities(
        nx.from_scipy_sparse_array(graph.adjacency[linked][:, linked]), seed=seed)
    # Nodes without links go last and take the extra grey colour.
    community = community_labels(communities, linked, graph.n_nodes)
    community[community < 0] = len(communities)

    height = np.empty(graph.n_nodes)
    for layer, size in enumerate(graph.sizes):
        nodes = np.flatnonzero(graph.layer == layer)
        order = nodes[np.lexsort((nodes, community[nodes]))]
        height[order] = np.linspace(1.0, 0.0, size) if size > 1 else 0.5
    palette = list(sns.color_palette("husl", len(communities))) if communities else []
    colours = np.array(palette + [(0.75, 0.75, 0.75)])

    links = sp.triu(graph.adjacency, k=1).tocoo()
    upper = np.column_stack([links.row, links.col])
    if upper.shape[0] > MAX_DRAWN_LINKS:
        upper = upper[np.random.default_rng(seed).choice(upper.shape[0], MAX_DRAWN_LINKS, replace=False)]
    same = community[upper[:, 0]] == community[upper[:, 1]]
    segments = np.stack([np.column_stack([graph.layer[upper[:, side]], height[upper[:, side]]])
                         for side in (0, 1)], axis=1)
    link_colours = np.where(same[:, None], colours[community[upper[:, 0]]], colours[-1])
    with _style():
        figure = Figure(figsize=(1.6 * len(graph.sizes) + 1.5, 5.0), layout="constrained")
        axes = figure.add_subplot()
        axes.add_collection(LineCollection(segments, colors=link_colours, linewidths=0.3, alpha=0.25))
        axes.scatter(graph.layer, height, c=colours[community], s=6, linewidths=0, zorder=3)
        axes.set_xticks(range(len(graph.sizes)), _layer_names(len(graph.sizes)))
        axes.set(yticks=[], xlim=(-0.4, len(graph.sizes) - 0.6), ylim=(-0.03, 1.03),
                 title=f"{len(communities)} communities, modularity {modularity:.2f}")
        axes.grid(False)
        return _save(figure, stem)
