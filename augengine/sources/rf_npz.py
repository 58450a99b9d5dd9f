"""One RF scan per NumPy ``.npz`` file: the simplest way to bring RF from any scanner.

Members (``numpy.savez``; scalars as 0-d arrays):

==============  ========  ===================================================================
``rf``          required  (depth samples, lines), time along axis 0, real integers or floats
``fs_hz``       required  sampling frequency, Hz
``label``       required  0/1/2 or ``"benign"``/``"malignant"``/``"normal"``
``roi``         optional  lesion mask, 0/1 or bool, same shape as ``rf``
``c_m_s``       optional  speed of sound, m/s (default 1540, soft tissue)
``pitch_m``     optional  line pitch, m (default: unknown, ``None``)
``fc_hz``       optional  centre frequency, Hz (default: unknown, ``None``)
``sample_id``   optional  default: the file stem
``source_id``   optional  default: ``sample_id``
==============  ========  ===================================================================
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from augengine.errors import InputError
from augengine.sources._sample import Sample, SampleRef
from augengine.sources.validate import (UNKNOWN_LABEL, as_roi, check_rf, parse_label,
                                        validate_sample, where)

#: Speed of sound assumed when a file does not give ``c_m_s`` (soft tissue, m/s).
DEFAULT_C_M_S = 1540.0

__all__ = ["discover_rf_npz", "load_rf_npz", "read_rf_npz"]


def read_rf_npz(path) -> list[Sample]:
    """Read one ``.npz`` RF scan, or every ``*.npz`` of a directory (sorted by name).

    Parameters
    ----------
    path : str or Path
        A ``.npz`` file with the members in the module docstring, or a directory of them.

    Returns
    -------
    list of Sample
        One per file: ``rf`` as stored, ``roi`` bool or None, ``meta`` with ``fs_hz``,
        ``fc_hz``, ``c_m_s``, ``pitch_m`` and ``path``.

    Raises
    ------
    InputError
        Unreadable/truncated file, missing ``rf``, ``fs_hz`` or ``label``, bad RF (dtype, rank,
        NaN/Inf, all zeros), ROI shape mismatch; the message names the file.

    Example
    -------
    >>> np.savez("scan.npz", rf=rf, fs_hz=40e6, label=0)             # doctest: +SKIP
    >>> read_rf_npz("scan.npz")[0].meta["fs_hz"]                     # doctest: +SKIP
    40000000.0
    """
    return [load_rf_npz(ref) for ref in discover_rf_npz(path)]


def discover_rf_npz(path) -> list[SampleRef]:
    """List ``.npz`` scans (one file, or a directory's ``*.npz``), reading only the small members.

    A file whose label or ids cannot be read is still listed (``label = UNKNOWN_LABEL``); its
    ``load_sample`` raises the reason.
    """
    root = Path(path).absolute()
    if root.is_dir():
        files = sorted(p for p in root.glob("*.npz") if p.is_file())
        if not files:
            raise InputError(f"{root}: directory holds no .npz files")
    elif root.is_file():
        files = [root]
    else:
        raise InputError(f"{root}: no such file or directory")
    return [_ref(file) for file in files]


def load_rf_npz(ref: SampleRef) -> Sample:
    """Load and validate the scan of one :func:`discover_rf_npz` ref."""
    with _open(ref.path) as members:
        at = where(ref.path, ref.sample_id)
        if "rf" not in members:
            raise InputError(f"{at}: no 'rf' array in the file (members: {_names(members)})")
        if "fs_hz" not in members:
            raise InputError(f"{at}: missing sampling frequency 'fs_hz'")
        if "label" not in members:
            raise InputError(f"{at}: missing 'label' (0 benign, 1 malignant, 2 normal)")
        rf = check_rf(_member(members, "rf", at), at)
        roi = as_roi(_member(members, "roi", at), rf.shape, at) if "roi" in members else None
        meta = {
            "fs_hz": _number(members, "fs_hz", at),
            "fc_hz": _number(members, "fc_hz", at) if "fc_hz" in members else None,
            "c_m_s": _number(members, "c_m_s", at) if "c_m_s" in members else DEFAULT_C_M_S,
            "pitch_m": _number(members, "pitch_m", at) if "pitch_m" in members else None,
            "path": str(ref.path),
        }
        label = parse_label(_member(members, "label", at), at)
    return validate_sample(Sample(sample_id=ref.sample_id, source_id=ref.source_id, label=label,
                                  rf=rf, roi=roi, meta=meta))


def _ref(file: Path) -> SampleRef:
    sample_id, source_id, label, has_roi = file.stem, None, UNKNOWN_LABEL, False
    try:
        with _open(file) as members:
            at = where(file)
            if "sample_id" in members:
                sample_id = _string(members, "sample_id", at)
            if "source_id" in members:
                source_id = _string(members, "source_id", at)
            if "label" in members:
                label = parse_label(_member(members, "label", at), at)
            has_roi = "roi" in members
    except InputError:
        pass  # listed anyway: load_sample reports the reason for this one file
    return SampleRef(reader="rf_npz", path=str(file), key="", sample_id=sample_id,
                     source_id=source_id or sample_id, label=label, has_roi=has_roi)


def _open(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{path}: cannot read as a NumPy .npz file ({reason})") from None


def _member(members, name: str, at: str) -> np.ndarray:
    try:
        return members[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{at}: member {name!r} is unreadable ({reason})") from None


def _number(members, name: str, at: str) -> float:
    value = _member(members, name, at)
    if value.dtype.kind not in "iuf" or value.size != 1 or not np.isfinite(value).all():
        raise InputError(f"{at}: {name} must be one finite real number, got {value.dtype} "
                         f"array of shape {value.shape}")
    return float(value.item())


def _string(members, name: str, at: str) -> str:
    value = _member(members, name, at)
    if value.dtype.kind not in "US" or value.size != 1 or not str(value.item()).strip():
        raise InputError(f"{at}: {name} must be one non-empty string")
    return str(value.item()).strip()


def _names(members) -> str:
    return ", ".join(members.files) or "none"
