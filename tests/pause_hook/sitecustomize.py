"""Test helper: pause a training process at a known point, so that a test can kill it there without racing it.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that holds one; a test puts
this folder on ``PYTHONPATH`` of the processes it starts (and of their children: Snakemake's jobs) and sets

* ``CHT_TEST_PAUSE``: ``first_step`` (after the first optimiser step: inside the first epoch, before any
  checkpoint) or ``first_checkpoint`` (right after the checkpoint of the first finished epoch is saved);
* ``CHT_TEST_PAUSE_DIR``: a folder where the paused process then writes a file ``<point>-<pid>`` (whole or not
  at all) before it sleeps until it is killed. SIGTERM ends it again (training itself defers SIGTERM to a step
  boundary that a paused run never reaches), and after ``MAX_PAUSE_S`` it ends itself, so that a test that
  died before killing it leaves nothing behind for long.

Without both variables nothing is changed. Only the module that holds the point is patched, once it is
imported (``cht.train`` steps a run, ``cht.run.lifecycle`` saves its checkpoints): the processes that never
import it (Snakemake itself) are left alone.
"""

import importlib.abc
import importlib.machinery
import os
import signal
import sys
import time
from pathlib import Path

POINT = os.environ.get("CHT_TEST_PAUSE")
FOLDER = os.environ.get("CHT_TEST_PAUSE_DIR")


MAX_PAUSE_S = 900


def pause(point: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    marker = Path(FOLDER) / f"{point}-{os.getpid()}"
    partial = marker.with_name(f".{marker.name}.partial")
    partial.write_text(str(os.getpid()))
    partial.rename(marker)
    time.sleep(MAX_PAUSE_S)
    os._exit(75)


def patch(module) -> None:
    if POINT == "first_step":
        step = module.after_optimizer_step

        def after_optimizer_step(*args, **kwargs):
            step(*args, **kwargs)
            pause(POINT)

        module.after_optimizer_step = after_optimizer_step
    elif POINT == "first_checkpoint":
        save = module.save_checkpoint

        def save_checkpoint(path, state, *args, **kwargs):
            save(path, state, *args, **kwargs)
            if state.get("epoch", -1) >= 0 and state.get("partial_epoch") is None:
                pause(POINT)

        module.save_checkpoint = save_checkpoint
    else:
        raise ValueError(f"CHT_TEST_PAUSE={POINT!r}: expected first_step or first_checkpoint")


#: the module that calls the function a point wraps
MODULES = {"first_step": "cht.train", "first_checkpoint": "cht.run.lifecycle"}


class PatchTrainingOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULES.get(POINT):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def execute_then_patch(module) -> None:
            execute(module)
            patch(module)

        spec.loader.exec_module = execute_then_patch
        return spec


if POINT and FOLDER:
    sys.meta_path.insert(0, PatchTrainingOnImport())
