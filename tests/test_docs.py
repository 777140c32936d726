"""The documentation builds strictly (no broken link, no docstring the API pages cannot render), and its
generated pages follow the code: every key of TrainConfig and every registered method is listed."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from cht.config import TrainConfig
from cht.dst import available_methods, available_protocols

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The documentation built with ``mkdocs build --strict`` into a temporary folder."""
    folder = tmp_path_factory.mktemp("site")
    # The theme and MkDocs' plugins print notices about MkDocs 2 on every build; they are not warnings of ours.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return folder


def page(site: Path, name: str) -> str:
    return html.unescape((site / name / "index.html").read_text(encoding="utf-8"))


def test_the_documentation_builds_strictly(site) -> None:
    for name in ("pipeline", "config-keys", "methods", "tracking", "cluster", "api/sparse", "api/config",
                 "reproductions/neurips2025-table7/fashion_mnist"):
        assert (site / name / "index.html").is_file(), name


def section(text: str, start: str, end: str | None = None) -> str:
    """The part of a page from the heading with id ``start`` to the one with id ``end``."""
    begin = text.index(f'id="{start}"')
    return text[begin:text.index(f'id="{end}"', begin)] if end else text[begin:]


def rows(text: str, names) -> list[str]:
    """The names that have no table row of their own in ``text``."""
    return [name for name in names if f"<td><code>{name}</code></td>" not in text]


def test_the_config_keys_page_lists_every_train_config_key(site) -> None:
    text = page(site, "config-keys")
    missing = rows(section(text, "training-settings"), [key.name for key in fields(TrainConfig)])
    assert not missing, f"config-keys page lacks rows for {missing}"
    pipeline = section(text, "pipeline-config", "training-settings")
    assert not rows(pipeline, ["datasets", "methods", "densities", "seeds", "group_runs", "analysis.path_sources"])


def test_the_methods_page_lists_every_registered_method_and_protocol(site) -> None:
    text = page(site, "methods")
    missing = rows(section(text, "methods", "protocols"), available_methods())
    assert not missing, f"methods page lacks rows for {missing}"
    missing = rows(section(text, "protocols"), available_protocols())
    assert not missing, f"methods page lacks rows for protocols {missing}"


def test_the_api_pages_render_the_docstrings(site) -> None:
    assert "dense_weight" in page(site, "api/sparse")
    assert "run_path" in page(site, "api/config")


def test_the_readme_stays_short_and_keeps_its_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    assert "scripts/test.sh    # set up .venv, then the test suite (extra arguments go to pytest)" in readme
    assert "scripts/run.sh     # set up .venv, then the default reproduction" in readme
    assert readme.count("<!-- reproduction-table -->") == readme.count("<!-- /reproduction-table -->") == 1
