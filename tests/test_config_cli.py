"""Configuration validation and the command line."""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

from cht.cli import build_parser, main
from cht.config import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


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
    with pytest.raises(ConfigError, match="unknown config key 'backend'; did you mean 'storage'"):  # renamed
        TrainConfig.from_dict({"backend": "sparse"})


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


# --- one declaration of every key drives TrainConfig, the command line and the pipeline schema ------------------

def out_of_range_values(schema: dict) -> list:
    """Values the key's schema refuses, derived from the schema itself (so a new key is covered at once)."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    bad = []
    if "minimum" in schema:
        bad.append(schema["minimum"] - 1)
    if "exclusiveMinimum" in schema:
        bad.append(schema["exclusiveMinimum"])
    if "maximum" in schema:
        bad.append(schema["maximum"] + 1)
    if "enum" in schema or "pattern" in schema:
        bad.append("no-such-value")
    if "boolean" in kinds:
        bad.append("yes")
    return bad


def key_kinds(key: str) -> list[str]:
    schema = TrainConfig.json_schema()["properties"][key]
    return schema["type"] if isinstance(schema["type"], list) else [schema["type"]]


def every_bad_key_value():
    schema = TrainConfig.json_schema()["properties"]
    return [(key, value) for key, key_schema in schema.items() for value in out_of_range_values(key_schema)]


@pytest.mark.parametrize("key, value", every_bad_key_value())
def test_config_and_cli_refuse_the_same_values(key, value, capsys) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: ") as error:
        TrainConfig.from_dict({key: value})
    assert error.value.field == key
    field = next(f for f in fields(TrainConfig) if f.name == key)
    if isinstance(field.default, bool) or "boolean" in str(key_kinds(key)):
        return  # a switch on the command line takes no value
    flag = field.metadata["flag"] or "--" + key.replace("_", "-")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", flag, str(value), "--no-tracking"])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_every_key_has_a_flag_and_a_place_in_the_pipeline_schema() -> None:
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    destinations = {action.dest for action in train_parser._actions}
    assert {f.name for f in fields(TrainConfig)} <= destinations
    placed = {f.name: f.metadata["pipeline"] for f in fields(TrainConfig)}
    assert set(placed.values()) <= {"train", "grid", "run", None}
    # The pipeline's schema file declares no type or range of its own for these keys: they come from TrainConfig.
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    grid = [key for key, place in placed.items() if place == "grid"]
    assert all(schema["$defs"][key] == {} for key in [*grid, "train_settings"])
    for key in [key for key, place in placed.items() if place == "run"]:
        assert set(schema["properties"][key]) <= {"default", "description"}, key


@pytest.mark.parametrize("argv, yaml_text", [(["--density", "0"], None), ([], "density: 0\n")])
def test_zero_density_is_refused_not_trained(argv, yaml_text, tmp_path, capsys) -> None:
    if yaml_text is not None:
        (tmp_path / "run.yaml").write_text(yaml_text)
        argv = ["--config", str(tmp_path / "run.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, "--no-tracking", "--results-dir", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert "density" in capsys.readouterr().err and not (tmp_path / "results").exists()


# --- errors a user can cause end in a message naming the file or setting, and leave nothing behind ------------

def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def quick(data_root, results) -> list[str]:
    return ["train", "--epochs", "1", "--max-train-samples", "100", "--max-test-samples", "100", "--density",
            "0.05", "--device", "cpu", "--no-progress", "--data-root", str(data_root), "--results-dir", str(results)]


def test_default_output_folder_follows_results_dir_and_names_dim_and_density(fashion_root, tmp_path) -> None:
    assert main([*quick(fashion_root, tmp_path / "mine"), "--no-tracking", "--dim", "1"]) == 0
    assert (tmp_path / "mine/runs/fashion_mnist/mlp-dim1/density0.05/uniform/set/seed0/metrics.json").is_file()


def test_missing_dataset_offline_names_the_flag_and_leaves_no_folder(tmp_path, capsys) -> None:
    code, err = run_cli([*quick(tmp_path / "empty-data", tmp_path / "results"), "--dataset", "mnist",
                         "--no-tracking"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "mnist: could not make" in err and "--data-source DIR" in err
    assert not (tmp_path / "results").exists()


def test_unreachable_tracking_server_stops_before_any_work(tmp_path, monkeypatch, capsys, refusing_url) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refusing_url)
    code, err = run_cli(quick(tmp_path / "data", tmp_path / "results"), capsys)
    assert code == 1 and f"{refusing_url} is unreachable" in err and "refused" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("content", [b"garbage", None])
def test_foreign_or_garbage_checkpoint_is_named(content, fashion_root, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    if content is None:
        torch.save({"weights": torch.ones(3)}, out / "checkpoint.pt")
    else:
        (out / "checkpoint.pt").write_bytes(content)
    code, err = run_cli([*quick(fashion_root, tmp_path / "results"), "--no-tracking", "--out", str(out)], capsys)
    assert code == 1 and "Traceback" not in err and f"{out / 'checkpoint.pt'} is not a" in err
    assert not (out / "metrics.json").exists()


def test_out_pointing_at_a_file_is_named(tmp_path, capsys) -> None:
    (tmp_path / "taken").write_text("x")
    code, err = run_cli([*quick(tmp_path / "data", tmp_path / "results"), "--no-tracking", "--out",
                         str(tmp_path / "taken")], capsys)
    assert code == 1 and f"cannot write {tmp_path / 'taken'}" in err and "--out" in err


@pytest.mark.parametrize("tracking", [True, False])
def test_read_only_results_folder_is_named(tracking, read_only_folder, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = quick(tmp_path / "data", read_only_folder) + ([] if tracking else ["--no-tracking"])
    code, err = run_cli(argv, capsys)
    assert code == 1 and "Traceback" not in err
    assert f"cannot write {read_only_folder}" in err and "--results-dir" in err
    assert not (tmp_path / "data").exists()


def test_full_disk_is_named_and_leaves_no_temporary_file(fashion_root, tiny_disk, tmp_path, capsys) -> None:
    code, err = run_cli([*quick(fashion_root, tmp_path / "results"), "--no-tracking", "--out", str(tiny_disk)],
                        capsys)
    # The first file a run writes (its initial masks) no longer fits.
    assert code == 1 and f"cannot write {tiny_disk / 'initial_masks.pt'}: no space left on device" in err
    assert list(tiny_disk.iterdir()) == []


@pytest.mark.slow
def test_library_and_cli_work_without_the_pipeline_extra(fashion_root, tmp_path) -> None:
    """Without mlflow and snakemake (the `pipeline` extra) the library trains; tracking says what to install."""
    script = f"""
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mlflow", "snakemake"):
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
import cht, cht.tracking, cht.train, cht.results
from cht.cli import main
argv = ["train", "--epochs", "1", "--max-train-samples", "100", "--max-test-samples", "100", "--device", "cpu",
        "--no-progress", "--data-root", {str(fashion_root)!r}, "--results-dir", {str(tmp_path)!r}]
assert main([*argv, "--no-tracking"]) == 0
main(argv)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "tracking needs mlflow" in result.stderr and "cht[pipeline]" in result.stderr
    assert "Traceback" not in result.stderr
