"""The one decision a job makes about the checkpoint it finds: resume from it, or remove it and start afresh."""

from __future__ import annotations

import pytest

from cht.io import save_tensors_atomic
from cht.run.checkpoint import resume_or_restart


def write(path, **state):
    save_tensors_atomic(path, state)
    return path


@pytest.mark.parametrize("state, identities, kept, says", [
    ({"identities": ["a"], "epoch": 1}, ["a"], True, "after epoch 2"),
    ({"identities": ["a"], "epoch": 1, "partial_epoch": {"batches": 6}}, ["a"], True, "after step 6 of epoch 3"),
    ({"identities": ["a"], "epoch": -1, "partial_epoch": {"batches": 2}}, ["a"], True, "after step 2 of epoch 1"),
    ({"identities": ["a"], "epoch": 4}, ["a"], False, "belongs to a finished run"),
    ({"identities": ["b"], "epoch": 1}, ["a"], False, "another configuration"),
    ({"identities": ["a", "b"], "epoch": 1}, ["a", "b"], True, "after epoch 2"),
    ({"identities": ["a", "c"], "epoch": 1}, ["a", "b"], False, "another configuration or group"),
    ({"epoch": 1}, ["a"], False, "not a readable checkpoint"),
], ids=["mid-run", "mid-epoch", "first-epoch", "finished", "other-config", "group", "other-group", "foreign"])
def test_a_checkpoint_is_kept_only_to_resume_the_same_unfinished_runs(tmp_path, state, identities, kept,
                                                                       says) -> None:
    path = write(tmp_path / "checkpoint.pt", **state)
    message = resume_or_restart(path, identities, epochs=5)
    assert path.exists() == kept
    assert message.startswith("resuming from" if kept else "starting afresh") and says in message


def test_a_damaged_or_missing_checkpoint_means_starting_afresh(tmp_path) -> None:
    assert resume_or_restart(tmp_path / "none.pt", ["a"], epochs=5) == "starting afresh: no checkpoint"
    damaged = tmp_path / "checkpoint.pt"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    assert "not a readable checkpoint" in resume_or_restart(damaged, ["a"], epochs=5)
    assert not damaged.exists()
