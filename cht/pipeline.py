"""What the Snakemake workflow derives from its config, as plain functions the tests call directly: the
schema it validates against, the grid of runs, each run's :class:`~cht.config.TrainConfig`, and which runs
evolve their topology. ``workflow/rules/common.smk`` only wires these into Snakemake.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cht.config import GRID_LISTS, RUN_KEY, SETTING_KEY, ConfigError, TrainConfig, parse_wildcard, wildcard_value

#: The pipeline's hand-written schema: the keys that are not TrainConfig's (results_dir, claims, grouping, ...).
SCHEMA_FILE = Path("workflow") / "schemas" / "config.schema.yaml"


def pipeline_schema(base: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (the YAML schema) completed with the keys of :class:`~cht.config.TrainConfig`.

    TrainConfig declares every run setting once: its ``grid`` keys fill ``$defs`` (the items of the grid
    lists: datasets, models, dims, densities, protocols, methods, seeds) and, where the YAML does not
    describe it, the list itself; its ``run`` keys the top-level keys of the same name (the YAML's defaults
    and descriptions win); its ``train`` keys the shared training settings.
    """
    from cht.dst import available_methods

    schema = copy.deepcopy(dict(base))
    for key, value in TrainConfig.json_schema(pipeline="grid")["properties"].items():
        schema["$defs"][key] = value
        schema["properties"].setdefault(GRID_LISTS[key], {
            "type": "array", "minItems": 1, "items": {"$ref": f"#/$defs/{key}"},
            "default": [TrainConfig.__dataclass_fields__[key].default], "description": value["description"]})
    for key, value in TrainConfig.json_schema(pipeline="run")["properties"].items():
        schema["properties"][key] = {**value, **schema["properties"].get(key, {})}
    schema["$defs"]["train_settings"] = TrainConfig.json_schema(pipeline="train")
    schema["properties"][GRID_LISTS["method"]]["default"] = available_methods()
    return schema


def read_pipeline_schema(workflow_dir: Path) -> dict[str, Any]:
    """The completed schema of the workflow in ``workflow_dir`` (the folder holding the Snakefile)."""
    return pipeline_schema(yaml.safe_load((Path(workflow_dir) / SCHEMA_FILE).read_text()))


def grid(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each run-key wildcard's values, as they appear in paths (density 0.01, not 0.010)."""
    return {key: [wildcard_value(value) for value in config[GRID_LISTS[key]]] for key in RUN_KEY}


def grid_runs(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every run of the grid, as its wildcards."""
    values = grid(config)
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def settings(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every combination of a setting's keys (dataset, model, dim, density, protocol): one panel of figures each."""
    values = grid(config)
    return [dict(zip(SETTING_KEY, combination)) for combination in itertools.product(*(values[k] for k in SETTING_KEY))]


def train_settings(config: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The full TrainConfig of one run (its wildcard values given), as a plain dict: the shared ``train``
    settings, the dataset's own (``train_per_dataset``), the run's key and the run-wide keys."""
    return {**config["train"], **config["train_per_dataset"].get(run["dataset"], {}),
            **{key: parse_wildcard(key, str(run[key])) for key in RUN_KEY},
            "data_root": config["data_root"], "data_sources": config["data_sources"],
            "experiment": config["experiment"], "tracking": config["tracking"], "progress": False}


def check_train_settings(config: Mapping[str, Any]) -> None:
    """Build every run's TrainConfig, so that a bad combination stops the pipeline before any job runs."""
    for run in grid_runs(config):
        try:
            TrainConfig.from_dict(train_settings(config, run))
        except ConfigError as error:
            raise ConfigError(f"config train: {error}", error.field) from None


def topology_evolves(config: Mapping[str, Any], run: Mapping[str, Any]) -> bool:
    """Whether the run's method schedules at least one topology update within its training."""
    from cht.data import DATASETS
    from cht.train import configured_method

    train = TrainConfig.from_dict(train_settings(config, run))
    method = configured_method(train)
    if not method.evolves:
        return False
    schedule = method.schedule
    total = train.epochs
    if schedule.unit == "step":
        split_sizes = DATASETS[train.dataset].split_sizes
        if split_sizes is None:  # size known only once the data is there; assume a long enough run
            return True
        samples = min(split_sizes[0], train.max_train_samples or split_sizes[0])
        total *= math.ceil(samples / train.batch_size)
    # Updates fall on multiples of the interval, so the first candidate decides.
    return schedule.is_update(schedule.interval, total)


def grouping_enabled(config: Mapping[str, Any]) -> bool:
    """Whether runs train in groups: ``group_runs`` true, or ``auto`` and the config trains MLPs on CUDA
    (``device: cuda`` in ``train`` or a dataset's settings; grouped training stacks MLPs only).

    Decided from the config alone, never from the hardware where the workflow is read: a cluster's login
    node sees no GPU although its jobs run on one."""
    only_mlps = set(config["models"]) == {"mlp"}
    if config["group_runs"] is True and not only_mlps:
        raise ConfigError(f"group_runs: grouped training stacks MLPs only, but models lists {config['models']}; "
                          "set group_runs to auto or false", "group_runs")
    if config["group_runs"] != "auto":
        return config["group_runs"]
    devices = {settings.get("device", "auto") for settings in [config["train"], *config["train_per_dataset"].values()]}
    return only_mlps and any(device.startswith("cuda") for device in devices)


def group_parts(config: Mapping[str, Any]) -> list[list[tuple[str, int]]]:
    """The (method, seed) members of each part of a setting's group, at most ``group_size`` per part (one part
    without it; a group job whose GPU cannot hold its part stops before training, naming the size that fits)."""
    members = [(method, seed) for method in config["methods"] for seed in config["seeds"]]
    size = config["group_size"] or len(members)
    return [members[start:start + size] for start in range(0, len(members), size)]
