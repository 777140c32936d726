"""Configuration validation and the command line."""

import subprocess
import sys

import pytest

from cht.cli import main
from cht.config import ConfigError, TrainConfig


@pytest.mark.parametrize("field, value", [
    ("density", -0.1), ("density", 1.5), ("epochs", 0), ("batch_size", -3), ("lr", 0.0),
    ("method", "magic"), ("dataset", "imagenet21k"), ("zeta", 2.0), ("update_unit", "hour"),
    ("dim", "two"), ("device", "tpu"),
])
def test_bad_values_name_the_field(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict({field: value})


def test_unknown_key_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean 'density'"):
        TrainConfig.from_dict({"densty": 0.1})


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("method: static\ndensity: 0.05\nepochs: 3\n")
    config = TrainConfig.from_yaml(path, epochs=7)
    assert (config.method, config.density, config.epochs) == ("static", 0.05, 7)
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(path)


def test_identity_ignores_how_a_run_is_observed() -> None:
    base = TrainConfig()
    assert base.identity() == TrainConfig(device="cpu", progress=False, tracking=False).identity()
    assert base.identity() != TrainConfig(seed=1).identity()


@pytest.mark.parametrize("argv, option", [
    (["--density", "2"], "--density"), (["--method", "magic"], "--method"), (["--epochs", "0"], "--epochs"),
    (["--dataset", "svhn"], "--dataset"), (["--lr", "-1"], "--lr"), (["--batch-size", "x"], "--batch-size"),
])
def test_cli_rejects_bad_values_naming_the_option(argv, option, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_cli_rejects_bad_yaml_values_naming_the_key(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("method: set\nzeta: 7\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path)])
    assert exit_info.value.code == 2
    assert "zeta" in capsys.readouterr().err


def test_help_lists_the_subcommands() -> None:
    result = subprocess.run([sys.executable, "-m", "cht", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "methods", "datasets", "prepare-data"):
        assert command in result.stdout


def test_methods_lists_the_registry(capsys) -> None:
    from cht.dst import available_methods

    assert main(["methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == available_methods()
