"""Phase timings that stay truthful on CUDA, where kernels run asynchronously."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` so a wall-clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(timings: dict[str, float], phase: str, device: torch.device) -> Iterator[None]:
    """Add the seconds spent in the ``with`` body to ``timings[phase]`` (accumulating over layers)."""
    synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
