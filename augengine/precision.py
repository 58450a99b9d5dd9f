"""Full float32 arithmetic on GPUs: a scope with TensorFloat-32 (TF32) turned off.

On Ampere and later GPUs cuDNN runs float32 convolutions in TF32 by default (10-bit mantissa,
relative rounding about 5e-4 per product, against 6e-8 for float32); cuBLAS matmuls follow
``torch.backends.cuda.matmul``. That is fine for training, not for LRP: its rules divide by sums
of contributions (``R_out / z``), so TF32 error in ``z`` is amplified where ``z`` is small, and a
GPU heatmap would differ from the CPU one far beyond float32 rounding. CPUs never use TF32.

torch >= 2.9 sets TF32 per backend with ``fp32_precision`` strings ("ieee" = full float32,
"tf32", "none" = inherit); older torch has the ``allow_tf32`` booleans. torch 2.9+ raises when a
program reads the legacy flags after setting the new ones inconsistently, so
:func:`full_float32` uses exactly one of the two APIs: the new one where it exists.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["full_float32", "tf32_switches"]


def tf32_switches(backends=torch.backends) -> list[tuple[object, str, object]]:
    """The TF32 switches of this torch as ``(object, attribute, value for full float32)``.

    Parameters
    ----------
    backends : module
        ``torch.backends`` (a stand-in in tests).

    Returns
    -------
    list of (object, str, str or bool)
        torch >= 2.9: cuDNN convolutions and cuBLAS matmuls, each ``fp32_precision = "ieee"``;
        older torch: ``cudnn.allow_tf32`` and ``cuda.matmul.allow_tf32``, each False.

    Example
    -------
    >>> [(name, value) for _, name, value in tf32_switches()]
    [('fp32_precision', 'ieee'), ('fp32_precision', 'ieee')]
    """
    cudnn, matmul = backends.cudnn, backends.cuda.matmul
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        return [(cudnn.conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]
    return [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextmanager
def full_float32():
    """Run the block with TF32 off for cuDNN convolutions and cuBLAS matmuls; the previous
    settings come back on exit (also on an exception). Process-wide flags: other threads see them
    meanwhile. On torch >= 2.9 the block must not read the legacy ``allow_tf32`` flags (torch
    refuses to read them while the new ones disagree); after the block they read as before.

    Also usable as a decorator. Costs speed on Ampere/Hopper (float32 convolutions at the
    non-tensor-core rate), changes nothing on CPUs or for float64.

    Example
    -------
    >>> import torch
    >>> with full_float32():
    ...     torch.backends.cudnn.conv.fp32_precision
    'ieee'
    >>> torch.backends.cudnn.conv.fp32_precision
    'tf32'
    """
    switches = tf32_switches()
    saved = [getattr(owner, name) for owner, name, _ in switches]
    try:
        for owner, name, value in switches:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)
