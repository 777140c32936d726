"""The training configuration: one typed record, and the one place where its keys and their ranges live.

Every key of :class:`TrainConfig` is declared with :func:`option`: its type (the annotation), default, help
text and allowed values (JSON-schema keywords, or a registry to choose from). From that single declaration
come the validation of :class:`TrainConfig` itself (YAML files and the Python API), the flags of
``python -m cht train`` (:mod:`cht.cli`), and the ``train`` section, grid entries and run-wide keys of the
pipeline's schema (filled in at start-up by ``workflow/rules/common.smk``). Adding a key is one ``option``
line here.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

#: The protocol of runs that do not name one (also of runs recorded before protocols existed).
DEFAULT_PROTOCOL = "uniform"
#: Largest seed every generator in play accepts (numpy's legacy seeding is 32-bit).
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A configuration value is missing, misspelled or out of range; the message names the field.

    ``field`` is the key at fault (None for a problem with the file as a whole).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def option(default: Any, help: str, *, choices: Callable[[], list[str]] | list[str] | None = None,
           observation: bool = False, pipeline: str | None = "train", flag: str | None = None,
           folder: str | None = None, setting: bool = True, label: Callable[[Any], str] = str,
           grid_list: str | None = None, **schema: Any) -> Any:
    """Declare a :class:`TrainConfig` key.

    ``schema`` holds JSON-schema keywords on top of the type (``minimum``, ``exclusiveMinimum``,
    ``maximum``, ``pattern``, ``minLength``); ``choices`` the allowed values, or a function returning them
    (registries filled at import time). ``observation=True`` marks keys that change how a run is watched,
    not what it computes: they stay out of :meth:`TrainConfig.identity`, so a resumed run may change them.
    ``pipeline`` says where the key lives in the pipeline's config: ``train`` (the shared ``train:``
    settings, the default), ``grid`` (a list per key: ``methods``, ``densities``, ...; a new one also needs
    a wildcard), ``run`` (a top-level key) or None (not set by the pipeline). ``flag`` overrides the
    command-line option's name (default ``--key-with-dashes``).

    The ``grid`` keys are the run key, in the order of a run's folder path; from them derive the run and
    setting folders, the pipeline's wildcards and grid lists, table keys and run names. For those:
    ``folder`` is the path segment the key writes (None: it appears in another key's segment),
    ``setting=False`` marks the keys that vary within a setting (method and seed), ``label`` how a run
    name shows the value, ``grid_list`` the pipeline's list of values (default: the key plus ``s``).
    """
    metadata = {"help": help, "choices": choices, "observation": observation, "pipeline": pipeline,
                "flag": flag, "schema": schema, "folder": folder, "setting": setting, "label": label,
                "grid_list": grid_list}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _registry(module: str, name: str) -> Callable[[], list[str]]:
    """Allowed values read from a registry when first needed (the registries import this module)."""
    def names() -> list[str]:
        import importlib

        found = getattr(importlib.import_module(module), name)
        return sorted(found()) if callable(found) else sorted(found)
    return names


# Options added after runs were recorded: at their automatic value (None) they stay out of the identity,
# so checkpoints written before they existed still resume.
AUTOMATIC_FIELDS = frozenset({"augment", "mixed_precision", "channels_last", "early_stop"})


# At or below this density the sparse storage trains faster than the masked one on a CPU
# (bench/train_throughput.py: paper MLP, batch 32 and 256, 1 and 2 threads): `storage: auto` stores by it.
SPARSE_STORAGE_MAX_DENSITY = 0.1
# Keys that earlier versions spelled otherwise, so that an old config is told the new name.
RENAMED_KEYS = {"backend": "storage"}


@dataclass
class TrainConfig:
    """Everything that defines one training run. Defaults follow the paper's MLP settings."""

    # The run key (pipeline="grid"), in the order of a run's folder: <dataset>/<model>-dim<dim>/...
    dataset: str = option("fashion_mnist", "dataset (python -m cht datasets)",
                          choices=_registry("cht.data", "available_datasets"), pipeline="grid", folder="{dataset}")
    model: str = option("mlp", "model architecture", choices=_registry("cht.models", "MODELS"), pipeline="grid",
                        folder="{model}-dim{dim}")
    dim: int = option(1, "hidden width as a multiple of the input size", minimum=1, pipeline="grid",
                      label="d{}".format)
    density: float = option(0.01, "fraction of links kept in each sparse layer", exclusiveMinimum=0, maximum=1,
                            pipeline="grid", folder="density{density}", grid_list="densities",
                            label=lambda density: f"{float(density) * 100:g}%")
    protocol: str = option(DEFAULT_PROTOCOL, "how every method is set up: uniform (the same initialisation for all), "
                                      "released (as the authors' ICLR 2024 commands) or neurips2025 (as their "
                                      "later release runs Table 7)",
                           choices=_registry("cht.dst", "available_protocols"), pipeline="grid", folder="{protocol}",
                           label=lambda protocol: "" if protocol == DEFAULT_PROTOCOL else protocol)
    method: str = option("set", "sparse-training method (python -m cht methods)",
                         choices=_registry("cht.dst", "available_methods"), pipeline="grid", folder="{method}",
                         setting=False)
    seed: int = option(0, "random seed of every generator", minimum=0, maximum=MAX_SEED, pipeline="grid",
                       folder="seed{seed}", setting=False, label="s{}".format)
    density_distribution: str = option("uniform", "how links are spread over layers",
                                       choices=_registry("cht.sparse.density", "DISTRIBUTIONS"))
    epochs: int = option(10, "training epochs", minimum=1)
    batch_size: int = option(32, "mini-batch size", minimum=1)
    lr: float = option(0.01, "initial learning rate", exclusiveMinimum=0)
    momentum: float = option(0.9, "SGD momentum", minimum=0, maximum=1)
    weight_decay: float = option(1e-5, "SGD weight decay", minimum=0)
    lr_final_factor: float = option(0.01, "learning rate at the end, as a fraction of lr", minimum=0, maximum=1)
    lr_decay_fraction: float = option(0.9, "fraction of the epochs over which lr decays linearly",
                                      minimum=0, maximum=1)
    device: str = option("auto", "auto (CUDA when present), cpu, mps, cuda or cuda:N",
                         pattern="^(auto|cpu|mps|cuda(:[0-9]+)?)$", observation=True)
    storage: str = option("auto", "sparse-layer storage: auto (on a CPU each layer sparse while its density <= "
                                  f"{SPARSE_STORAGE_MAX_DENSITY} and masked above; masked on a GPU), "
                                  "masked (dense weight and mask) or sparse (links only, O(batch x links) kernels)",
                          choices=["auto", "masked", "sparse"], observation=True)
    max_train_samples: int | None = option(None, "use only the first N training samples", minimum=1)
    max_test_samples: int | None = option(None, "use only the first N test samples", minimum=1)
    data_root: str = option("data", "folder where datasets are prepared", minLength=1, pipeline="run")
    data_sources: list[str] = option([], "local folder or mirror URL tried before the official one (repeatable)",
                                     observation=True, pipeline="run", flag="--data-source")
    zeta: float | None = option(None, "fraction of links replaced at each evolution step (default: the method's)",
                                minimum=0, maximum=1)
    zeta_decay: str | None = option(None, "how zeta decays over training (default: the method's)",
                                    choices=_registry("cht.dst.schedule", "ZETA_DECAYS"))
    update_interval: int | None = option(None, "epochs (or steps) between evolution steps", minimum=1)
    update_unit: str | None = option(None, "unit of update_interval",
                                     choices=_registry("cht.dst.schedule", "UNITS"))
    early_stop: bool | None = option(None, "freeze the topology once regrowth mostly re-creates the links just "
                                           "removed (default: the method's; false turns it off, true adds it with "
                                           "an overlap threshold of 0.9)")
    end_fraction: float | None = option(None, "fraction of training after which the topology stops evolving",
                                        minimum=0, maximum=1)
    augment: bool | None = option(None, "augment training images as released (default: on for CNNs on datasets "
                                        "that define an augmentation)")
    num_workers: int | None = option(None, "DataLoader worker processes for streamed datasets (default: automatic)",
                                     minimum=0, observation=True)
    mixed_precision: bool | None = option(None, "bf16 autocast of a CNN trunk; the sparse head stays float32 "
                                                "(default: on with CUDA)")
    channels_last: bool | None = option(None, "channels-last memory for a CNN trunk (default: on with CUDA)")
    experiment: str = option("cht", "mlflow experiment name", minLength=1, observation=True, pipeline="run")
    tracking: bool = option(True, "record an mlflow run", observation=True, pipeline="run")
    progress: bool = option(True, "show progress bars", observation=True, pipeline=None)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every key against :meth:`json_schema`; raise :class:`ConfigError` naming the first bad one."""
        import jsonschema

        self._normalise_numbers()
        schema = self.json_schema()
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(self.to_dict()), key=lambda error: list(error.absolute_path))
        if errors:
            name = errors[0].absolute_path[0]
            raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; expected "
                              f"{describe(schema['properties'][name])}", name)
        self._check_image_options()

    def _check_image_options(self) -> None:
        """Options of the convolutional models and streamed datasets (see :mod:`cht.data.batches`)."""
        from cht.data import DATASETS
        from cht.models import is_convolutional

        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers: {self.num_workers} must be ≥ 0 (0 loads batches in the main process)")
        if self.augment and DATASETS[self.dataset].augmentation == "none":
            raise ConfigError(f"augment: {self.dataset} defines no augmentation; set augment to false or null")
        if not is_convolutional(self.model):
            for name in ("mixed_precision", "channels_last"):
                if getattr(self, name):
                    raise ConfigError(f"{name}: applies to convolutional models only, not {self.model!r}; "
                                      f"leave it null")

    def augmentation(self) -> bool:
        """Whether training batches are augmented: ``augment``, or by default the released setting (the
        dataset's augmentation for CNNs, none for the MLP)."""
        from cht.data import DATASETS
        from cht.models import is_convolutional

        if self.augment is not None:
            return self.augment
        return is_convolutional(self.model) and DATASETS[self.dataset].augmentation != "none"

    def _normalise_numbers(self) -> None:
        """ints for float keys become floats, integral floats for int keys ints (the identity hash needs one form)."""
        for key, (base, _) in _field_types().items():
            value = getattr(self, key)
            if base is float and type(value) is int:
                setattr(self, key, float(value))
            elif base is int and type(value) is float and value.is_integer():
                setattr(self, key, int(value))

    @classmethod
    def json_schema(cls, pipeline: str | None = None) -> dict[str, Any]:
        """The JSON schema of the keys (only those of one ``pipeline`` section when given)."""
        properties = {f.name: key_schema(f) for f in fields(cls)
                      if pipeline is None or f.metadata["pipeline"] == pipeline}
        return {"type": "object", "additionalProperties": False, "properties": properties}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a suggestion."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = ([RENAMED_KEYS[key]] if key in RENAMED_KEYS
                         else difflib.get_close_matches(key, sorted(known), n=1))
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(known)}"
                raise ConfigError(f"unknown config key {key!r}{hint}", key)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of config keys, then apply ``overrides`` (e.g. from the command line)."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_path(self) -> str:
        """This run's folder below ``<results>/runs``, as :data:`RUN_LAYOUT` says (density written as ``%g``)."""
        return RUN_LAYOUT.format(**{key: wildcard_value(getattr(self, key)) for key in RUN_KEY})

    def identity(self) -> str:
        """Hash of the keys that define what the run computes (resume refuses a checkpoint of another)."""
        relevant = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata["observation"]
                    and not (f.name in AUTOMATIC_FIELDS and getattr(self, f.name) is None)}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}

# The run key and everything derived from it: one declaration (the grid options above), every spelling.
_GRID = [f for f in fields(TrainConfig) if f.metadata["pipeline"] == "grid"]
#: The keys that identify a run, in the order of its folder path.
RUN_KEY: tuple[str, ...] = tuple(f.name for f in _GRID)
#: The keys of a setting: a run's key less those that vary within a setting (method and seed).
SETTING_KEY: tuple[str, ...] = tuple(f.name for f in _GRID if f.metadata["setting"])
#: The keys that tell apart the runs of a setting.
MEMBER_KEY: tuple[str, ...] = tuple(key for key in RUN_KEY if key not in SETTING_KEY)
#: Each grid key's list of values in the pipeline's config (``datasets``, ``densities``, ...).
GRID_LISTS: dict[str, str] = {f.name: f.metadata["grid_list"] or f"{f.name}s" for f in _GRID}


def folder_layout(keys: typing.Iterable[str]) -> str:
    """The folder path of ``keys`` (a subset of :data:`RUN_KEY`), with a ``{key}`` placeholder per key."""
    wanted = set(keys)
    return "/".join(f.metadata["folder"] for f in _GRID if f.metadata["folder"] and f.name in wanted)


#: Where a run's outputs go below ``<results>/runs`` (the CLI's default and the pipeline's layout).
RUN_LAYOUT = folder_layout(RUN_KEY)
#: A setting's folder (figures, groups, logs of per-setting jobs).
SETTING_LAYOUT = folder_layout(SETTING_KEY)


def wildcard_value(value: Any) -> str:
    """A key's value as it appears in paths and wildcards (numbers in ``%g``: density 0.01, not 0.010)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_wildcard(key: str, text: str) -> Any:
    """A grid key's value from its text in a path or wildcard."""
    return _field_types()[key][0](text)


def wildcard_patterns() -> dict[str, str]:
    """The regular expression each grid key's wildcard matches, from its type."""
    patterns = {int: r"\d+", float: r"[0-9.e+-]+", str: "[a-z0-9_]+"}
    return {key: patterns[_field_types()[key][0]] for key in RUN_KEY}


def panel_title(keys: typing.Iterable[str]) -> str:
    """A figure panel's title pattern: words as they are, numbers named (``{model}, dim {dim}``)."""
    return ", ".join(f"{{{key}}}" if _field_types()[key][0] is str else f"{key} {{{key}}}" for key in keys)


def describe_run(values: typing.Mapping[str, Any]) -> str:
    """A run's identity as the UI's narrow columns and chart legends need it: what varies within a setting first.

    ``{"method": "cht", "seed": 2, "dataset": "fashion_mnist", "model": "mlp", "dim": 1, "density": 0.01}``
    → ``cht s2 · fashion_mnist mlp d1 1%``; missing keys are left out, unknown ones appended as ``key=value``.
    Each key is shown by its ``label`` (the default protocol not at all).
    """
    labels = {f.name: f.metadata["label"] for f in _GRID}
    groups = [[labels[key](values[key]) for key in keys if key in values] for keys in (MEMBER_KEY, SETTING_KEY)]
    groups[1] += [f"{key}={value}" for key, value in values.items() if key not in labels]
    return " · ".join(" ".join(word for word in group if word) for group in groups if any(group))


def training_run_name(config: TrainConfig) -> str:
    """Run name of a training run (the CLI's and the pipeline's ``train`` jobs' alike)."""
    return describe_run({key: getattr(config, key) for key in RUN_KEY})


def job_run_name(rule: str, wildcards: typing.Mapping[str, Any]) -> str:
    """Run name of a pipeline job: a training run's name, or the rule followed by its wildcards."""
    described = describe_run(wildcards)
    if rule == "train":
        return described
    return f"{rule} · {described}" if described else rule


@cache
def _field_types() -> dict[str, tuple[type, bool]]:
    """(base type, optional) of every key, from its annotation (``int | None`` → (int, True))."""
    hints = typing.get_type_hints(TrainConfig)
    result = {}
    for f in fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        base = next(arg for arg in args if arg is not type(None)) if args else hint
        result[f.name] = (list if typing.get_origin(base) is list else base, type(None) in args)
    return result


def key_schema(key: dataclasses.Field) -> dict[str, Any]:
    """The JSON schema of one :class:`TrainConfig` key, from its annotation and :func:`option` metadata."""
    base, optional = _field_types()[key.name]
    meta = key.metadata
    if base is list:
        schema: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}}
    else:
        schema = {"type": JSON_TYPES[base], **meta["schema"]}
    if optional:
        schema["type"] = [schema["type"], "null"]
    choices = meta["choices"]
    if choices is not None:
        schema["enum"] = [*(choices() if callable(choices) else choices), *([None] if optional else [])]
    return {**schema, "description": meta["help"]}


def describe(schema: dict[str, Any]) -> str:
    """What a key's schema allows, in words: ``a number > 0 and ≤ 1``, ``one of [...]``."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    words = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
             "array": "a list of strings", "null": "null"}
    if "enum" in schema:
        text = f"one of {[value for value in schema['enum'] if value is not None]}"
    else:
        text = words[kinds[0]]
        bounds = [f"{symbol} {schema[keyword]}" for keyword, symbol in
                  (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤"))
                  if keyword in schema]
        if bounds:
            text += " " + " and ".join(bounds)
        if "pattern" in schema:
            text += f" matching {schema['pattern']}"
        if schema.get("minLength"):
            text = "a non-empty string"
    if "null" in kinds:
        text += " (or null for the default)"
    return f"{text}: {schema['description']}"
