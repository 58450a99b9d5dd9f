"""Ultrasound ops: one pure, array-module generic function per op (NumPy reference, CuPy kernels).

NumPy in -> NumPy out; CuPy in -> CuPy out where a GPU path exists.
"""
from augengine.ops.reconstruction import (bmode, compress_envelope, envelope, envelope_peaks,
                                         log_compress)
from augengine.ops.reconstruction import compress_envelope_batch, peaks_error
from augengine.ops.geometry import (
    affine_batch,
    flip,
    flip_batch,
    resize,
    resize_many,
    roi_box,
    rotate,
    rotate90,
    rotate90_batch,
    rotate_batch,
    scale,
    scale_batch,
    scan_convert,
    scan_convert_many,
    translate,
    translate_batch,
)
from augengine.ops.quality import gaussian_blur, gaussian_blur_batch, jpeg, jpeg_batch
from augengine.ops.despeckle import (srad, srad_bmode, srad_series, srad_series_bmode,
                                     srad_series_bmode_pick)

__all__ = [
    "affine_batch",
    "bmode",
    "compress_envelope",
    "compress_envelope_batch",
    "envelope",
    "envelope_peaks",
    "flip",
    "flip_batch",
    "gaussian_blur",
    "gaussian_blur_batch",
    "jpeg",
    "jpeg_batch",
    "log_compress",
    "peaks_error",
    "resize",
    "resize_many",
    "roi_box",
    "rotate",
    "rotate90",
    "rotate90_batch",
    "rotate_batch",
    "scale",
    "scale_batch",
    "scan_convert",
    "scan_convert_many",
    "srad",
    "srad_bmode",
    "srad_series",
    "srad_series_bmode",
    "srad_series_bmode_pick",
    "translate",
    "translate_batch",
]
