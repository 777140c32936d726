"""Grouped training: a run trained in a group gives the result it gives alone; the stacked optimiser and
layer views follow torch.optim.SGD and SparseLinear; a killed group resumes; memory estimate."""

from __future__ import annotations

import json

import pytest
import torch

import cht.grouped
from cht.config import TrainConfig
from cht.dst.engine import Evolution
from cht.processes import TrainingStopped
from cht.grouped import check_group, group_memory_bytes, max_group_size, train_group
from cht.sparse import links as L
from cht.train import train
from test_preemption import sigterm_after_call

METHODS = ("set", "rigl", "cht", "fc")


def group_config(root, method: str, seed: int = 0, **changes) -> TrainConfig:
    values = dict(method=method, dataset="fashion_mnist", dim=1, density=0.05, epochs=3, batch_size=32,
                  lr=0.01, seed=seed, device="cpu", storage="masked", max_train_samples=2000,
                  max_test_samples=1000, data_root=str(root), tracking=False, progress=False)
    return TrainConfig(**{**values, **changes})


@pytest.fixture
def recorded_updates(monkeypatch) -> dict[str, list[list[torch.Tensor]]]:
    """Every Evolution's links after each of its updates, by method name."""
    updates: dict[str, list[list[torch.Tensor]]] = {}
    real_update = Evolution.update

    def update(self, *args, **kwargs):
        record = real_update(self, *args, **kwargs)
        updates.setdefault(self.method.name, []).append([layer.links.cpu().clone() for layer in self.layers])
        return record

    monkeypatch.setattr(Evolution, "update", update)
    return updates


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of links two link sets have in common (1 = identical)."""
    return int(L.contains(a, b).sum()) / max(a.numel(), b.numel(), 1)


@pytest.mark.slow
def test_group_of_mixed_methods_equals_runs_trained_alone(fashion_root, tmp_path, recorded_updates) -> None:
    configs = [group_config(fashion_root, method, seed=index) for index, method in enumerate(METHODS)]
    alone = {c.method: train(c, tmp_path / "alone" / c.method) for c in configs}
    alone_updates = dict(recorded_updates)
    recorded_updates.clear()
    grouped = train_group(configs, [tmp_path / "group" / c.method for c in configs], tmp_path / "group.pt")

    for config, metrics in zip(configs, grouped):
        single = alone[config.method]
        folder_alone, folder_group = tmp_path / "alone" / config.method, tmp_path / "group" / config.method
        assert json.loads((folder_group / "metrics.json").read_text()) == metrics
        # Same initialisation: the initial masks are identical.
        initial_alone, initial_group = torch.load(folder_alone / "initial_masks.pt"), torch.load(
            folder_group / "initial_masks.pt")
        assert len(initial_alone) == len(initial_group) == (0 if config.method == "fc" else 3)
        assert all(torch.equal(a, b) for a, b in zip(initial_alone, initial_group))
        # Same topology after every update: ≥ 99 % of links in common (the rankings that decide removal
        # can swap two near-equal weights once summation order differs).
        updates_alone, updates_group = alone_updates.get(config.method, []), recorded_updates.get(config.method, [])
        assert len(updates_alone) == len(updates_group) == (0 if config.method == "fc" else config.epochs - 1)
        for links_alone, links_group in zip(updates_alone, updates_group):
            assert all(agreement(a, b) >= 0.99 for a, b in zip(links_alone, links_group))
        final_alone, final_group = torch.load(folder_alone / "masks.pt"), torch.load(folder_group / "masks.pt")
        assert all((a == b).float().mean() >= 0.99 for a, b in zip(final_alone, final_group))
        assert metrics["links_per_layer"] == single["links_per_layer"]
        # Accuracies on 1000 test images: with the same topology and weights equal to float rounding,
        # at most a handful of borderline images may flip (0.5 % = 5 images); losses agree closely.
        assert metrics["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=0.005)
        assert metrics["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)
        assert metrics["final_test_accuracy"] > 0.5


@pytest.mark.slow
def test_killed_group_resumes_to_the_uninterrupted_result(fashion_root, tmp_path, monkeypatch) -> None:
    configs = [group_config(fashion_root, method, epochs=3, max_train_samples=600, max_test_samples=300)
               for method in ("set", "static")]
    uninterrupted = train_group(configs, [tmp_path / "full" / c.method for c in configs], tmp_path / "full.pt")

    real_evaluate = cht.grouped.evaluate
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    folders = [tmp_path / "resumed" / c.method for c in configs]
    monkeypatch.setattr(cht.grouped, "evaluate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_group(configs, folders, tmp_path / "resumed.pt")
    assert not any((folder / "metrics.json").exists() for folder in folders)
    monkeypatch.setattr(cht.grouped, "evaluate", real_evaluate)
    resumed = train_group(configs, folders, tmp_path / "resumed.pt")
    timing = {"epoch_seconds", "train_time_s", "evolution"}
    for a, b in zip(uninterrupted, resumed):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    full, again = torch.load(tmp_path / "full.pt", weights_only=False), torch.load(tmp_path / "resumed.pt",
                                                                                  weights_only=False)
    assert all(torch.equal(a, b) for a, b in zip(full["stepper"]["parameters"] + full["stepper"]["momentum"],
                                                 again["stepper"]["parameters"] + again["stepper"]["momentum"]))
    with pytest.raises(RuntimeError, match="different configuration or group"):
        train_group(configs[:1], folders[:1], tmp_path / "resumed.pt")


@pytest.mark.slow
def test_group_stopped_by_sigterm_mid_epoch_resumes_to_the_uninterrupted_result(fashion_root, tmp_path,
                                                                                 monkeypatch) -> None:
    configs = [group_config(fashion_root, method, epochs=2, max_train_samples=600, max_test_samples=300,
                            update_unit="step", update_interval=7) for method in ("set", "static")]
    uninterrupted = train_group(configs, [tmp_path / "full" / c.method for c in configs], tmp_path / "full.pt")

    folders = [tmp_path / "stopped" / c.method for c in configs]
    with monkeypatch.context() as patch:
        sigterm_after_call(patch, cht.grouped.GroupedMLP, "after_step", 19 + 6)  # the 6th of 19 steps of epoch 2
        with pytest.raises(TrainingStopped, match="after step 6 of 19 in epoch 2"):
            train_group(configs, folders, tmp_path / "stopped.pt")
    assert torch.load(tmp_path / "stopped.pt", weights_only=False)["partial_epoch"]["batches"] == 6
    resumed = train_group(configs, folders, tmp_path / "stopped.pt")
    timing = {"epoch_seconds", "train_time_s"}
    for a, b in zip(uninterrupted, resumed):
        a["evolution"] = [{k: v for k, v in r.items() if k != "seconds"} for r in a["evolution"]]
        b["evolution"] = [{k: v for k, v in r.items() if k != "seconds"} for r in b["evolution"]]
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    full, again = torch.load(tmp_path / "full.pt", weights_only=False), torch.load(tmp_path / "stopped.pt",
                                                                                  weights_only=False)
    assert all(torch.equal(a, b) for a, b in zip(full["stepper"]["parameters"] + full["stepper"]["momentum"],
                                                 again["stepper"]["parameters"] + again["stepper"]["momentum"]))


def test_group_of_incompatible_runs_is_refused(fashion_root) -> None:
    with pytest.raises(ValueError, match="share batch_size"):
        check_group([group_config(fashion_root, "set"), group_config(fashion_root, "cht", batch_size=64)])
    with pytest.raises(ValueError, match="same run twice"):
        check_group([group_config(fashion_root, "set"), group_config(fashion_root, "set")])


def test_memory_estimate_grows_with_the_group_and_bounds_its_size() -> None:
    shapes = [(784, 784)] * 3 + [(784, 10)]
    one, thirty = group_memory_bytes(shapes, 1, 32), group_memory_bytes(shapes, 30, 32)
    assert thirty > 29 * one > 0
    assert max_group_size(thirty, shapes, 32) == 30
    assert max_group_size(one // 2, shapes, 32) == 1


def test_a_group_too_large_for_its_gpu_stops_naming_the_size_that_fits(fashion_root, monkeypatch) -> None:
    """The CUDA branch of the check needs only a device and its memory: a 2 GiB GPU holds a handful of runs."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=2**31))
    configs = [group_config(fashion_root, "set", seed, max_train_samples=None) for seed in range(40)]
    shapes = cht.grouped.model_layer_shapes("mlp", "fashion_mnist", 1)
    fits = max_group_size(2**31, shapes, 32, cht.grouped.dataset_bytes("fashion_mnist"))
    assert 1 < fits < 40
    with pytest.raises(RuntimeError, match=f"a group of 40 runs .* set group_size: {fits} or less"):
        cht.grouped.check_group_fits(configs, torch.device("cuda"))
    cht.grouped.check_group_fits(configs[:fits], torch.device("cuda"))
    cht.grouped.check_group_fits(configs, torch.device("cpu"))  # GPU memory only
