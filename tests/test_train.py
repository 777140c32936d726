"""Training runs: real data, determinism, resume, tracking, divergence."""

import json

import pytest
import torch

import cht.dst
import cht.train
from cht.analysis.graph import active_neurons
from cht.config import SPARSE_STORAGE_MAX_DENSITY, TrainConfig
from cht.tracking import Tracker, TrackingError
from cht.run.lifecycle import TrainingDiverged
from cht.train import train


def quick_config(root, **changes) -> TrainConfig:
    values = dict(method="set", dataset="fashion_mnist", dim=1, density=0.05, epochs=3, batch_size=32,
                  lr=0.01, seed=0, device="cpu", max_train_samples=600, max_test_samples=300,
                  data_root=str(root), tracking=False, progress=False)
    return TrainConfig(**{**values, **changes})


def comparable(metrics: dict) -> dict:
    timing = {"epoch_seconds", "train_time_s"}
    result = {k: v for k, v in metrics.items() if k not in timing}
    result["evolution"] = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["evolution"]]
    return result


@pytest.mark.slow
def test_same_seed_gives_identical_results(fashion_root, tmp_path) -> None:
    first = train(quick_config(fashion_root), tmp_path / "a")
    second = train(quick_config(fashion_root), tmp_path / "b")
    assert comparable(first) == comparable(second)
    masks_a, masks_b = torch.load(tmp_path / "a/masks.pt"), torch.load(tmp_path / "b/masks.pt")
    assert all(torch.equal(a, b) for a, b in zip(masks_a, masks_b))
    other = train(quick_config(fashion_root, seed=1), tmp_path / "c")
    assert other["test_accuracy"] != first["test_accuracy"]


def test_training_leaves_the_process_deterministic_setting_as_it_found_it(fashion_root, tmp_path,
                                                                         monkeypatch) -> None:
    """A CPU run insists on deterministic kernels while it trains, and only then."""
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    real_evaluate = cht.train.evaluate

    def evaluate(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(cht.train, "evaluate", evaluate)
    train(quick_config(fashion_root, epochs=1), tmp_path / "run")
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()


def interrupted_then_resumed(config: TrainConfig, out, monkeypatch, crash_epoch: int,
                             resume_config: TrainConfig | None = None) -> dict:
    """Train into ``out``, interrupted in epoch ``crash_epoch`` (at its evaluation), then resumed to the end
    (with ``resume_config``, by default the same configuration)."""
    real_evaluate = cht.train.evaluate
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_epoch:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(cht.train, "evaluate", crash)
    with pytest.raises(KeyboardInterrupt):
        train(config, out)
    assert not (out / "metrics.json").exists()
    monkeypatch.setattr(cht.train, "evaluate", real_evaluate)
    return train(resume_config or config, out)


def same_final_weights(out_a, out_b) -> bool:
    final_a = torch.load(out_a / "checkpoint.pt", weights_only=True)["stepper"]["model"]
    final_b = torch.load(out_b / "checkpoint.pt", weights_only=True)["stepper"]["model"]
    return all(torch.equal(final_a[k], final_b[k]) for k in final_a)


@pytest.mark.slow
def test_resume_from_checkpoint_equals_an_uninterrupted_run(fashion_root, tmp_path, monkeypatch) -> None:
    config = quick_config(fashion_root, update_interval=1)
    uninterrupted = train(config, tmp_path / "full")
    resumed = interrupted_then_resumed(config, tmp_path / "resumed", monkeypatch, crash_epoch=3)
    assert comparable(resumed) == comparable(uninterrupted)
    assert same_final_weights(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.slow
def test_a_masked_run_resumes_on_the_sparse_storage_and_reports_its_topology(fashion_root, tmp_path,
                                                                             monkeypatch) -> None:
    """The storage is storage only: a checkpoint resumes on the other one and the run goes on alike."""
    masked = quick_config(fashion_root, update_interval=1, storage="masked")
    uninterrupted = train(masked, tmp_path / "full")
    resumed = interrupted_then_resumed(masked, tmp_path / "resumed", monkeypatch, crash_epoch=3,
                                       resume_config=quick_config(fashion_root, update_interval=1, storage="sparse"))
    assert uninterrupted["storage"] == "masked" and resumed["storage"] == "sparse"
    assert resumed["test_accuracy"][:2] == uninterrupted["test_accuracy"][:2]
    assert resumed["test_accuracy"][2] == pytest.approx(uninterrupted["test_accuracy"][2], abs=1 / 300)
    masks_a, masks_b = torch.load(tmp_path / "full/masks.pt"), torch.load(tmp_path / "resumed/masks.pt")
    assert all(torch.equal(a, b) for a, b in zip(masks_a, masks_b))
    final_a = torch.load(tmp_path / "full/checkpoint.pt", weights_only=False)["stepper"]["model"]
    final_b = torch.load(tmp_path / "resumed/checkpoint.pt", weights_only=False)["stepper"]["model"]
    for name, value in final_b.items():
        if name.endswith(".values"):  # sparse link values against the masked dense weight at the links
            layer = name.removesuffix(".values")
            value = value.reshape(-1)
            reference = final_a[layer + ".weight"].reshape(-1)[final_b[layer + ".links"]]
        else:
            reference = final_a[name]
        assert torch.allclose(value, reference, rtol=1e-3, atol=1e-5), name

    # The topology record: initial masks, ANP from initialisation on, early-stop signals per layer.
    initial = torch.load(tmp_path / "resumed/initial_masks.pt")
    assert [int(mask.sum()) for mask in initial] == resumed["initial_links_per_layer"]
    assert [tuple(mask.shape) for mask in initial] == [tuple(mask.shape) for mask in masks_b] == [(784, 784)] * 3
    assert resumed["anp"][0] == pytest.approx(active_neurons(initial).anp)
    assert len(resumed["anp"]) == 1 + len(resumed["evolution"]) == 1 + 2  # updates after epochs 1 and 2
    assert resumed["anp"][1:] == [record["anp"] for record in resumed["evolution"]]
    assert resumed["final_anp"] == pytest.approx(active_neurons(masks_b).anp)
    assert len(resumed["early_stop_update"]) == 3


@pytest.mark.slow
def test_auto_storage_trains_dense_layers_masked_until_the_schedule_thins_them(fashion_root, tmp_path,
                                                                                monkeypatch) -> None:
    """GraNet starts at 50% density: on the CPU its layers train masked, then sparse once at most 10% dense,
    and a run resumed in between stores them alike and ends identical."""
    config = quick_config(fashion_root, method="granet", update_interval=1, epochs=4)
    stored = []
    store_layers = cht.train.store_layers

    def spy(layers, storage, optimizer=None) -> None:
        store_layers(layers, storage, optimizer)
        stored.append([(layer.density, layer.storage) for layer in layers])

    monkeypatch.setattr(cht.train, "store_layers", spy)
    uninterrupted = train(config, tmp_path / "full")
    assert uninterrupted["storage"] == "auto"
    assert [storage for _, storage in stored[0]] == ["masked"] * 3
    assert [storage for _, storage in stored[-1]] == ["sparse"] * 3
    assert all(storage == ("sparse" if density <= SPARSE_STORAGE_MAX_DENSITY else "masked")
               for layers in stored for density, storage in layers)
    resumed = interrupted_then_resumed(config, tmp_path / "resumed", monkeypatch, crash_epoch=3)
    assert comparable(resumed) == comparable(uninterrupted)
    assert same_final_weights(tmp_path / "full", tmp_path / "resumed")


def test_checkpoint_of_another_config_is_refused(fashion_root, tmp_path) -> None:
    train(quick_config(fashion_root, epochs=1), tmp_path)
    with pytest.raises(RuntimeError, match="different configuration"):
        train(quick_config(fashion_root, epochs=1, lr=0.02), tmp_path)


def test_short_real_training_is_well_above_chance(fashion_root, tmp_path) -> None:
    metrics = train(quick_config(fashion_root, max_train_samples=3000, max_test_samples=1000, epochs=2,
                                 density=0.01), tmp_path)
    assert metrics["final_test_accuracy"] > 0.6  # chance is 0.1
    assert metrics["links_per_layer"] == [round(0.01 * 784 * 784)] * 3
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert len(written["test_accuracy"]) == 2 and len(written["train_loss"]) == 2


def test_divergence_is_a_clear_error_and_leaves_no_metrics(fashion_root, tmp_path) -> None:
    with pytest.raises(TrainingDiverged, match="lower lr"):
        train(quick_config(fashion_root, lr=1e12, epochs=1), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_mlflow_run_records_config_tags_metrics_and_artifacts(fashion_root, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    tracker = Tracker("test-exp", run_name="set-run", results_dir=results)
    train(quick_config(fashion_root, epochs=2, tracking=True), tmp_path / "run", tracker)
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-exp")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == "set" and run.data.params["density"] == "0.05"
    for tag in ("cht.git_commit", "cht.dataset_checksum", "cht.version.torch", "cht.device"):
        assert run.data.tags[tag]
    assert len(client.get_metric_history(run.info.run_id, "epoch/test_accuracy")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "masks.pt"} <= artifacts


def test_unreachable_tracking_server_is_a_clear_error(fashion_root, tmp_path, monkeypatch, refusing_url) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refusing_url)
    tracker = Tracker("x", results_dir=tmp_path / "results")
    with pytest.raises(TrackingError, match=f"{refusing_url} is unreachable .*refused"):
        train(quick_config(fashion_root, epochs=1, tracking=True), tmp_path / "run", tracker)
    assert not (tmp_path / "run/metrics.json").exists()


@pytest.mark.parametrize("schedule", [dict(update_interval=1),  # after every epoch but the last
                                      dict(update_unit="step", update_interval=19)])  # 19 steps = one epoch
def test_an_evaluation_never_directly_follows_a_topology_update(fashion_root, tmp_path, monkeypatch,
                                                                 schedule) -> None:
    """Every per-epoch accuracy is measured on a topology trained for a whole epoch: an update scheduled on
    an epoch's last step waits for that epoch's evaluation."""
    events = []
    real_evaluate, real_update, real_step = cht.train.evaluate, cht.dst.Evolution.update, cht.train.after_optimizer_step

    def evaluate(*args, **kwargs):
        events.append("evaluate")
        return real_evaluate(*args, **kwargs)

    def update(self, *args, **kwargs):
        events.append("update")
        return real_update(self, *args, **kwargs)

    def step(*args, **kwargs):
        events.append("step")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(cht.train, "evaluate", evaluate)
    monkeypatch.setattr(cht.dst.Evolution, "update", update)
    monkeypatch.setattr(cht.train, "after_optimizer_step", step)
    metrics = train(quick_config(fashion_root, method="cht", epochs=3, **schedule), tmp_path)
    assert events.count("update") == len(metrics["evolution"]) >= 2
    assert events.count("evaluate") == 3
    assert all(not (first == "update" and second == "evaluate") for first, second in zip(events, events[1:]))


def test_a_real_cht_run_percolates_dead_neurons_and_stops_evolving_early(fashion_root, tmp_path, monkeypatch) -> None:
    """CHT on real data (1% density, CSTI leaves neurons with few links): the first update percolates the links
    of hidden neurons that removal left without inputs or outputs, and once regrowth re-creates over 90% of
    the links it removed in every layer, early stop freezes the topology before the schedule's last update."""
    import cht.dst.engine
    from cht.sparse import links as L

    percolations = []
    real_percolate = cht.dst.engine.percolate

    def spy(link_sets, shapes):
        result = real_percolate(link_sets, shapes)
        percolations.append(([links.clone() for links in link_sets], [links.clone() for links in result],
                             [tuple(shape) for shape in shapes]))
        return result

    monkeypatch.setattr(cht.dst.engine, "percolate", spy)
    config = quick_config(fashion_root, method="cht", density=0.01, epochs=4)
    method = cht.train.configured_method(config)
    assert method.percolation and method.early_stop is not None and method.early_stop.threshold == 0.9
    metrics = train(config, tmp_path)
    evolution = metrics["evolution"]
    assert len(percolations) == len(evolution)

    # Percolation: what it dropped is what the record calls percolated, and every dropped link touched a hidden
    # neuron left dead (no input links, or no output links) by the removal, checked neuron by neuron.
    for (before, after, shapes), record in zip(percolations, evolution):
        assert [len(b) - len(a) for b, a in zip(before, after)] == [c["percolated"] for c in record["layers"]]
        masks = [L.to_mask(links, shape) for links, shape in zip(after, shapes)]  # (out, in) per layer
        for index, (links_before, links_after, shape) in enumerate(zip(before, after, shapes)):
            assert bool(L.contains(links_before, links_after).all())
            for position in links_before[~L.contains(links_after, links_before)].tolist():
                out_neuron, in_neuron = divmod(position, shape[1])
                no_outputs = index + 1 < len(masks) and not bool(masks[index + 1][:, out_neuron].any())
                no_inputs = index > 0 and not bool(masks[index - 1][in_neuron, :].any())
                assert no_outputs or no_inputs, (index, out_neuron, in_neuron)
        for index in range(len(masks) - 1):  # a hidden neuron keeps inputs exactly when it keeps outputs
            has_inputs, has_outputs = masks[index].any(dim=1), masks[index + 1].any(dim=0)
            assert torch.equal(has_inputs, has_outputs), index
    percolated = [sum(change["percolated"] for change in record["layers"]) for record in evolution]
    assert percolated[0] > 0, "the first update percolated nothing"
    # Hidden neurons that still had output links before percolation and none after it: percolation silenced them.
    before, after, shapes = percolations[0]
    silenced = [int((L.degrees(b, shape)[1] > 0).logical_and(L.degrees(a, shape)[1] == 0).sum())
                for b, a, shape in zip(before[1:], after[1:], shapes[1:])]
    assert sum(silenced) > 0, silenced

    # Early stop: every layer's overlap passed 0.9 at the same update, the topology froze there, and the update
    # the schedule had planned after epoch 3 never came.
    scheduled = sum(method.schedule.is_update(epoch, config.epochs) for epoch in range(1, config.epochs + 1))
    frozen = [index for index, record in enumerate(evolution, start=1) if record["frozen"]]
    assert frozen, f"early stop never fired: overlaps {[[c['overlap'] for c in r['layers']] for r in evolution]}"
    frozen_at = frozen[0]
    assert frozen == [len(evolution)] and frozen_at < scheduled == 3
    assert all(change["overlap"] > 0.9 for change in evolution[-1]["layers"])
    assert not any(record["frozen"] for record in evolution[:-1])
    assert metrics["early_stop_update"] == [frozen_at] * 3
    assert metrics["links_per_layer"] == [change["links"] for change in evolution[-1]["layers"]]
    assert metrics["active_per_layer"] == evolution[-1]["active_per_layer"]
