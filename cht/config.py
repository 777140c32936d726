"""The training configuration: one typed, validated record shared by the CLI, YAML files and the pipeline."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, misspelled or out of range; the message names the field."""


# Fields that change how a run is observed, not what it computes: they stay out of the run's identity.
OBSERVATION_FIELDS = frozenset({"device", "progress", "tracking", "experiment", "data_sources", "num_workers"})
# Options added after runs were recorded: at their automatic value (None) they stay out of the identity,
# so checkpoints written before they existed still resume.
AUTOMATIC_FIELDS = frozenset({"augment", "mixed_precision", "channels_last"})


@dataclass
class TrainConfig:
    """Everything that defines one training run. Defaults follow the paper's MLP settings."""

    method: str = "set"
    dataset: str = "fashion_mnist"
    model: str = "mlp"
    dim: int = 1
    density: float = 0.01
    density_distribution: str = "uniform"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lr_final_factor: float = 0.01
    lr_decay_fraction: float = 0.9
    seed: int = 0
    device: str = "auto"
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    data_root: str = "data"
    data_sources: list[str] = field(default_factory=list)
    zeta: float | None = None
    zeta_decay: str | None = None
    update_interval: int | None = None
    update_unit: str | None = None
    end_fraction: float | None = None
    augment: bool | None = None
    num_workers: int | None = None
    mixed_precision: bool | None = None
    channels_last: bool | None = None
    experiment: str = "cht"
    tracking: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` naming the first bad one and how to fix it."""
        from cht.data import available_datasets
        from cht.dst import available_methods
        from cht.models import MODELS
        from cht.sparse.density import DISTRIBUTIONS
        from cht.dst.schedule import UNITS, ZETA_DECAYS

        self._check_types()
        choices = {
            "method": available_methods(), "dataset": available_datasets(), "model": sorted(MODELS),
            "density_distribution": list(DISTRIBUTIONS),
        }
        optional_choices = {"update_unit": list(UNITS), "zeta_decay": list(ZETA_DECAYS)}
        for name, allowed in {**choices, **optional_choices}.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ConfigError(f"{name}: {value!r} is not one of {allowed}")
        ranges = {
            "density": (0.0, 1.0), "lr_final_factor": (0.0, 1.0), "lr_decay_fraction": (0.0, 1.0),
            "momentum": (0.0, 1.0), "zeta": (0.0, 1.0), "end_fraction": (0.0, 1.0),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ConfigError(f"{name}: {value} must lie in [{low}, {high}]")
        positive = ["dim", "epochs", "batch_size", "max_train_samples", "max_test_samples", "update_interval"]
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: {value} must be a positive integer")
        if self.lr <= 0:
            raise ConfigError(f"lr: {self.lr} must be positive")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: {self.weight_decay} must be ≥ 0")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"device: {self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
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

    def _check_types(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _types(f.type)
            if value is None and type(None) in expected:
                continue
            if isinstance(value, bool) and bool not in expected:
                ok = False
            elif float in expected and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
                ok = True
            else:
                ok = isinstance(value, tuple(t for t in expected if t is not type(None)))
            if not ok:
                names = " or ".join(t.__name__ for t in expected)
                raise ConfigError(f"{f.name}: expected {names}, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a suggestion."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(known)}"
                raise ConfigError(f"unknown config key {key!r}{hint}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of config keys, then apply ``overrides`` (e.g. from the command line)."""
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """Hash of the fields that define what the run computes (resume refuses a checkpoint of another)."""
        relevant = {k: v for k, v in self.to_dict().items()
                    if k not in OBSERVATION_FIELDS and not (k in AUTOMATIC_FIELDS and v is None)}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _types(annotation: str) -> tuple[type, ...]:
    """Runtime types of a field annotation written as a string (``from __future__ import annotations``)."""
    names = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None), "list[str]": list}
    return tuple(names[part.strip()] for part in annotation.split("|"))
