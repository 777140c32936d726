"""What a training run records: the configuration it actually used and the metrics of each topology update.

Both go to ``metrics.json`` and to the run's mlflow record (:mod:`cht.tracking` only carries them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from cht.config import TrainConfig
    from cht.dst.methods import Method


def resolved_params(config: TrainConfig, method: Method, device: torch.device | str) -> dict[str, Any]:
    """The configuration a training run actually used, for mlflow params and ``metrics.json``.

    ``method`` is the registered method with the configuration's schedule overrides applied
    (:meth:`Method.with_schedule`). Schedule fields the configuration left to the method get the
    method's values; a method that never changes its topology has no schedule, so those keys are
    absent rather than ``None``. ``rules`` names the composed pieces (initialisers, removal and
    regrowth rules, density schedule, percolation, early stop), ``training`` how the run trains and is
    evaluated, ``device`` the device it ran on.
    """
    params = config.to_dict()
    schedule_keys = {"zeta": "zeta", "zeta_decay": "zeta_decay", "update_interval": "interval",
                     "update_unit": "unit", "end_fraction": "end_fraction"}
    for key, field_name in schedule_keys.items():
        if method.evolves:
            params[key] = getattr(method.schedule, field_name)
        else:
            params.pop(key)
    if method.evolves:
        params["early_stop"] = method.early_stop is not None
    else:
        params.pop("early_stop")
    params["device"] = str(device)
    # Options left automatic are logged as what they resolve to, or left out where they do not apply.
    from cht.models import is_convolutional

    params["augment"] = config.augmentation()
    convolutional = is_convolutional(config.model)
    for key in ("mixed_precision", "channels_last"):
        if params[key] is None:
            if convolutional:
                params[key] = str(device).startswith("cuda")
            else:
                params.pop(key)
    if params["num_workers"] is None:
        params.pop("num_workers")
    for key in ("max_train_samples", "max_test_samples"):
        if params[key] is None:
            params[key] = "all"
    params["rules"] = {
        "description": method.description,
        "topology_init": method.topology_init if method.sparse else "dense",
        "weight_init": method.weight_init if method.sparse else "torch default",
        "removal": repr(method.removal) if method.evolves and method.removal is not None else "none",
        "regrowth": repr(method.regrowth) if method.evolves and method.regrowth is not None else "none",
        "density_schedule": repr(method.density),
        "initial_density": method.initial_density(config.density) if method.sparse else 1.0,
        "percolation": method.percolation,
        "early_stop": repr(method.early_stop) if method.early_stop else "none",
        "dense_gradient": method.needs_dense_grad,
    }
    params["training"] = {
        "optimizer": f"SGD(momentum={config.momentum}, weight_decay={config.weight_decay})",
        "lr_schedule": f"linear from {config.lr} to {config.lr * config.lr_final_factor:g} over "
                       f"{config.lr_decay_fraction:.0%} of the epochs, then constant",
        "evaluation": "top-1 test accuracy after every epoch",
    }
    return params


def evolution_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """mlflow metrics of one topology update (an ``EvolutionRecord.to_dict()``), logged at its optimiser step.

    Network-wide values go under ``evolution/`` (ANP, ζ, the epoch it followed, phase times); per-layer
    detail under ``evolution_layer<i>/``, so the UI groups each layer's charts in a section of its own.
    """
    metrics = {"evolution/anp": record["anp"], "evolution/zeta": record["zeta"], "evolution/epoch": record["epoch"]}
    for phase, seconds in record["seconds"].items():
        metrics[f"evolution/seconds_{phase}"] = seconds
    for index, layer in enumerate(record["layers"]):
        for key, value in layer.items():
            metrics[f"evolution_layer{index}/{key}"] = value
        metrics[f"evolution_layer{index}/active_out"] = record["active_per_layer"][index + 1]
    return metrics
