"""DICOM B-mode images (single- or multi-frame) via pydicom.

Supported photometric interpretations: ``MONOCHROME2``, ``MONOCHROME1`` (inverted after the
grey mapping below: ``255 - grey``), ``RGB``, ``YBR_FULL`` and ``YBR_FULL_422`` (pydicom decodes
both to RGB). Pixels become grey uint8 by :func:`to_gray_uint8` (BT.601 luma for colour; levels
mapped linearly from ``[0, 2**BitsStored - 1]``, signed data first shifted by
``2**(BitsStored - 1)``). Compressed transfer syntaxes need the pydicom decoder plugins that
support them; without one the file fails with a one-line ``InputError``.

Pixel spacing ``meta["spacing_mm"] = (row_mm, col_mm)`` comes from the first region of the
Sequence of Ultrasound Regions whose physical units are cm in both directions
(``PhysicalDeltaY``, ``PhysicalDeltaX`` times 10), else from ``PixelSpacing`` (mm), else None.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from augengine.errors import InputError
from augengine.sources._cache import cached_per_file
from augengine.sources._image import to_gray_uint8
from augengine.sources._sample import LABELS, Sample, SampleRef
from augengine.sources.validate import parse_label, validate_sample, where

SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")
#: PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15).
_UNITS_CM = 3

__all__ = ["discover_dicom", "load_dicom", "read_dicom"]


def read_dicom(path_or_dir, label=None) -> list[Sample]:
    """Read DICOM images: one sample per frame.

    Parameters
    ----------
    path_or_dir : str or Path
        A DICOM file, or a directory searched recursively for ``*.dcm``, ``*.dicom`` and
        extension-less files (``DICOMDIR`` and hidden files are skipped).
    label : int or str, optional
        Label of every image (0/1/2 or ``"benign"``/``"malignant"``/``"normal"``). By default
        the nearest parent folder named ``benign``, ``malignant`` or ``normal`` gives it.

    Returns
    -------
    list of Sample
        ``sample_id`` is the file's path relative to the directory (or its stem) without
        suffix, plus ``/frame0003`` for the frames of a multi-frame file, whose frames share
        ``source_id``. ``image`` (H, W) uint8, ``roi = None``, ``meta`` with ``path``,
        ``frame``, ``photometric_interpretation`` and ``spacing_mm``.

    Raises
    ------
    InputError
        No label given or derivable, not a DICOM file, no or undecodable pixel data,
        unsupported photometric interpretation; the message names the file.

    Example
    -------
    >>> samples = read_dicom("scans/", label="benign")               # doctest: +SKIP
    >>> samples[0].meta["spacing_mm"]                                # doctest: +SKIP
    (0.1, 0.1)
    """
    return [load_dicom(ref) for ref in discover_dicom(path_or_dir, label=label)]


def discover_dicom(path_or_dir, label=None) -> list[SampleRef]:
    """List DICOM frames from the headers only (pixel data is not read).

    A file whose header cannot be read is listed as one ref; its ``load_sample`` raises.
    """
    root = Path(path_or_dir).absolute()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and _looks_like_dicom(p))
        if not files:
            raise InputError(f"{root}: directory holds no DICOM files (*.dcm, *.dicom)")
        base_ids = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    elif root.is_file():
        files, base_ids = [root], [root.stem]
    else:
        raise InputError(f"{root}: no such file or directory")
    refs = []
    for file, base_id in zip(files, base_ids, strict=True):
        code = _label(file, label)
        frames = _frame_count(file)
        for frame in range(frames or 1):
            sample_id = f"{base_id}/frame{frame:04d}" if frames and frames > 1 else base_id
            refs.append(SampleRef(reader="dicom", path=str(file), key=json.dumps({"frame": frame}),
                                  sample_id=sample_id, source_id=base_id, label=code,
                                  has_roi=False))
    return refs


def load_dicom(ref: SampleRef) -> Sample:
    """Decode one frame of a :func:`discover_dicom` ref (the last file's pixels stay cached)."""
    frame = json.loads(ref.key)["frame"]
    at = where(ref.path, ref.sample_id)
    pixels, info = _read_pixels(ref.path, at)
    if info["frames"] > 1:
        if frame >= pixels.shape[0]:
            raise InputError(f"{at}: frame {frame} does not exist ({pixels.shape[0]} frames)")
        pixels = pixels[frame]
    image = to_gray_uint8(pixels, info["max_value"], at)
    if info["photometric"] == "MONOCHROME1":
        image = 255 - image
    meta = {"path": str(ref.path), "frame": frame, "photometric_interpretation":
            info["photometric"], "spacing_mm": info["spacing_mm"]}
    return validate_sample(Sample(sample_id=ref.sample_id, source_id=ref.source_id,
                                  label=ref.label, image=image, meta=meta))


def _looks_like_dicom(path: Path) -> bool:
    return (not path.name.startswith(".") and path.name.upper() != "DICOMDIR"
            and path.suffix.lower() in (".dcm", ".dicom", ""))


def _label(file: Path, label) -> int:
    if label is not None:
        return parse_label(label, str(file))
    for parent in file.parents:
        if parent.name.lower() in LABELS:
            return LABELS[parent.name.lower()]
    raise InputError(f"{file}: no label; pass label= (benign, malignant, normal) or put the "
                     f"file under a benign/, malignant/ or normal/ folder")


def _frame_count(file: Path) -> int | None:
    try:
        header = pydicom.dcmread(file, stop_before_pixels=True)
        return int(header.get("NumberOfFrames", 1) or 1)
    except Exception:  # listed anyway; load_dicom reports why this file cannot be read
        return None


@cached_per_file
def _read_pixels(path: str) -> tuple[np.ndarray, dict]:
    """All frames' raw pixels and how to map them, for the last DICOM file read."""
    # Messages name the file only, because every frame of it shares this cache entry.
    at = path
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise InputError(f"{at}: not a DICOM file (no 'DICM' marker after the 128-byte "
                         f"preamble)") from None
    except Exception as error:  # truncated/damaged files raise many types
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{at}: cannot read as DICOM ({reason})") from None
    if "PixelData" not in ds:
        raise InputError(f"{at}: DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise InputError(f"{at}: unsupported photometric interpretation {photometric!r}; "
                         f"supported: {', '.join(SUPPORTED_PHOTOMETRIC)}")
    try:
        pixels = ds.pixel_array
    except Exception as error:  # missing decoder plugin, short pixel data, bad attributes
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{at}: cannot decode pixel data ({reason})") from None
    bits = int(ds.get("BitsStored", pixels.dtype.itemsize * 8))
    if bits > 16:
        raise InputError(f"{at}: {bits}-bit pixels are not supported (at most 16)")
    if int(ds.get("PixelRepresentation", 0)) == 1:
        pixels = pixels.astype(np.int32) + 2 ** (bits - 1)
    info = {"frames": int(ds.get("NumberOfFrames", 1) or 1), "photometric": photometric,
            "max_value": 2 ** bits - 1, "spacing_mm": _spacing_mm(ds)}
    return pixels, info


def _spacing_mm(ds) -> tuple[float, float] | None:
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        units = (region.get("PhysicalUnitsYDirection"), region.get("PhysicalUnitsXDirection"))
        deltas = (region.get("PhysicalDeltaY"), region.get("PhysicalDeltaX"))
        if units == (_UNITS_CM, _UNITS_CM) and None not in deltas:
            return abs(float(deltas[0])) * 10.0, abs(float(deltas[1])) * 10.0
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        return float(spacing[0]), float(spacing[1])
    return None
