"""Atomic, durable writes and checkpoints that never run code from the file."""

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch

import cht.io
from cht.io import (CheckpointError, OutputError, load_checkpoint, save_checkpoint, save_tensors_atomic,
                    write_atomic, write_text_atomic)


class Planted:
    """What an attacker would leave as checkpoint.pt: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


def test_write_atomic_replaces_and_fsyncs_file_then_folder(tmp_path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", Path(destination).name))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert events == [("fsync", False), ("replace", "metrics.json"), ("fsync", True)]
    assert leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"previous")

    def crash(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert target.read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_injected_full_disk_is_named_and_cleaned_up(tmp_path) -> None:
    target = tmp_path / "checkpoint.pt"

    def full_disk(stream):
        stream.write(b"some bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=f"cannot write {target}: no space left on device") as error:
        write_atomic(target, full_disk)
    assert error.value.errno == errno.ENOSPC
    assert not target.exists() and leftovers(tmp_path) == []


def test_real_full_disk_gives_a_message_not_a_torch_traceback(tiny_disk) -> None:
    target = tiny_disk / "checkpoint.pt"
    with pytest.raises(OutputError, match="no space left on device"):
        save_checkpoint(target, {"identities": ["abc"], "model": {"weight": torch.zeros(100_000)}})
    assert list(tiny_disk.iterdir()) == []


def test_unwritable_target_names_the_file(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"cannot write {blocker / 'metrics.json'}: a parent of it is a file"):
        write_text_atomic(blocker / "metrics.json", "{}")


def test_checkpoint_round_trip_and_refusals(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    generator = torch.Generator().manual_seed(3)
    state = {"identities": ["abc"], "epoch": 2, "model": {"w": torch.arange(4.0)}, "rng": generator.get_state(),
             "history": {"test_accuracy": [0.5, 0.6], "evolution": [{"anp": 1.0, "layers": [{"pruned": 3}]}]},
             "mlflow_run_id": None}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path, ["abc"])
    assert loaded["history"] == state["history"] and torch.equal(loaded["model"]["w"], state["model"]["w"])
    with pytest.raises(CheckpointError, match=f"{path} was written by a different configuration"):
        load_checkpoint(path, ["other"])
    torch.save({"identity": "abc", "epoch": 2}, path)  # one run per checkpoint, as cht wrote them before
    with pytest.raises(CheckpointError, match=f"{path} was written by an earlier version of cht"):
        load_checkpoint(path, ["abc"])
    torch.save([torch.ones(2)], path)
    with pytest.raises(CheckpointError, match=f"{path} is not a cht training checkpoint"):
        load_checkpoint(path, ["abc"])
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match=f"{path} is not a torch file"):
        load_checkpoint(path, ["abc"])
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path, ["abc"])


def test_state_that_would_not_load_safely_is_refused_before_writing(tmp_path) -> None:
    import numpy as np

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"\['history'\]\['loss'\]: float64"):
        save_checkpoint(path, {"identities": ["abc"], "history": {"loss": np.float64(1.0)}})
    with pytest.raises(TypeError, match="Planted"):
        save_tensors_atomic(path, [Planted(tmp_path / "x")])
    assert not path.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_planted_checkpoint_runs_no_code(tmp_path, writer) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    payload = {"identities": ["abc"], "epoch": 0, "evil": Planted(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    refusal = "holds objects other than tensors" if writer == "torch.save" else "is not a torch file"
    with pytest.raises(CheckpointError, match=f"{path} {refusal}"):
        load_checkpoint(path, ["abc"])
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(Planted(marker))) and marker.exists()  # the payload is live


def test_io_module_is_the_only_place_that_unpickles() -> None:
    """No torch.load with weights_only=False (or without weights_only) anywhere in the package or pipeline."""
    root = Path(cht.io.__file__).resolve().parents[1]
    offenders = []
    for path in [*root.joinpath("cht").rglob("*.py"), *root.joinpath("workflow").rglob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(root)}:{number}")
    assert offenders == []


def test_a_damaged_correlation_cache_is_recomputed(tmp_path) -> None:
    from cht.init.csti import cache_path, dataset_correlation
    from cht.init.topology import InitContext

    inputs = torch.rand(50, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    extras = {"train_inputs": inputs, "dataset": "toy", "data_root": str(tmp_path)}
    path = cache_path(tmp_path, "toy", 50)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    context = InitContext(0, torch.Generator().manual_seed(0), extras)
    correlation = dataset_correlation(context)
    assert correlation.shape == (4, 4)
    assert torch.equal(cht.io.load_tensors(path), correlation)


def test_training_refuses_a_planted_checkpoint_before_running_it(fashion_root, tmp_path) -> None:
    from cht.config import TrainConfig
    from cht.train import train

    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    config = TrainConfig(epochs=1, max_train_samples=100, max_test_samples=100, data_root=str(fashion_root),
                         device="cpu", tracking=False, progress=False)
    torch.save({"identities": [config.identity()], "epoch": 0, "evil": Planted(marker)}, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=str(out / "checkpoint.pt")):
        train(config, out)
    assert not marker.exists() and not (out / "metrics.json").exists()
