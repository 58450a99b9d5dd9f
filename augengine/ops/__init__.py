"""Ultrasound ops: one pure, array-module generic function per op (NumPy reference, CuPy kernels).

NumPy in -> NumPy out; CuPy in -> CuPy out where a GPU path exists.
"""
from augengine.ops.reconstruction import bmode, envelope, log_compress
from augengine.ops.geometry import (
    flip,
    resize,
    roi_box,
    rotate,
    rotate90,
    scale,
    scan_convert,
    translate,
)
from augengine.ops.quality import gaussian_blur, jpeg
from augengine.ops.despeckle import srad, srad_bmode, srad_series, srad_series_bmode

__all__ = [
    "bmode",
    "envelope",
    "flip",
    "gaussian_blur",
    "jpeg",
    "log_compress",
    "resize",
    "roi_box",
    "rotate",
    "rotate90",
    "scale",
    "scan_convert",
    "srad",
    "srad_bmode",
    "srad_series",
    "srad_series_bmode",
    "translate",
]
