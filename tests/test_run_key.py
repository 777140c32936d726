"""The run key is declared once (the ``grid`` options of TrainConfig): every path, wildcard, table key and run
name derives from it, so adding a grid key is one line. The test adds one to a copy of the code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from cht.config import (GRID_LISTS, MEMBER_KEY, RUN_KEY, RUN_LAYOUT, SETTING_KEY, SETTING_LAYOUT, TrainConfig,
                        describe_run, folder_layout, parse_wildcard, wildcard_patterns, wildcard_value)
from test_pipeline import ROOT, TEST_CONFIG

DUMMY_LINE = ('    width_schedule: str = option("flat", "a dummy grid key", pipeline="grid", '
              'folder="ws-{width_schedule}")\n')


def test_the_run_key_is_the_grid_options_in_folder_order() -> None:
    assert RUN_KEY == tuple(f.name for f in fields(TrainConfig) if f.metadata["pipeline"] == "grid")
    assert RUN_KEY == ("dataset", "model", "dim", "density", "protocol", "method", "seed")
    assert SETTING_KEY + MEMBER_KEY == RUN_KEY and MEMBER_KEY == ("method", "seed")
    assert RUN_LAYOUT == "{dataset}/{model}-dim{dim}/density{density}/{protocol}/{method}/seed{seed}"
    assert SETTING_LAYOUT == "{dataset}/{model}-dim{dim}/density{density}/{protocol}"
    assert folder_layout(["density", "dataset"]) == "{dataset}/density{density}"
    assert GRID_LISTS["density"] == "densities" and GRID_LISTS["seed"] == "seeds"


def test_wildcard_values_round_trip_and_match_their_patterns() -> None:
    import re

    config = TrainConfig(dim=3, density=0.005, seed=12, protocol="released", method="cht")
    patterns = wildcard_patterns()
    for key in RUN_KEY:
        text = wildcard_value(getattr(config, key))
        assert re.fullmatch(patterns[key], text), (key, text)
        assert parse_wildcard(key, text) == getattr(config, key)
    assert config.run_path() == "fashion_mnist/mlp-dim3/density0.005/released/cht/seed12"
    assert describe_run({key: getattr(config, key) for key in RUN_KEY}) == "cht s12 · fashion_mnist mlp d3 0.5% released"


def copy_with_dummy_key(folder: Path) -> Path:
    """The workflow and library, with one line added to TrainConfig: a grid key between density and protocol."""
    for name in ("cht", "workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Snakefile", folder / "Snakefile")
    source = folder / "cht" / "config.py"
    lines = source.read_text().splitlines(keepends=True)
    protocol = next(i for i, line in enumerate(lines) if line.lstrip().startswith("protocol: str = option("))
    source.write_text("".join(lines[:protocol] + [DUMMY_LINE] + lines[protocol:]))
    return folder


@pytest.mark.slow  # two Snakemake dry runs on a copy of the workflow
def test_adding_a_grid_key_is_one_line(tmp_path) -> None:
    copy = copy_with_dummy_key(tmp_path / "copy")
    environment = {**os.environ, "PYTHONPATH": str(copy)}
    probe = subprocess.run([sys.executable, "-c", """
import json
from cht.config import RUN_KEY, SETTING_KEY, RUN_LAYOUT, GRID_LISTS, TrainConfig, training_run_name
from cht.results import run_table
print(json.dumps({"run_key": RUN_KEY, "setting_key": SETTING_KEY, "layout": RUN_LAYOUT, "lists": GRID_LISTS,
                  "path": TrainConfig(width_schedule="steep").run_path(),
                  "name": training_run_name(TrainConfig(width_schedule="steep"))}))
"""], capture_output=True, text=True, env=environment, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    derived = json.loads(probe.stdout)
    assert derived["run_key"] == ["dataset", "model", "dim", "density", "width_schedule", "protocol", "method", "seed"]
    assert "width_schedule" in derived["setting_key"]
    assert derived["layout"] == "{dataset}/{model}-dim{dim}/density{density}/ws-{width_schedule}/{protocol}/{method}/seed{seed}"
    assert derived["lists"]["width_schedule"] == "width_schedules"
    assert derived["path"] == "fashion_mnist/mlp-dim1/density0.01/ws-steep/uniform/set/seed0"
    assert derived["name"] == "set s0 · fashion_mnist mlp d1 1% steep"

    workdir = tmp_path / "work"
    workdir.mkdir()
    dry_run = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(copy / "Snakefile"), "--directory",
                              str(workdir), "--configfile", str(TEST_CONFIG), "--config",
                              "width_schedules=[flat,steep]", "-n"], capture_output=True, text=True, env=environment)
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    output = dry_run.stdout + dry_run.stderr
    for schedule in ("flat", "steep"):
        assert f"results/runs/fashion_mnist/mlp-dim1/density0.01/ws-{schedule}/uniform/set/seed0/metrics.json" in output
        assert f"results/figures/fashion_mnist/mlp-dim1/density0.01/ws-{schedule}/uniform/anp_over_steps.png" in output
        assert f"results/figures/mlp-dim1/density0.01/ws-{schedule}/uniform/learning_curves.png" in output
    assert "width_schedule=steep" in output  # a wildcard of the jobs

    refused = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(copy / "Snakefile"), "--directory",
                              str(workdir), "--configfile", str(TEST_CONFIG), "--config", "width_schedules=[]", "-n"],
                             capture_output=True, text=True, env=environment)
    assert refused.returncode != 0 and "width_schedules" in refused.stdout + refused.stderr
