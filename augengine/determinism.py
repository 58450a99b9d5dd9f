"""Reproducible style-transfer bytes on a GPU: a scope with torch's determinism switches on, and
batches of one fixed shape.

On a CPU the same software gives the same bytes. On a GPU four things can change them from one
run to the next: cuDNN's choice of convolution algorithm (``cudnn.benchmark`` times candidates
per run, and some algorithms add partial sums with atomics), TensorFloat-32 (TF32) rounding of
float32 convolutions and matmuls, float atomics in other ops (threads adding into one address in
whatever order they arrive), and the batch shape, which steers the algorithm choice: a shard's
last batch is usually smaller than the others. :func:`deterministic_torch` removes the first
three where torch can, :class:`Batches` the fourth. The project's own float atomics are gone
(histogram matching counts with integers, ``augengine.nst.histogram``). The TF32 switch is
:func:`augengine.precision.full_float32`, the one LRP uses.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from augengine.precision import full_float32

__all__ = ["CUBLAS_WORKSPACE_CONFIG", "Batches", "deterministic_torch", "fix_cublas_workspace",
           "pad_rows"]

#: cuBLAS (CUDA >= 10.2) is only run to run reproducible with a fixed workspace layout, and torch
#: refuses cuBLAS calls in deterministic mode unless ``CUBLAS_WORKSPACE_CONFIG`` is ``:4096:8`` or
#: ``:16:8`` (the smaller one saves memory and costs speed).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def fix_cublas_workspace() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for this process unless the user chose one.

    The workspace layout is read when CUDA and cuBLAS start in the process, so a setting made
    after the first GPU call may not take effect: call this before (a Ray actor, at its start).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


@contextmanager
def deterministic_torch(enabled: bool = True):
    """Run the block with torch's deterministic algorithms, deterministic cuDNN without
    benchmarking, and TF32 off (:func:`augengine.precision.full_float32`); every setting comes
    back on exit, also after an exception. ``enabled=False`` changes nothing (a job with
    ``deterministic: false``).

    ``torch.use_deterministic_algorithms(True)`` (``warn_only=False``) makes the ops that have a
    deterministic implementation use it (cuDNN convolutions, ``scatter_add_``, ``index_add`` on
    CUDA, ...) and makes the ones without one raise, so a GPU run fails loudly instead of writing
    bytes that a rerun would not reproduce. Also calls :func:`fix_cublas_workspace`, which only
    takes effect before the process's first GPU call. The flags are process-wide, so other
    threads see them meanwhile. On a CPU (no cuDNN, no TF32) only torch's deterministic mode
    acts, on the few CPU ops it lists.

    Example
    -------
    >>> import torch
    >>> with deterministic_torch():
    ...     torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    (True, False)
    >>> torch.are_deterministic_algorithms_enabled()
    False
    """
    if not enabled:
        yield
        return
    fix_cublas_workspace()
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(True, warn_only=False)
        cudnn.deterministic, cudnn.benchmark = True, False
        with full_float32():
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` with its last entry repeated up to ``size`` entries: a batch of a fixed shape.

    A GPU library may pick another algorithm, and so another rounding, for another batch size;
    padding every batch of a shard to the same size makes the last one run like the others. The
    repeats are computed and thrown away (their rows are the real last row again).

    Example
    -------
    >>> pad_rows(np.array([7, 8]), 4).tolist()
    [7, 8, 8, 8]
    """
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows))])


class Batches:
    """How ``count`` rows are cut into batches of ``size``, and which rows each batch runs on:
    the batch itself, or with ``fixed`` the batch padded to ``size`` by :func:`pad_rows`. The
    caller keeps the first ``len(rows)`` results of a padded batch.

    Example
    -------
    >>> batches = Batches(4, fixed=True)
    >>> [(rows.tolist(), batches.run(rows).tolist()) for rows in batches.split(6)]
    [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5], [4, 5, 5, 5])]
    """

    def __init__(self, size: int, fixed: bool):
        self.size, self.fixed = size, fixed

    def split(self, count: int) -> Iterator[np.ndarray]:
        for start in range(0, count, self.size):
            yield np.arange(start, min(start + self.size, count))

    def run(self, rows: np.ndarray) -> np.ndarray:
        return pad_rows(rows, self.size) if self.fixed else rows
