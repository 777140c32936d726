"""Whether a job resumes from the checkpoint it finds or starts afresh: one decision for single and grouped runs.

A workflow manager reruns a job whose outputs are missing or older than its inputs; the checkpoint the last
attempt left may then be one to resume (an interrupted run of this very configuration) or one to remove (a
finished run that is being redone, another configuration or group, a damaged file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cht.io import CheckpointError, load_tensors


def resume_or_restart(checkpoint: Path, identities: Sequence[str], epochs: int) -> str:
    """Keep ``checkpoint`` when it resumes the runs of ``identities`` (single run: one identity) before their
    last epoch; otherwise delete it. Returns a line saying which, for the job's log."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        return "starting afresh: no checkpoint"
    try:
        state = load_tensors(checkpoint)
        if not isinstance(state, dict):
            raise TypeError("not a mapping")
        if state["identities"] != list(identities):
            reason = "it was written by another configuration" + (" or group" if len(identities) > 1 else "")
        elif state["epoch"] + 1 >= epochs:
            reason = "it belongs to a finished run"
        else:
            return f"resuming from {checkpoint} {_position(state)}"
    except (CheckpointError, KeyError, TypeError) as error:
        reason = f"it is not a readable checkpoint ({error})"
    checkpoint.unlink()
    return f"starting afresh: {checkpoint}: {reason}"


def _position(state: dict[str, Any]) -> str:
    partial = state.get("partial_epoch")
    if partial:
        return f"after step {partial['batches']} of epoch {state['epoch'] + 2}"
    return f"after epoch {state['epoch'] + 1}"
