"""What a run knows of processes: whether the one that wrote a record still lives, and the signals that
stop it.

* **Liveness.** A run records its host, pid and the pid's start time (:func:`process_tags`); a later run
  tells from them whether a run left RUNNING lost its process (:func:`process_alive`).
* **Interrupts.** :class:`InterruptWatch` remembers that SIGINT or SIGTERM arrived, so that a pipeline's
  record closes KILLED rather than FAILED.
* **Stopping at a step boundary.** SLURM sends SIGTERM before it kills a job at its time limit or on
  preemption (``scancel --signal=TERM`` does the same by hand), then SIGKILL after ``KillWait`` seconds
  (30 by default). A training loop that holds a :class:`StopSignal` checks it after every optimiser step: at
  the next step boundary it writes a checkpoint holding the part of the epoch done so far, closes its mlflow
  run as KILLED and raises :class:`TrainingStopped`. The next attempt (a Snakemake retry, or the same
  command again) resumes at that step, and ends with the same result as a run that was never stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

# The exit status of a stopped training: sysexits.h's EX_TEMPFAIL ("try again later"), the status a
# scheduler or a wrapper script should treat as worth a retry.
RETRY_EXIT_STATUS = 75


class TrainingStopped(KeyboardInterrupt):
    """A training stopped on request at a step boundary, its checkpoint written.

    A ``KeyboardInterrupt``, so that everything that treats Ctrl-C as an interruption (the mlflow run
    ends KILLED, not FAILED) treats this alike.
    """

    exit_status = RETRY_EXIT_STATUS


class StopSignal:
    """While entered, SIGTERM sets :attr:`received` instead of ending the process.

    Outside the main thread (where Python cannot install handlers) it never fires. The handler in place
    before is restored on exit, so a SIGTERM after the training loop behaves as it did before it.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.received = False
        self._previous: Any = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def describe(self) -> str:
        return signal.Signals(self.signum).name


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or ``""`` where unknown.

    Together with the pid it names a process even after the pid is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str) -> bool:
    """Whether process ``pid`` that started at ``started`` (:func:`process_start`) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc: the pid answering is all we know
    return fields[0] != "Z" and (not started or fields[19] == started)


def process_tags() -> dict[str, str]:
    """Where this process runs, so that a later run can tell whether it died."""
    pid = os.getpid()
    return {"cht.host": socket.gethostname(), "cht.pid": str(pid), "cht.pid_started": process_start(pid)}


class InterruptWatch:
    """Remembers whether SIGINT or SIGTERM arrived, handing each on to the handler installed before.

    The pipeline's error hook uses it to close its run as KILLED (interrupted) rather than FAILED.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.received: int | None = None
        for signum in signals:
            previous = signal.getsignal(signum)
            signal.signal(signum, lambda number, frame, previous=previous: self._handle(previous, number, frame))

    def _handle(self, previous: Any, signum: int, frame: Any) -> None:
        self.received = signum
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    @property
    def interrupted(self) -> bool:
        return self.received is not None
