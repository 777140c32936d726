"""What the workflow derives from its config (cht.pipeline), called directly rather than through Snakemake."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import validate

from cht.config import RUN_KEY, SETTING_KEY, ConfigError, TrainConfig
from cht.dst import available_methods
from cht.pipeline import (SCHEMA_FILE, check_train_settings, grid, grid_runs, group_parts, grouping_enabled,
                          pipeline_schema, read_pipeline_schema, settings, topology_evolves, train_settings)
from test_pipeline import ROOT, TEST_CONFIG


@pytest.fixture
def config(tmp_path) -> dict:
    """The tiny test config with the schema's defaults filled in, as Snakemake hands it to the workflow."""
    values = yaml.safe_load(TEST_CONFIG.read_text())
    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump(read_pipeline_schema(ROOT)))
    validate(values, str(schema))
    return values


def test_the_schema_gains_every_trainconfig_key_and_leaves_its_input_alone() -> None:
    base = yaml.safe_load((ROOT / SCHEMA_FILE).read_text())
    before = copy.deepcopy(base)
    schema = pipeline_schema(base)
    assert base == before
    assert set(RUN_KEY) <= set(schema["$defs"])
    assert schema["$defs"]["density"]["exclusiveMinimum"] == 0
    assert schema["properties"]["densities"]["items"] == {"$ref": "#/$defs/density"}
    assert set(schema["$defs"]["train_settings"]["properties"]) == set(TrainConfig.json_schema("train")["properties"])
    assert {"data_root", "experiment", "tracking"} <= set(schema["properties"])
    assert schema["properties"]["methods"]["default"] == available_methods()


def test_grid_runs_and_settings_span_the_lists(config) -> None:
    config = {**config, "seeds": [0, 1], "densities": [0.01, 0.05]}
    values = grid(config)
    assert values["density"] == ["0.01", "0.05"] and values["seed"] == ["0", "1"]
    runs = grid_runs(config)
    assert len(runs) == len(config["methods"]) * 2 * 2 and all(set(run) == set(RUN_KEY) for run in runs)
    assert [setting["density"] for setting in settings(config)] == ["0.01", "0.05"]
    assert all(set(setting) == set(SETTING_KEY) for setting in settings(config))


def test_train_settings_layer_the_dataset_overrides_and_parse_the_wildcards(config) -> None:
    config = {**config, "train_per_dataset": {"fashion_mnist": {"epochs": 7}}}
    run = {"dataset": "fashion_mnist", "model": "mlp", "dim": "2", "density": "0.05", "protocol": "uniform",
           "method": "set", "seed": "3"}
    built = TrainConfig.from_dict(train_settings(config, run))
    assert (built.epochs, built.dim, built.density, built.seed) == (7, 2, 0.05, 3)
    assert built.batch_size == config["train"]["batch_size"] and built.progress is False


def test_a_bad_combination_stops_before_any_job_naming_the_key(config) -> None:
    config = {**config, "train": {**config["train"], "augment": True}}
    with pytest.raises(ConfigError, match="config train: augment: fashion_mnist defines no augmentation"):
        check_train_settings(config)


def test_topology_evolves_only_where_an_update_falls_within_training(config) -> None:
    run = {"dataset": "fashion_mnist", "model": "mlp", "dim": "1", "density": "0.01", "protocol": "uniform",
           "seed": "0"}
    assert topology_evolves(config, {**run, "method": "set"})
    assert not topology_evolves(config, {**run, "method": "static"})
    assert not topology_evolves(config, {**run, "method": "fc"})
    one_epoch = {**config, "train": {**config["train"], "epochs": 1}}
    assert not topology_evolves(one_epoch, {**run, "method": "set"})  # updates come between epochs


def test_grouping_follows_the_config_alone(config, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU where the workflow is read plays no part
    assert grouping_enabled({**config, "group_runs": True})
    assert not grouping_enabled({**config, "group_runs": False, "train": {**config["train"], "device": "cuda"}})
    automatic = {**config, "group_runs": "auto"}
    assert not grouping_enabled({**automatic, "train": {**config["train"], "device": "auto"}})
    assert not grouping_enabled({**automatic, "train": {**config["train"], "device": "cpu"}})
    assert grouping_enabled({**automatic, "train": {**config["train"], "device": "cuda:1"}})
    assert grouping_enabled({**automatic, "train_per_dataset": {"mnist": {"device": "cuda"}}})
    on_cuda = {**config["train"], "device": "cuda"}
    assert not grouping_enabled({**automatic, "models": ["mlp", "vgg16"], "train": on_cuda})
    with pytest.raises(ConfigError, match="group_runs: grouped training stacks MLPs only"):
        grouping_enabled({**config, "group_runs": True, "models": ["vgg16"]})

    config = {**config, "methods": ["set", "static", "fc"], "seeds": [0, 1]}
    assert group_parts({**config, "group_size": 4}) == [
        [("set", 0), ("set", 1), ("static", 0), ("static", 1)], [("fc", 0), ("fc", 1)]]
    assert group_parts({**config, "group_size": None}) == [[(m, s) for m in ("set", "static", "fc") for s in (0, 1)]]
