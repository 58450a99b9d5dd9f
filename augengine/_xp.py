"""Array-module dispatch: NumPy in -> NumPy out, CuPy in -> CuPy out."""
from __future__ import annotations

import numpy as np


def get_array_module(array):
    """Return ``cupy`` for CuPy arrays, ``numpy`` otherwise (CuPy need not be installed)."""
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy

        return cupy
    return np


def is_cupy(array) -> bool:
    return type(array).__module__.startswith("cupy")
