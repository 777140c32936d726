"""Published numbers beside reproduced ones.

A published table is data (``cht/analysis/published/*.csv``: one row per cell with its dataset, model,
width, density, the method as the paper names it and as the registry does, mean and standard error in
per cent, ANP as a fraction, the number of seeds and the source). :func:`reproduction_table` matches those
cells with a grid's runs (``runs.csv`` of :func:`cht.results.run_table`) and gives, per cell and protocol:

* the published and reproduced mean ± SE (SE = sample standard deviation / √n) with their n;
* Δ = reproduced − published, in accuracy points;
* a verdict: *agrees* when ``|Δ| ≤ 2 · sqrt(SE_pub² + SE_rep²)``, else *above* or *below*. With a single
  reproduced seed SE_rep is unknown and taken as 0 (the ``note`` column says so): the test is then
  stricter than with three seeds;
* ANP published and reproduced, side by side.

:func:`rank_agreement` gives, per published table, dataset and protocol, Kendall's τ between the
published and the reproduced orderings of the methods (``scipy.stats.kendalltau``, τ-b, which handles ties).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

PUBLISHED_DIR = Path(__file__).parent / "published"
#: What a published cell names of a run: its key less protocol, method and seed (the papers run one protocol).
SETTING = ("dataset", "model", "dim", "density")
PUBLISHED_COLUMNS = ("table", *SETTING, "published_method", "method", "mean", "se", "anp", "n", "source")
AGREES, ABOVE, BELOW = "agrees", "above", "below"
#: The accuracy compared: the last epoch's test accuracy (the papers do not say final or best; ASSUMPTION).
METRIC = "final_test_accuracy"
COLUMNS = ["table", *SETTING, "protocol", "published_method", "method", "published_mean", "published_se",
           "published_n", "reproduced_mean", "reproduced_se", "reproduced_n", "delta", "tolerance", "verdict",
           "published_anp", "reproduced_anp", "note", "source"]
RANK_COLUMNS = ["table", *SETTING, "protocol", "methods", "kendall_tau", "p_value"]


class PublishedTableError(ValueError):
    """A published-table file is malformed; the message names the file and the fault."""


def published_results(paths: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """Every published cell of ``paths`` (default: all files in :data:`PUBLISHED_DIR`), checked."""
    paths = sorted(PUBLISHED_DIR.glob("*.csv")) if paths is None else [Path(path) for path in paths]
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = [column for column in PUBLISHED_COLUMNS if column not in frame.columns]
        if missing:
            raise PublishedTableError(f"{path}: lacks column(s) {missing}; expected {list(PUBLISHED_COLUMNS)}")
        bad = frame[frame["mean"].isna() | frame["se"].isna() | (frame["se"] < 0) | (frame["n"] < 1)]
        if not bad.empty:
            row = bad.index[0] + 2
            raise PublishedTableError(f"{path}: line {row} needs a mean, a standard error ≥ 0 and n ≥ 1")
        duplicated = frame.duplicated(["table", *SETTING, "method"])
        if duplicated.any():
            row = frame.index[duplicated][0] + 2
            raise PublishedTableError(f"{path}: line {row} repeats a cell (table, setting and method)")
        frames.append(frame.assign(file=path.name))
    if not frames:
        return pd.DataFrame(columns=[*PUBLISHED_COLUMNS, "file"])
    return pd.concat(frames, ignore_index=True)


def _setting_key(frame: pd.DataFrame) -> pd.Series:
    """A comparable key of (dataset, model, dim, density), with density as %g text (0.01 == 0.010)."""
    return (frame["dataset"].astype(str) + "|" + frame["model"].astype(str) + "|"
            + frame["dim"].astype(int).astype(str) + "|" + frame["density"].map(lambda value: f"{float(value):g}"))


def published_counterparts(settings: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """The published cells whose setting and method some row of ``settings`` names (the grid's runs)."""
    published = published_results() if published is None else published
    if published.empty or settings.empty:
        return published.iloc[0:0]
    wanted = set(_setting_key(settings) + "|" + settings["method"].astype(str))
    return published[(_setting_key(published) + "|" + published["method"].astype(str)).isin(wanted)]


def standard_error(values: pd.Series) -> float:
    """Sample standard deviation over √n (NaN for fewer than two values)."""
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def verdict(delta: float, tolerance: float) -> str:
    """*agrees* within ``tolerance`` (up to the rounding of per-cent conversions), else the side the
    reproduction lies on."""
    if abs(delta) <= tolerance + 1e-9:
        return AGREES
    return ABOVE if delta > 0 else BELOW


def reproduction_table(runs: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per published cell the grid ran, per protocol (see the module docstring for the columns)."""
    published = published_results() if published is None else published
    missing = [key for key in (*SETTING, "protocol", "method", "seed", METRIC) if key not in runs.columns]
    if missing:
        raise ValueError(f"runs lacks column(s) {missing}: pass the runs table of cht.results.run_table")
    runs = runs.assign(setting_key=_setting_key(runs))
    published = published.assign(setting_key=_setting_key(published))
    rows = []
    for cell in published.itertuples(index=False):
        matching = runs[(runs["setting_key"] == cell.setting_key) & (runs["method"] == cell.method)]
        for protocol, group in matching.groupby("protocol", sort=True):
            accuracy = group[METRIC].astype(float) * 100
            reproduced_mean, reproduced_se = float(accuracy.mean()), standard_error(accuracy)
            known_se = 0.0 if math.isnan(reproduced_se) else reproduced_se
            delta = reproduced_mean - cell.mean
            tolerance = 2 * math.sqrt(cell.se ** 2 + known_se ** 2)
            anp = group["final_anp"].astype(float).mean() if "final_anp" in group else math.nan
            rows.append({
                "table": cell.table, "dataset": cell.dataset, "model": cell.model, "dim": int(cell.dim),
                "density": float(cell.density), "protocol": protocol, "published_method": cell.published_method,
                "method": cell.method, "published_mean": float(cell.mean), "published_se": float(cell.se),
                "published_n": int(cell.n), "reproduced_mean": reproduced_mean, "reproduced_se": reproduced_se,
                "reproduced_n": int(accuracy.notna().sum()), "delta": delta, "tolerance": tolerance,
                "verdict": verdict(delta, tolerance), "published_anp": cell.anp,
                "reproduced_anp": anp if cell.method != "fc" else math.nan,
                "note": "" if len(accuracy) > 1 else "one seed: SE of the reproduction unknown, taken as 0",
                "source": cell.source})
    return pd.DataFrame(rows, columns=COLUMNS)


def rank_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall's τ-b between published and reproduced means over the methods of each table, dataset and
    protocol (NaN with fewer than two methods)."""
    keys = ["table", *SETTING, "protocol"]
    rows = []
    for values, group in table.groupby(keys, sort=True):
        if len(group) > 1:
            result = stats.kendalltau(group["published_mean"], group["reproduced_mean"])
            tau, p_value = float(result.statistic), float(result.pvalue)
        else:
            tau = p_value = math.nan
        rows.append({**dict(zip(keys, values)), "methods": len(group), "kendall_tau": tau, "p_value": p_value})
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def _mean_se(mean: float, se: float, n: int) -> str:
    return f"{mean:.2f} ± {se:.2f} (n={n})" if not math.isnan(se) else f"{mean:.2f} (n={n})"


def _percent(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.0f}%"


def format_reproduction(table: pd.DataFrame) -> pd.DataFrame:
    """Readable text of :func:`reproduction_table`: one line per cell."""
    rows = [{"table": str(row.table), "dataset": row.dataset, "setting": f"{row.model}-dim{row.dim} d={row.density:g}",
             "protocol": row.protocol, "method": f"{row.published_method} ({row.method})",
             "published": _mean_se(row.published_mean, row.published_se, row.published_n),
             "reproduced": _mean_se(row.reproduced_mean, row.reproduced_se, row.reproduced_n),
             "Δ": f"{row.delta:+.2f}", "±2·SE": f"{row.tolerance:.2f}", "verdict": f"**{row.verdict}**",
             "ANP published": _percent(row.published_anp), "ANP reproduced": _percent(row.reproduced_anp)}
            for row in table.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["table", "dataset", "setting", "protocol", "method", "published", "reproduced",
                                       "Δ", "±2·SE", "verdict", "ANP published", "ANP reproduced"])


def _rank_lines(ranks: pd.DataFrame) -> list[str]:
    return [f"Table {row.table}, {row.dataset} ({row.protocol}): Kendall τ = "
            + ("– (one method)" if math.isnan(row.kendall_tau) else f"{row.kendall_tau:.2f} (p = {row.p_value:.2g})")
            + f" over {row.methods} methods" for row in ranks.itertuples(index=False)]


def _markdown(frame: pd.DataFrame) -> str:
    """A table as Markdown text, numbers as already formatted (no re-parsing of '90.10' into 90.1)."""
    return frame.to_markdown(index=False, disable_numparse=True)


def write_reproduction(table: pd.DataFrame, ranks: pd.DataFrame, stem: str | Path) -> list[Path]:
    """``stem.csv`` (numbers, one row per cell; rank correlations in ``stem_ranks.csv``), ``stem.md`` and
    ``stem.html`` (text with the verdict counts and τ)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{suffix}") for suffix in ("csv", "md", "html")]
    table.to_csv(paths[0], index=False)
    ranks.to_csv(stem.with_name(f"{stem.name}_ranks.csv"), index=False)
    if table.empty:
        message = "No published counterpart: no run of the grid matches a cell of a published table."
        paths[1].write_text(message + "\n")
        paths[2].write_text(f"<p>{message}</p>\n")
        return paths
    counts = table["verdict"].value_counts()
    summary = (f"Cells compared: {len(table)} ({counts.get(AGREES, 0)} agree, {counts.get(ABOVE, 0)} above, "
               f"{counts.get(BELOW, 0)} below). Agreement: |Δ| ≤ 2·sqrt(SE_pub² + SE_rep²); accuracy is the "
               "final epoch's test accuracy (%).")
    text = format_reproduction(table)
    lines = _rank_lines(ranks)
    paths[1].write_text(summary + "\n\n" + _markdown(text) + "\n\n"
                        + "".join(f"- {line}\n" for line in lines))
    paths[2].write_text(f"<p>{summary}</p>\n" + text.to_html(index=False, border=0, justify="left").replace("**", "")
                        + "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>\n")
    return paths


def reproduction_figure(table: pd.DataFrame, path: str | Path) -> None:
    """Published against reproduced mean ± SE, one panel per (table, dataset, protocol), methods in the
    published order; written as PNG or PDF by the suffix of ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(table.groupby(["table", "dataset", "protocol"], sort=False)) if not table.empty else []
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.8), squeeze=False)
    for axis, ((number, dataset, protocol), group) in zip(axes[0], panels):
        x = np.arange(len(group))
        axis.errorbar(x - 0.12, group["published_mean"], yerr=group["published_se"], fmt="o", color="0.35",
                      capsize=3, label="published")
        reproduced_se = group["reproduced_se"].fillna(0.0)
        axis.errorbar(x + 0.12, group["reproduced_mean"], yerr=reproduced_se, fmt="s", color="tab:blue",
                      capsize=3, label="reproduced")
        for position, row in zip(x, group.itertuples(index=False)):
            if row.verdict != AGREES:
                axis.annotate(row.verdict, (position + 0.12, row.reproduced_mean), textcoords="offset points",
                              xytext=(4, 4), fontsize=7, color="tab:red")
        axis.set_xticks(x, group["published_method"], rotation=60, ha="right", fontsize=8)
        axis.set_title(f"Table {number}: {dataset} ({protocol})", fontsize=10)
        axis.set_ylabel("test accuracy (%), mean ± SE")
        axis.grid(axis="y", alpha=0.3)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no published counterpart", ha="center", va="center")
        axes[0][0].set_axis_off()
    else:
        axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    undated = {"CreationDate": None} if Path(path).suffix == ".pdf" else None  # the same runs, the same bytes
    figure.savefig(path, dpi=150, metadata=undated)
    plt.close(figure)


def collect_runs(runs_dirs: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                 path_sources: int | None = 256, seed: int = 0) -> list[Path]:
    """Copy every finished run's ``metrics.json`` and ``topology.json`` below each of ``runs_dirs`` to the same
    place below ``out_dir/runs`` (checkpoints and masks stay behind). ``out_dir/runs`` may itself be one of the
    folders, so that new runs join the ones already collected; a run found in two folders with different
    results is refused. A run whose topology the pipeline has not analysed yet (its setting is unfinished) is
    analysed here from its ``masks.pt``, as the ``analyze_topology`` rule does (``path_sources`` and ``seed`` as
    its ``analysis`` settings); the pipeline's own folder is left as it is. Returns the collected
    ``metrics.json`` paths."""
    import json
    import shutil

    from cht.analysis.metrics import run_topology
    from cht.io import write_text_atomic

    runs_dirs = [Path(runs_dirs)] if isinstance(runs_dirs, (str, Path)) else [Path(path) for path in runs_dirs]
    out_dir = Path(out_dir)
    sources: dict[Path, Path] = {}
    for runs_dir in runs_dirs:
        for metrics in sorted(runs_dir.rglob("metrics.json")):
            target = out_dir / "runs" / metrics.parent.relative_to(runs_dir) / "metrics.json"
            if target in sources and sources[target].read_bytes() != metrics.read_bytes():
                raise ValueError(f"the run {metrics.parent.relative_to(runs_dir)} differs between "
                                 f"{sources[target].parent} and {metrics.parent}; keep one of them")
            sources.setdefault(target, metrics)  # a run collected before and still in the pipeline's folder
    for target, metrics in sources.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.resolve() == metrics.resolve():
            continue  # already collected
        shutil.copyfile(metrics, target)
        topology = metrics.parent / "topology.json"
        if topology.exists():
            shutil.copyfile(topology, target.with_name("topology.json"))
        elif (metrics.parent / "masks.pt").exists():
            values = run_topology(metrics.parent / "masks.pt", seed=seed, path_sources=path_sources)
            write_text_atomic(target.with_name("topology.json"), json.dumps(values, indent=2))
    return sorted(sources)


def _joined(values: pd.Series, form: str) -> str:
    return ", ".join("–" if pd.isna(value) else form.format(value) for value in values)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(math.nan, frame.index)


def run_listing(runs: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """One line per method (in the order of ``methods``) and setting: the seeds finished and, seed by seed,
    the final test accuracy, the ANP and the train time; what a reader checks a mean ± SE against."""
    keys = [*SETTING, "protocol"]
    several = len(runs[keys].drop_duplicates()) > 1
    rank = {name: position for position, name in enumerate(methods)}
    runs = runs.assign(rank=runs["method"].map(rank).fillna(len(rank)))
    rows = []
    for (*setting, _, method), group in runs.groupby([*keys, "rank", "method"], sort=True):
        group = group.sort_values("seed")
        values = dict(zip(keys, setting))
        label = {"setting": f"{values['dataset']} {values['model']}-dim{values['dim']} d={values['density']:g} "
                            f"({values['protocol']})"} if several else {}
        anp = _column(group, "final_anp").where(group["links"].notna())  # a dense run's ANP is not a finding
        rows.append({**label, "method": method, "seeds finished": _joined(group["seed"], "{:.0f}"),
                     "final accuracy per seed (%)": _joined(group[METRIC] * 100, "{:.2f}"),
                     "ANP per seed": _joined(anp * 100, "{:.1f}%"),
                     "train time per run (min)": _joined(_column(group, "train_time_s") / 60, "{:.0f}")})
    return pd.DataFrame(rows)


#: The share of training after which a diagnostic's best accuracy is reported beside its final one (the
#: topology is fixed from 75% of training on in the table's sparse methods, so the two should differ little).
LATE_FRACTION = 0.75


def diagnostic_listing(diagnostics_dir: str | Path) -> pd.DataFrame:
    """One line per run below ``diagnostics_dir/<diagnostic>/seed<s>/metrics.json``: runs outside the grid
    that test one explanation of a disagreement, each named by its folder."""
    from cht.results import read_json

    rows = []
    for path in sorted(Path(diagnostics_dir).glob("*/seed*/metrics.json")):
        metrics = read_json(path)
        accuracy = metrics.get("test_accuracy") or []
        late = accuracy[int(LATE_FRACTION * len(accuracy)):]
        anp = metrics.get("final_anp")
        rows.append({"diagnostic": path.parent.parent.name, "method": metrics.get("method", "?"),
                     "seed": metrics.get("seed", "?"),
                     "final accuracy (%)": f"{100 * metrics[METRIC]:.2f}" if METRIC in metrics else "–",
                     f"best after {LATE_FRACTION:.0%} (%)": f"{100 * max(late):.2f}" if late else "–",
                     "ANP": "–" if anp is None else f"{100 * anp:.1f}%",
                     "updates": len(metrics.get("evolution") or []),
                     "train time (s)": f"{metrics['train_time_s']:.0f}" if "train_time_s" in metrics else "–"})
    return pd.DataFrame(rows)


def fill_readme(path: str | Path, blocks: dict[str, str]) -> list[str]:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in ``path`` with ``blocks[name]``, for
    each name whose markers the file holds; the rest of the file is kept. Returns the names filled."""
    from cht.io import write_text_atomic

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    filled = _blocks_in(text, path, blocks)
    for name in filled:
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        head, rest = text.split(start)
        text = f"{head}{start}\n{blocks[name].strip()}\n{end}{rest.split(end)[1]}"
    write_text_atomic(path, text)
    return filled


def readme_blocks(path: str | Path, names: Iterable[str]) -> list[str]:
    """The names of ``names`` whose block ``path`` holds; a malformed block, or none at all, is refused."""
    return _blocks_in(Path(path).read_text(encoding="utf-8"), path, names)


def _blocks_in(text: str, path: str | Path, names: Iterable[str]) -> list[str]:
    names = list(names)
    found = []
    for name in names:
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        counts = (text.count(start), text.count(end))
        if counts == (0, 0):
            continue
        if counts != (1, 1) or text.index(start) > text.index(end):
            raise ValueError(f"{path}: needs one {start} followed by one {end}, found {counts[0]} and {counts[1]}")
        found.append(name)
    if not found:
        markers = " or ".join(f"<!-- {name} --> … <!-- /{name} -->" for name in names)
        raise ValueError(f"{path} holds no block to fill; add {markers} where the results belong")
    return found


def results_section(out_dir: str | Path, readme: str | Path) -> str:
    """The results of a folder that :func:`compare_folder` wrote, as Markdown for ``readme``: the comparison,
    the figure (linked relative to ``readme``), the runs seed by seed and the diagnostic runs if any."""
    out_dir = Path(out_dir)
    figure = Path(os.path.relpath((out_dir / "figures" / "reproduction.png").resolve(), Path(readme).resolve().parent))
    parts = ["## Results", (out_dir / "tables" / "reproduction.md").read_text(encoding="utf-8").strip(),
             f"![published against reproduced]({figure.as_posix()})",
             "### Runs", (out_dir / "tables" / "runs.md").read_text(encoding="utf-8").strip()]
    diagnostics = out_dir / "tables" / "diagnostics.md"
    if diagnostics.exists():
        parts += ["### Diagnostic runs (outside the grid)", diagnostics.read_text(encoding="utf-8").strip()]
    return "\n\n".join(parts)


#: The README blocks :func:`compare_folder` fills: the whole results section, or the comparison table alone.
RESULTS_BLOCK, TABLE_BLOCK = "results", "reproduction-table"


def compare_folder(runs_dirs: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                   path_sources: int | None = 256, seed: int = 0,
                   readmes: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The published comparison of whatever runs below ``runs_dirs`` have finished, self-contained in
    ``out_dir``: ``runs/`` (see :func:`collect_runs`), ``tables/`` (runs, summary, reproduction, the runs seed by
    seed and the runs below ``out_dir/diagnostics``) and ``figures/``. Each of ``readmes`` gets its
    ``results`` block (the whole section) or its ``reproduction-table`` block (the table) rewritten."""
    from cht.results import PERFORMANCE_COLUMNS, TOPOLOGY_COLUMNS, run_table, summarise, write_tables

    out_dir = Path(out_dir)
    for readme in readmes:  # refuse a README without a block before anything is written
        readme_blocks(readme, (RESULTS_BLOCK, TABLE_BLOCK))
    metrics = collect_runs(runs_dirs, out_dir, path_sources=path_sources, seed=seed)
    if not metrics:
        raise FileNotFoundError(f"{runs_dirs}: no finished run (metrics.json) below it")
    topology = [path.with_name("topology.json") for path in metrics]
    runs = run_table(metrics, topology if all(path.exists() for path in topology) else None)
    tables = out_dir / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    runs.to_csv(tables / "runs.csv", index=False)
    published = published_results()
    order = [*published["method"].drop_duplicates(), *sorted(set(runs["method"]) - set(published["method"]))]
    methods = [name for name in order if name in set(runs["method"])]
    for stem, columns in (("summary", PERFORMANCE_COLUMNS), ("topology", TOPOLOGY_COLUMNS)):
        present = {name: column for name, column in columns.items() if name in runs.columns}
        write_tables(summarise(runs, present, methods), present, tables / stem)
    (tables / "runs.md").write_text(_markdown(run_listing(runs, methods)) + "\n", encoding="utf-8")
    diagnostics = diagnostic_listing(out_dir / "diagnostics")
    if not diagnostics.empty:
        (tables / "diagnostics.md").write_text(_markdown(diagnostics) + "\n", encoding="utf-8")
    else:
        (tables / "diagnostics.md").unlink(missing_ok=True)
    table = reproduction_table(runs, published)
    write_reproduction(table, rank_agreement(table), tables / "reproduction")
    for suffix in ("png", "pdf"):
        reproduction_figure(table, out_dir / "figures" / f"reproduction.{suffix}")
    comparison = (tables / "reproduction.md").read_text(encoding="utf-8")
    for readme in readmes:
        fill_readme(readme, {RESULTS_BLOCK: results_section(out_dir, readme), TABLE_BLOCK: comparison})
    return table
