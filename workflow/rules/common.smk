"""Configuration checks, the grid of runs and the paths every rule shares."""

import itertools
import math
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cht.analysis.figures import CAPTIONS
from cht.analysis.reproduction import published_counterparts
from cht.config import RUN_LAYOUT, ConfigError, TrainConfig
from cht.data import DATASETS
from cht.dst import CHRegrowth, SoftCHRegrowth, available_methods, get_method
from cht.grouped import dataset_bytes, max_group_size, model_layer_shapes
from cht.tracking import config_hash
from cht.train import configured_method


def validate_config(config: dict) -> None:
    """Validate against the schema, completed with the keys of :class:`cht.config.TrainConfig`.

    TrainConfig declares every run setting once: its ``grid`` keys fill ``$defs`` (the items of methods,
    datasets, models, dims, densities, seeds), its ``run`` keys the top-level keys of the same name (the
    YAML's defaults and descriptions win), its ``train`` keys the shared training settings.
    """
    schema = yaml.safe_load(Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml").read_text())
    for key, value in TrainConfig.json_schema(pipeline="grid")["properties"].items():
        schema["$defs"][key] = value
    for key, value in TrainConfig.json_schema(pipeline="run")["properties"].items():
        schema["properties"][key] = {**value, **schema["properties"].get(key, {})}
    schema["$defs"]["train_settings"] = TrainConfig.json_schema(pipeline="train")
    schema["properties"]["methods"]["default"] = available_methods()
    with tempfile.TemporaryDirectory() as folder:
        resolved = Path(folder, "config.schema.yaml")
        resolved.write_text(yaml.safe_dump(schema))
        validate(config, str(resolved))


validate_config(config)


RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
GRID = {"dataset": config["datasets"], "model": config["models"], "dim": config["dims"],
        "density": [f"{density:g}" for density in config["densities"]], "protocol": config["protocols"],
        "method": config["methods"], "seed": config["seeds"]}
# The protocol is part of every path, also when the grid runs only one: one layout for every config.
SETTING = "{dataset}/{model}-dim{dim}/density{density}/{protocol}"
RUN = RUN_LAYOUT
# A run's outputs, made by rule train or, when runs are grouped, by the train_group rule of its group.
RUN_MASKS = f"{RESULTS}/runs/{RUN}/masks.pt"
RUN_INITIAL_MASKS = f"{RESULTS}/runs/{RUN}/initial_masks.pt"
RUN_METRICS = f"{RESULTS}/runs/{RUN}/metrics.json"
CONFIG_HASH = config_hash(config)
# Whether some run of the grid has a cell in a published table (then the reproduction rule runs).
HAS_PUBLISHED_COUNTERPART = not published_counterparts(
    pd.DataFrame([dict(zip(GRID, values)) for values in itertools.product(*GRID.values())])).empty

wildcard_constraints:
    dataset="[a-z0-9_]+",
    model="[a-z0-9_]+",
    method="[a-z0-9_]+",
    protocol="[a-z0-9_]+",
    dim=r"\d+",
    density=r"[0-9.e+-]+",
    seed=r"\d+",


def train_settings(run: dict) -> dict:
    """The full :class:`cht.config.TrainConfig` of one run (its wildcard values given), as a plain dict."""
    shared = {**config["train"], **config["train_per_dataset"].get(run["dataset"], {})}
    return {**shared, "method": run["method"], "protocol": run["protocol"], "dataset": run["dataset"],
            "model": run["model"],
            "dim": int(run["dim"]), "density": float(run["density"]), "seed": int(run["seed"]),
            "data_root": config["data_root"],
            "data_sources": config["data_sources"], "experiment": config["experiment"],
            "tracking": config["tracking"], "progress": False}


def check_train_settings() -> None:
    """Build every run's TrainConfig now, so a bad combination stops the pipeline before any job runs."""
    for values in itertools.product(*GRID.values()):
        try:
            TrainConfig.from_dict(train_settings(dict(zip(GRID, values))))
        except ConfigError as error:
            raise WorkflowError(f"config train: {error}") from None


check_train_settings()


def topology_evolves(run: dict) -> bool:
    """Whether the run's method schedules at least one topology update within its training."""
    settings = TrainConfig.from_dict(train_settings(run))
    method = configured_method(settings)
    if not method.evolves:
        return False
    schedule = method.schedule
    total = settings.epochs
    if schedule.unit == "step":
        split_sizes = DATASETS[settings.dataset].split_sizes
        if split_sizes is None:  # size known only once the data is there; assume a long enough run
            return True
        samples = min(split_sizes[0], settings.max_train_samples or split_sizes[0])
        total *= math.ceil(samples / settings.batch_size)
    # Updates fall on multiples of the interval, so the first candidate decides.
    return schedule.is_update(schedule.interval, total)


def runs(pattern: str, **subset) -> list[str]:
    """``pattern`` expanded over the grid, with some wildcards restricted to ``subset`` (a value or a list)."""
    grid = {**GRID, **{key: value if isinstance(value, list) else [value] for key, value in subset.items()}}
    return expand(pattern, **grid)


def setting_runs(pattern: str) -> list[str]:
    """``pattern`` expanded over the grid's methods and seeds, keeping the setting's wildcards."""
    return expand(pattern, method=GRID["method"], seed=GRID["seed"], allow_missing=True)


def settings() -> list[dict]:
    """Every (dataset, model, dim, density, protocol) combination: one panel of figures each."""
    keys = ("dataset", "model", "dim", "density", "protocol")
    return [dict(zip(keys, values)) for values in itertools.product(*(GRID[key] for key in keys))]


def grouping_enabled() -> bool:
    """Whether runs train in groups: ``group_runs`` true, or auto and training MLPs on CUDA (cht.grouped
    stacks MLPs only)."""
    only_mlps = set(config["models"]) == {"mlp"}
    if config["group_runs"] is True and not only_mlps:
        raise WorkflowError(f"group_runs: grouped training stacks MLPs only, but models lists {config['models']}; "
                            "set group_runs to auto or false")
    if config["group_runs"] != "auto":
        return config["group_runs"]
    if not only_mlps:
        return False
    devices = {settings.get("device", "auto")
               for settings in [config["train"], *config["train_per_dataset"].values()]}
    return any(device.startswith("cuda") for device in devices) or ("auto" in devices and torch.cuda.is_available())


def group_parts() -> list[list[tuple[str, int]]]:
    """The (method, seed) members of each part of a setting's group, at most ``group_size`` per part.

    Without ``group_size``, one part holds every method × seed, unless a GPU visible here cannot hold that
    many runs of the largest setting (cht.grouped.group_memory_bytes).
    """
    members = [(method, seed) for method in config["methods"] for seed in config["seeds"]]
    size = config["group_size"] or len(members)
    if not config["group_size"] and torch.cuda.is_available():
        memory = torch.cuda.get_device_properties(0).total_memory
        for setting in settings():
            train = {**config["train"], **config["train_per_dataset"].get(setting["dataset"], {})}
            shapes = model_layer_shapes(setting["model"], setting["dataset"], int(setting["dim"]))
            data = dataset_bytes(setting["dataset"], train.get("max_train_samples"), train.get("max_test_samples"))
            size = min(size, max_group_size(memory, shapes, train.get("batch_size", 32), data))
    return [members[start:start + size] for start in range(0, len(members), size)]


def group_rule_name(part: int) -> str:
    return "train_group" if part == 0 else f"train_group_{part + 1}"


def member_path(pattern: str, method: str, seed: int) -> str:
    """``pattern`` with a group member's method and seed filled in, the setting's wildcards kept."""
    return pattern.replace("{method}", method).replace("{seed}", str(seed))


def group_settings(members: list[tuple[str, int]]):
    """Params function: the TrainConfig of every member of a group part."""
    return lambda wildcards: [train_settings({**dict(wildcards.items()), "method": method, "seed": seed})
                              for method, seed in members]


def job_params() -> dict:
    """What every job needs to open its child mlflow run."""
    return {"experiment": config["experiment"], "tracking": config["tracking"], "results_dir": RESULTS,
            "config_hash": CONFIG_HASH}


# Figures

FIGURES = f"{RESULTS}/figures"
SPARSE_METHODS = [method for method in config["methods"] if get_method(method).sparse]
PANEL = "{model}, dim {dim}, density {density}, {protocol}"
DATASET_PANEL = "{dataset}, {model}, dim {dim}, density {density}, {protocol}"

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
    for setting in settings():
        targets += expand(rules.learning_figures.output, **setting)
        if SPARSE_METHODS:
            targets += expand(rules.degree_figures.output, **setting)
            targets += expand(rules.degree_initial_final_figures.output, **setting)
        if NETWORK_METHODS:
            targets += expand(rules.network_figures.output, **setting)
        if any(topology_evolves({**setting, "method": method, "seed": config["seeds"][0]})
               for method in config["methods"]):
            targets += expand(rules.anp_figure.output, **setting)
            targets += expand(rules.anp_epochs_figure.output, **setting)
    return targets
