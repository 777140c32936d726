"""The authors' C++ CH scorer, built from a checkout of their repository, for side-by-side timing.

Their repository (github.com/biomedical-cybernetics/Cannistraci-Hebb-training, e.g. commit d1677b5)
holds ``setup.py``, ``bindings.cpp`` and ``CH_scores_new_v2.{cpp,h}``: a pybind11 extension
compiled with ``-fopenmp``. :func:`load` builds it with their ``setup.py`` out of tree, into
``bench/.authors-build/`` (git-ignored, one folder per source version), and imports it. Nothing of
theirs is copied into this repository. Building needs a C++ compiler and ``pybind11``
(``pip install pybind11``).

:func:`scores` calls it the way their ``mlp_and_cnn/dst_scheduler.py`` does for CH3-L3: the layer
becomes the dense monopartite adjacency of both sides, then ``CH_scores_new_v2(ir, jc, N, [3], 1, 3,
[3], 1)`` on its CSR, and the input-output block of the result. Their scorer runs on OpenMP's
thread count, which is torch's (both use the same OpenMP runtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from scipy.sparse import csr_matrix

SOURCES = ("setup.py", "bindings.cpp", "CH_scores_new_v2.cpp", "CH_scores_new_v2.h")
BUILD_ROOT = Path(__file__).parent / ".authors-build"
CH3_MODEL = 3  # their code for CH3 in ``models``; [3] is the L3 path length


def load(checkout: Path) -> ModuleType | str:
    """The built ``CH_scores`` module, or a sentence saying why it is not available."""
    missing = [name for name in SOURCES if not (checkout / name).is_file()]
    if missing:
        return f"{checkout} is not a checkout of the authors' repository (missing {', '.join(missing)})"
    if importlib.util.find_spec("pybind11") is None:
        return "building the authors' scorer needs pybind11: pip install pybind11"
    digest = hashlib.sha256(b"".join((checkout / name).read_bytes() for name in SOURCES)).hexdigest()[:16]
    build = BUILD_ROOT / digest
    if not list(build.glob("CH_scores*.so")):
        command = [sys.executable, "setup.py", "build_ext", "--build-lib", str(build.resolve()),
                   "--build-temp", str((build / "temp").resolve())]
        completed = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
        if completed.returncode != 0:
            return f"building the authors' scorer failed:\n{completed.stderr[-2000:]}"
    spec = importlib.util.spec_from_file_location("CH_scores", next(build.glob("CH_scores*.so")))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(module: ModuleType, mask: torch.Tensor) -> tuple[np.ndarray, float]:
    """CH3-L3 scores of the layer ``mask`` (n_in, n_out) as their code computes them (float64, links
    included), and the seconds spent inside their scorer call alone."""
    layer = mask.numpy()
    n_in, n_out = layer.shape
    monopartite = np.zeros((n_in + n_out, n_in + n_out))
    monopartite[:n_in, n_in:] = layer
    monopartite[n_in:, :n_in] = layer.T
    adjacency = csr_matrix(monopartite)
    with _quiet_stdout():  # their scorer prints its own timings
        start = time.perf_counter()
        result = module.CH_scores_new_v2(adjacency.indices, adjacency.indptr, n_in + n_out, [3], 1, 3, [CH3_MODEL], 1)
        seconds = time.perf_counter() - start
    return np.asarray(result).reshape(n_in + n_out, n_in + n_out)[:n_in, n_in:], seconds


@contextlib.contextmanager
def _quiet_stdout():
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
