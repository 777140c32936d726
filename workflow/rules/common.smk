"""Configuration checks, the grid of runs and the paths every rule shares."""

import tempfile
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cht.analysis.figures import CAPTIONS
from cht.analysis.reproduction import published_counterparts
from cht.config import (MEMBER_KEY, RUN_LAYOUT, SETTING_KEY, SETTING_LAYOUT, ConfigError, folder_layout,
                        panel_title, wildcard_patterns)
from cht.dst import CHRegrowth, SoftCHRegrowth, get_method
from cht.pipeline import (check_train_settings, grid, grid_runs, group_parts, grouping_enabled, read_pipeline_schema,
                          settings, topology_evolves, train_settings)
from cht.tracking import config_hash


def validate_config(config: dict) -> None:
    """Validate against the pipeline's schema (cht.pipeline.pipeline_schema), then build every run's TrainConfig."""
    with tempfile.TemporaryDirectory() as folder:
        resolved = Path(folder, "config.schema.yaml")
        resolved.write_text(yaml.safe_dump(read_pipeline_schema(Path(workflow.basedir))))
        validate(config, str(resolved))
    try:
        check_train_settings(config)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


validate_config(config)


RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
# Every wildcard and path below derives from the run key that cht.config declares once.
GRID = grid(config)
# Every key is part of every path, also when the grid holds one value: one layout for every config.
SETTING = SETTING_LAYOUT
RUN = RUN_LAYOUT
# Figures that show every dataset of a setting, one panel each.
ACROSS_DATASETS = folder_layout(key for key in SETTING_KEY if key != "dataset")
# A run's outputs, made by rule train or, when runs are grouped, by the train_group rule of its group.
RUN_MASKS = f"{RESULTS}/runs/{RUN}/masks.pt"
RUN_INITIAL_MASKS = f"{RESULTS}/runs/{RUN}/initial_masks.pt"
RUN_METRICS = f"{RESULTS}/runs/{RUN}/metrics.json"
CONFIG_HASH = config_hash(config)
# Whether some run of the grid has a cell in a published table (then the reproduction rule runs).
HAS_PUBLISHED_COUNTERPART = not published_counterparts(pd.DataFrame(grid_runs(config))).empty

wildcard_constraints:
    **wildcard_patterns(),


def runs(pattern: str, **subset) -> list[str]:
    """``pattern`` expanded over the grid, with some wildcards restricted to ``subset`` (a value or a list)."""
    values = {**GRID, **{key: value if isinstance(value, list) else [value] for key, value in subset.items()}}
    return expand(pattern, **values)


def setting_runs(pattern: str) -> list[str]:
    """``pattern`` expanded over the grid's runs of a setting (methods and seeds), keeping the setting's wildcards."""
    return expand(pattern, **{key: GRID[key] for key in MEMBER_KEY}, allow_missing=True)


try:
    GROUPED = grouping_enabled(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


def group_rule_name(part: int) -> str:
    return "train_group" if part == 0 else f"train_group_{part + 1}"


def member_path(pattern: str, method: str, seed: int) -> str:
    """``pattern`` with a group member's method and seed filled in, the setting's wildcards kept."""
    return pattern.replace("{method}", method).replace("{seed}", str(seed))


def group_settings(members: list[tuple[str, int]]):
    """Params function: the TrainConfig of every member of a group part."""
    return lambda wildcards: [train_settings(config, {**dict(wildcards.items()), "method": method, "seed": seed})
                              for method, seed in members]


def job_params() -> dict:
    """What every job needs to open its child mlflow run."""
    return {"experiment": config["experiment"], "tracking": config["tracking"], "results_dir": RESULTS,
            "config_hash": CONFIG_HASH}


# Figures

FIGURES = f"{RESULTS}/figures"
SPARSE_METHODS = [method for method in config["methods"] if get_method(method).sparse]
PANEL = panel_title(key for key in SETTING_KEY if key != "dataset")
DATASET_PANEL = panel_title(SETTING_KEY)

# Claims: the subject (CHT) against every method of the grid that does not grow links by CH scores.
CLAIMS = config["claims"]
CLAIM_BASELINES = [method for method in config["methods"]
                   if not isinstance(get_method(method).regrowth, (CHRegrowth, SoftCHRegrowth))]
# Network figures of the subject, next to the contrast method where the grid has both.
NETWORK_METHODS = [method for method in (CLAIMS["subject"], CLAIMS["contrast"]) if method in SPARSE_METHODS]


def figure(stem: str, caption: str, panel: str, **labels: str) -> list:
    """A figure's PNG (shown in the report, with its caption) and PDF (for papers)."""
    labels = {"figure": caption.replace("_", " "), "panel": panel, **labels}
    png = report(f"{stem}.png", caption=f"../report/{caption}.rst", category="Figures", subcategory=panel,
                 labels=labels)
    return [png, f"{stem}.pdf"]


def first_seed_masks(wildcards, methods: list[str] | None = None, initial: bool = False) -> dict[str, str]:
    """``masks_<method>`` (final masks) and, with ``initial``, ``initial_masks_<method>`` of the first seed of
    ``methods`` (default: every sparse method) in one setting."""
    files = {}
    for method in SPARSE_METHODS if methods is None else methods:
        run = {**wildcards, "method": method, "seed": config["seeds"][0]}
        files[f"masks_{method}"] = RUN_MASKS.format(**run)
        if initial:
            files[f"initial_masks_{method}"] = RUN_INITIAL_MASKS.format(**run)
    return files


def figure_targets() -> list[str]:
    """Every figure of the configured grid (ANP only where some run's topology evolves)."""
    targets = []
    for setting in settings(config):
        targets += expand(rules.learning_figures.output, **setting)
        if SPARSE_METHODS:
            targets += expand(rules.degree_figures.output, **setting)
            targets += expand(rules.degree_initial_final_figures.output, **setting)
        if NETWORK_METHODS:
            targets += expand(rules.network_figures.output, **setting)
        if any(topology_evolves(config, {**setting, "method": method, "seed": config["seeds"][0]})
               for method in config["methods"]):
            targets += expand(rules.anp_figure.output, **setting)
            targets += expand(rules.anp_epochs_figure.output, **setting)
    return targets
