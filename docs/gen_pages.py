"""Pages generated at build time (mkdocs-gen-files) from the code, so that they cannot go stale.

* ``config-keys.md``: the pipeline's keys (``workflow/schemas/config.schema.yaml``, completed with the keys
  of :class:`cht.config.TrainConfig` by :func:`cht.pipeline.pipeline_schema`, as the workflow does) and every
  ``TrainConfig`` key with its type, default, allowed values and command-line flag;
* ``methods.md``: the method registry (:func:`cht.dst.available_methods`, :func:`cht.dst.get_method`) and the
  protocols (:mod:`cht.dst.protocols`);
* ``cli.md``: the ``--help`` of every ``python -m cht`` command;
* ``reproductions/<folder>/index.md``: a copy of each ``reproductions/**/README.md`` with the images it shows.

A hand-written page holds the prose and a marker line (``<!-- generated: NAME -->``) that is replaced here.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import os
import re
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import mkdocs_gen_files

from cht.cli import build_parser
from cht.config import TrainConfig, describe, key_schema
from cht.pipeline import read_pipeline_schema
from cht.dst import available_methods, available_protocols, get_method
from cht.dst.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parent.parent


def cell(text: Any) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def code(text: Any) -> str:
    return f"`{text}`" if text not in (None, "") else "—"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fill(page: str, parts: dict[str, str]) -> None:
    """Replace each ``<!-- generated: NAME -->`` line of ``page`` with ``parts[NAME]``."""
    with mkdocs_gen_files.open(page, "r") as handle:
        text = handle.read()
    for name, content in parts.items():
        marker = f"<!-- generated: {name} -->"
        if marker not in text:
            raise ValueError(f"docs/{page} lacks the line {marker}")
        text = text.replace(marker, content.rstrip("\n"))
    with mkdocs_gen_files.open(page, "w") as handle:
        handle.write(text)


# ----- config keys ------------------------------------------------------------------------------------

def allowed(schema: dict[str, Any]) -> str:
    """What a key's schema allows, without its description (:func:`cht.config.describe`'s words)."""
    return describe({**schema, "description": ""}).removesuffix(": ")


def flag(key: Field) -> str:
    """The key's ``python -m cht train`` flag, as :mod:`cht.cli` declares it."""
    name = key.metadata["flag"] or "--" + key.name.replace("_", "-")
    kind = key_schema(key)["type"]
    if kind == ["boolean", "null"]:
        return f"`{name}`, `--no-{name[2:]}`"
    if kind == "boolean":
        return f"`--no-{name[2:]}`" if key.default is True else f"`{name}`"
    return f"`{name}`"


def literal(value: Any) -> str:
    """A value as it is written in a YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    return str(value)


def default(key: Field) -> str:
    value = key.default_factory() if key.default_factory is not MISSING else key.default
    return "automatic" if value is None else code(literal(value))


def pipeline_rows(schema: dict[str, Any]) -> list[list[str]]:
    rows = []
    required = set(schema.get("required", []))

    def add(name: str, spec: dict[str, Any]) -> None:
        if spec.get("properties") and spec.get("type") == "object":
            for sub, sub_spec in spec["properties"].items():
                add(f"{name}.{sub}", sub_spec)
            return
        item = spec.get("items", {})
        ref = (item.get("$ref") or spec.get("$ref") or spec.get("propertyNames", {}).get("$ref") or "")
        ref = ref.rsplit("/", 1)[-1]
        if name in ("train", "train_per_dataset"):
            what = "training settings: the keys marked *train* below" if name == "train" else \
                "dataset name → training settings (the keys marked *train* below)"
        elif ref:
            target = schema["$defs"][ref]
            what = f"list of: {allowed(target)}" if spec.get("type") == "array" else allowed(target)
        elif "type" in spec or "enum" in spec:
            what = allowed({"type": spec.get("type", "string"), **spec}) if "type" in spec else \
                f"one of {spec['enum']}"
        else:
            what = "—"
        if name in required:
            fallback = "required"
        elif name == "methods" and spec.get("default") == available_methods():
            fallback = "every registered method"
        elif "default" in spec:
            fallback = code(literal(spec["default"]))
        else:
            fallback = "—"
        description = spec.get("description") or (schema["$defs"].get(ref, {}).get("description", "") if ref else "")
        rows.append([f"`{name}`", cell(what), fallback, cell(description)])

    for name, spec in schema["properties"].items():
        add(name, spec)
    return rows


def config_keys() -> dict[str, str]:
    schema = read_pipeline_schema(ROOT)
    pipeline = table(["key", "allowed", "default", "description"], pipeline_rows(schema))
    places = {"train": "*train*", "grid": "*grid*", "run": "*run*", None: "—"}
    rows = []
    for key in fields(TrainConfig):
        schema_of_key = key_schema(key)
        note = " Observation only: a resumed run may change it." if key.metadata["observation"] else ""
        rows.append([f"`{key.name}`", cell(allowed(schema_of_key)), default(key), flag(key),
                     places[key.metadata["pipeline"]], cell(key.metadata["help"] + "." + note)])
    train = table(["key", "allowed", "default", "flag", "pipeline", "description"], rows)
    return {"pipeline-keys": pipeline, "train-keys": train,
            "train-key-count": f"{len(rows)} keys"}


# ----- methods and protocols --------------------------------------------------------------------------

def describe_rule(rule: Any) -> str:
    return code(rule) if rule is not None else "—"


def schedule(method) -> str:
    s = method.schedule
    if not method.evolves:
        return "—"
    return cell(f"every {s.interval} {s.unit}, ζ {s.zeta:g} ({s.zeta_decay}), until {s.end_fraction:g}")


def methods() -> dict[str, str]:
    names = available_methods()
    summary = table(["method", "description"], [[f"`{n}`", cell(get_method(n).description)] for n in names])
    rows = []
    for n in names:
        m = get_method(n)
        start = "dense" if not m.sparse else f"{m.topology_init} / {m.weight_init} / {m.bias_init}"
        rows.append([f"`{n}`", cell(start), describe_rule(m.removal), describe_rule(m.regrowth), schedule(m),
                     code(m.density) if m.sparse else "—", "yes" if m.percolation else "—",
                     code(m.early_stop) if m.early_stop else "—", "yes" if m.needs_dense_grad else "—"])
    composition = table(["method", "topology / weights / biases", "removal", "regrowth", "evolution", "density",
                         "percolation", "early stop", "dense gradient"], rows)
    protocol_rows = [[f"`{p}`", cell(PROTOCOLS[p].description)] for p in available_protocols()]
    overrides = []
    for p in available_protocols():
        protocol = PROTOCOLS[p]
        parts = [("every sparse method", protocol.sparse)]
        parts += [(f"`{n}`", changes) for n, changes in protocol.per_method.items()]
        parts += [(f"`{n}` (CNN head)", changes) for n, changes in protocol.convolutional.items()]
        lines = [[who, cell(", ".join(f"{k} = {v}" for k, v in changes.items()))] for who, changes in parts if changes]
        overrides.append(f"**`{p}`**\n\n" + (table(["applies to", "overrides"], lines) if lines else "no overrides\n"))
    return {"method-count": f"{len(names)} methods", "methods": summary, "composition": composition,
            "protocols": table(["protocol", "description"], protocol_rows),
            "protocol-overrides": "\n".join(overrides)}


# ----- command line -----------------------------------------------------------------------------------

def command_help() -> dict[str, str]:
    parser = build_parser()
    blocks = [("python -m cht --help", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            blocks += [(f"python -m cht {name} --help", sub) for name, sub in action.choices.items()]
    text = []
    for command, sub in blocks:
        buffer = io.StringIO()
        columns = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal's width: one width for every build
        try:
            with contextlib.redirect_stdout(buffer):
                sub.print_help()
        finally:
            os.environ.pop("COLUMNS") if columns is None else os.environ.update(COLUMNS=columns)
        text.append(f"### `{command}`\n\n```text\n{buffer.getvalue().rstrip()}\n```\n")
    return {"help": "\n".join(text)}


# ----- reproductions ----------------------------------------------------------------------------------

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def copy_reproductions() -> None:
    """Each ``reproductions/**/README.md`` becomes ``reproductions/<folder>/index.md``, with the images it
    shows; links to files outside the folder become their repository paths."""
    for readme in sorted((ROOT / "reproductions").glob("**/README.md")):
        folder = readme.parent
        page = folder.relative_to(ROOT) / "index.md"

        def link(match: re.Match) -> str:
            bang, text, target = match.groups()
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                return match.group(0)
            path = (folder / target.split("#")[0]).resolve()
            if bang and path.is_file() and folder in path.parents:
                with mkdocs_gen_files.open((page.parent / target).as_posix(), "wb") as handle:
                    handle.write(path.read_bytes())
                return match.group(0)
            repository_path = path.relative_to(ROOT).as_posix() if ROOT in path.parents else target
            return text if text.strip("`") == repository_path else f"{text} (`{repository_path}`)"

        with mkdocs_gen_files.open(page.as_posix(), "w") as handle:
            handle.write(LINK.sub(link, readme.read_text()))


fill("config-keys.md", config_keys())
fill("methods.md", methods())
fill("cli.md", command_help())
copy_reproductions()
