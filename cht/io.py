"""Files a rerun trusts: atomic, durable writes and checkpoints that load without running code.

Every file that a later run reads back (checkpoints, metrics, masks, verification records, caches) goes
through :func:`write_atomic`: the bytes land in a temporary file beside the target, are flushed to disk,
and only then renamed over it, and the rename itself is flushed by syncing the folder. A crash, a kill or a
full disk therefore leaves either the old file or the new one, never a torn one, and no temporary file.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a results folder or a shared store may hold
a planted file, and unpickling it would run arbitrary code. :func:`save_checkpoint` refuses state that
would not load that way, so the restriction cannot be broken by accident when a field is added.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

PathLike = str | os.PathLike[str]

#: Values a checkpoint may hold besides tensors (exact types: numpy scalars subclass float but do not load):
#: what ``torch.load(weights_only=True)`` reconstructs without unpickling code.
SAFE_LEAVES = (torch.Size, torch.dtype, torch.device, str, bytes, int, float, bool, type(None))

_FIXES = {
    errno.ENOSPC: "no space left on device; free space there or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free space there or write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
    errno.ENOTDIR: "a parent of it is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; choose a file path",
    errno.EEXIST: "a file of that name is in the way of a folder; choose another path",
}


class OutputError(OSError):
    """A file could not be written; the message names it and says how to fix it (``errno`` is the cause's)."""

    def __init__(self, message: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.errno = cause.errno if cause is not None else None


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, foreign, or of another configuration; the message names the file."""


def describe_os_error(error: OSError, path: PathLike) -> str:
    """``cannot write <path>: <cause and fix>`` for an error raised while writing ``path``."""
    cause = _FIXES.get(error.errno or 0, error.strerror or str(error))
    return f"cannot write {path}: {cause}"


def write_atomic(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` with what ``write`` writes into the binary stream it is given, all or nothing.

    The temporary file is unique (parallel writers never share one), fsynced before the rename, and removed
    on any failure; the folder is fsynced after the rename so the new name survives a power cut. Errors of
    the file system (full disk, read-only folder, a file where a folder should be) raise
    :class:`OutputError` naming ``path``; anything else ``write`` raises passes through unchanged.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        try:
            with open(temporary, "xb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        sync_folder(path.parent)
    except OutputError:
        raise
    except (OSError, RuntimeError) as error:  # torch.save may wrap the disk's error in a RuntimeError
        cause = _os_error_in(error)
        if cause is None or cause.errno not in _FIXES:  # not the disk's doing (e.g. a damaged input stream)
            raise
        raise OutputError(describe_os_error(cause, path), cause) from error


def write_text_atomic(path: PathLike, text: str) -> None:
    """:func:`write_atomic` for UTF-8 text."""
    write_atomic(path, lambda stream: stream.write(text.encode()))


def save_tensors_atomic(path: PathLike, value: Any) -> None:
    """``torch.save`` through :func:`write_atomic`, refusing values ``load_tensors`` could not read back."""
    check_safe(value, str(path))
    write_atomic(path, lambda stream: torch.save(value, stream))


def load_tensors(path: PathLike, map_location: str | torch.device | None = None) -> Any:
    """``torch.load`` that never unpickles code; an unreadable file raises :class:`CheckpointError`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(f"{path} is not a torch file (truncated, or of another format); delete it")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} holds objects other than tensors and plain values (refused: loading it "
                              f"could run code); delete it if you did not write it. ({_first_line(error)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(f"{path} is not a readable torch file (truncated, or of another format): "
                              f"{_first_line(error)}; delete it") from None


def ensure_folder(folder: PathLike, option: str) -> list[Path]:
    """Create ``folder`` (and missing parents) and check that files can be written in it.

    Returns the folders created, deepest last, for :func:`remove_empty_folders` to undo when the work
    fails. Raises :class:`OutputError` naming the folder and ``option`` (the setting that chose it).
    """
    folder = Path(folder)
    missing = _missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        remove_empty_folders([path for path in missing if path.is_dir()])
        raise OutputError(f"{describe_os_error(error, folder)} (set by {option})", error) from error
    return missing


def make_folders(folder: PathLike) -> list[Path]:
    """``mkdir -p``, returning the folders it created (deepest last) for :func:`remove_empty_folders`."""
    folder = Path(folder)
    missing = _missing_folders(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _missing_folders(folder: Path) -> list[Path]:
    return [parent for parent in [folder, *folder.parents] if not parent.exists()][::-1]


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders of :func:`ensure_folder` again, deepest first, where nothing was written in them."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (a checkpoint to resume from), or already gone
            return


def sync_folder(folder: PathLike) -> None:
    """fsync a folder, so the names created in it (renames included) are on disk."""
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_safe(value: Any, where: str) -> None:
    """Raise TypeError when ``value`` holds anything ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, dict):  # OrderedDict (state dicts) included
        for key, item in value.items():
            check_safe(key, where)
            check_safe(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            check_safe(item, f"{where}[{index}]")
    elif not (isinstance(value, torch.Tensor) or type(value) in SAFE_LEAVES):
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint (it would not load "
                        f"with weights_only=True); store tensors, numbers, strings, lists or dicts")


# --- checkpoints -----------------------------------------------------------------------------------------------

def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Atomically write a training checkpoint; ``state`` must carry the ``identities`` (the configurations'
    hashes) of the runs it holds."""
    if not isinstance(state.get("identities"), list):
        raise ValueError("a checkpoint's state needs the 'identities' of the configurations that wrote it")
    save_tensors_atomic(path, dict(state))


def load_checkpoint(path: PathLike, expected_identities: list[str],
                    map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` for the runs of ``expected_identities``.

    Tensors load on the CPU by default: generator states must stay there, and ``load_state_dict`` of
    models and optimisers copies the rest onto their own device.

    Never runs code from the file. A garbage, foreign or other-configuration file raises
    :class:`CheckpointError` naming it and saying what to do.
    """
    path = Path(path)
    state = load_tensors(path, map_location)
    if isinstance(state, dict) and isinstance(state.get("identity"), str):
        raise CheckpointError(f"{path} was written by an earlier version of cht, whose checkpoints this one "
                              f"cannot continue; delete it to start afresh")
    if not isinstance(state, dict) or not isinstance(state.get("identities"), list):
        raise CheckpointError(f"{path} is not a cht training checkpoint; delete it or choose another output "
                              f"folder")
    if state["identities"] != list(expected_identities):
        raise CheckpointError(f"{path} was written by a different configuration or group of runs (identities "
                              f"{state['identities']}, these runs {list(expected_identities)}); delete it to "
                              f"start afresh, or choose another output folder")
    return state


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The first OSError in ``error``'s chain of contexts."""
    while error is not None and not isinstance(error, OSError):
        error = error.__context__
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
