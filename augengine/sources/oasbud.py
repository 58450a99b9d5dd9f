"""OASBUD-layout MATLAB files: raw breast-ultrasound RF, two scans per lesion, with ROIs.

Layout (the public OASBUD release; ``augengine simulate`` writes the same): a struct array ``data``
with one entry per lesion and fields

========  ============================================================================
``id``     lesion id (string)
``rf1``    first scan: RF, int16, (depth samples, lines), time along axis 0
``rf2``    second (orthogonal) scan, same layout; may be empty (a single-scan lesion)
``roi1``   lesion ROI of ``rf1``, 0/1, same shape; ``roi2`` likewise for ``rf2``
``birads`` BI-RADS category (string such as ``'4a'``; optional)
``class``  0 benign, 1 malignant
========  ============================================================================

The release does not store the acquisition parameters. Files may carry them as top-level
variables or as struct fields named ``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m`` (a struct field
applies to its lesion and wins over a top-level variable); otherwise the keyword defaults apply.
Byra et al. (seed 001) describe the OASBUD reconstruction these RF files feed: Hilbert envelope,
``20 log10(A / Amax)``, 40/50/60 dB thresholds, ROI crops with 2/5/10 mm margins.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.io

from augengine.errors import ConfigError, InputError
from augengine.sources._cache import cached_per_file
from augengine.sources._sample import Sample, SampleRef
from augengine.sources.validate import (UNKNOWN_LABEL, as_roi, check_rf, parse_label,
                                        validate_sample, where)

#: Nominal OASBUD acquisition, used when a file does not store it: 40 MHz sampling and
#: 1540 m/s are the values quoted for the dataset; the centre frequency is left unknown and the
#: 0.3 mm line pitch is an assumption (not verified against the release): override per source
#: (``options: {pitch_m: ...}``) when the real value is known.
OASBUD_DEFAULTS = {"fs_hz": 40e6, "fc_hz": None, "c_m_s": 1540.0, "pitch_m": 0.3e-3}
_D = OASBUD_DEFAULTS

REQUIRED_FIELDS = ("id", "rf1", "rf2", "roi1", "roi2", "class")
ACQUISITION_KEYS = tuple(OASBUD_DEFAULTS)

__all__ = ["OASBUD_DEFAULTS", "discover_oasbud", "load_oasbud", "read_oasbud"]


def read_oasbud(path, *, fs_hz: float = _D["fs_hz"], fc_hz: float | None = _D["fc_hz"],
                c_m_s: float = _D["c_m_s"], pitch_m: float = _D["pitch_m"]) -> list[Sample]:
    """Read every scan of an OASBUD-layout ``.mat`` file.

    Parameters
    ----------
    path : str or Path
        MATLAB v5 ``.mat`` file with the struct array ``data`` (see module docstring).
    fs_hz, fc_hz, c_m_s, pitch_m : float
        Sampling frequency (Hz), centre frequency (Hz; ``None`` = unknown), speed of sound (m/s)
        and line pitch (m), used when the file does not store them. Defaults: the nominal OASBUD
        acquisition (``OASBUD_DEFAULTS``).

    Returns
    -------
    list of Sample
        Two per lesion (one when ``rf2`` is empty): ``sample_id = f"{id}/rf1"`` and
        ``f"{id}/rf2"``, ``source_id = id``, ``label = class``, ``rf`` as stored (int16),
        ``roi`` bool of the same shape, ``meta`` with ``fs_hz``, ``fc_hz``, ``c_m_s``,
        ``pitch_m``, ``birads``, ``path``, ``scan`` (1 or 2) and ``entry`` (struct index).

    Raises
    ------
    InputError
        Unreadable/truncated file, no ``data`` struct or missing fields, duplicate lesion ids,
        or the first bad scan (wrong dtype/rank, NaN/Inf, all zeros, ROI shape mismatch). Use
        ``discover("oasbud", ...)`` + ``load_sample`` to load the good scans of a file that
        holds a bad one.

    Example
    -------
    >>> samples = read_oasbud("phantoms/phantoms.mat")               # doctest: +SKIP
    >>> samples[0].sample_id, samples[0].rf.dtype                    # doctest: +SKIP
    ('benign_000/rf1', dtype('int16'))
    """
    refs = discover_oasbud(path, fs_hz=fs_hz, fc_hz=fc_hz, c_m_s=c_m_s, pitch_m=pitch_m)
    return [load_oasbud(ref) for ref in refs]


def discover_oasbud(path, *, fs_hz: float = _D["fs_hz"], fc_hz: float | None = _D["fc_hz"],
                    c_m_s: float = _D["c_m_s"], pitch_m: float = _D["pitch_m"]
                    ) -> list[SampleRef]:
    """List the scans of an OASBUD-layout file as refs; only file-level problems raise.

    A lesion whose ``class`` cannot be parsed is listed with ``label = UNKNOWN_LABEL`` (-1) and
    its ``load_sample`` raises, so that one bad lesion does not hide the others. The keyword
    defaults travel inside each ref's ``key`` (JSON); a non-positive one raises ``ConfigError``.
    """
    defaults = {"fs_hz": fs_hz, "fc_hz": fc_hz, "c_m_s": c_m_s, "pitch_m": pitch_m}
    for name, value in defaults.items():
        if value is None and name == "fc_hz":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"oasbud option {name} must be a number > 0, got {value!r}")
    path = Path(path).absolute()
    data, _ = _read_mat(path)
    refs, seen = [], {}
    for entry in range(data.size):
        record = data.flat[entry]
        lesion_id = _lesion_id(record["id"], entry)
        if lesion_id in seen:
            raise InputError(f"{path}: lesion id {lesion_id!r} appears at struct entries "
                             f"{seen[lesion_id]} and {entry}; ids must be unique")
        seen[lesion_id] = entry
        try:
            label = parse_label(record["class"], where(path, lesion_id))
        except InputError:
            label = UNKNOWN_LABEL
        for scan in (1, 2):
            if scan == 2 and _is_empty(record["rf2"]):
                continue
            key = json.dumps({"entry": entry, "scan": scan, **defaults})
            refs.append(SampleRef(reader="oasbud", path=str(path), key=key,
                                  sample_id=f"{lesion_id}/rf{scan}", source_id=lesion_id,
                                  label=label, has_roi=True))
    return refs


def load_oasbud(ref: SampleRef) -> Sample:
    """Load and validate one scan listed by :func:`discover_oasbud` (the file stays cached)."""
    key = json.loads(ref.key)
    entry, scan = key["entry"], key["scan"]
    data, file_acq = _read_mat(ref.path)
    at = where(ref.path, ref.sample_id)
    if entry >= data.size:
        raise InputError(f"{at}: struct entry {entry} no longer exists (the file changed)")
    record = data.flat[entry]
    label = parse_label(record["class"], at)
    rf = check_rf(_unwrap_array(record[f"rf{scan}"]), at)
    roi = as_roi(_unwrap_array(record[f"roi{scan}"]), rf.shape, at)
    meta = {name: key[name] for name in ACQUISITION_KEYS}
    meta.update(file_acq)
    meta.update(_acquisition(record, at))
    meta.update(path=str(ref.path), scan=scan, entry=entry,
                birads=_text(record["birads"]) if "birads" in data.dtype.names else None)
    sample = Sample(sample_id=ref.sample_id, source_id=ref.source_id, label=label,
                    rf=np.array(rf, order="C", copy=True), roi=roi, meta=meta)
    return validate_sample(sample)


@cached_per_file
def _read_mat(path: str) -> tuple[np.ndarray, dict]:
    """The ``data`` struct array and top-level acquisition values, cached for the last file."""
    try:
        contents = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:
        raise InputError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with "
                         f"save(..., '-v7')") from None
    except Exception as error:  # scipy raises many types for damaged files
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{path}: cannot read as a MATLAB .mat file ({reason})") from None
    data = contents.get("data")
    if not isinstance(data, np.ndarray) or data.dtype.names is None:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise InputError(f"{path}: no struct array 'data' (OASBUD layout); variables: {found}")
    missing = [name for name in REQUIRED_FIELDS if name not in data.dtype.names]
    if missing:
        raise InputError(f"{path}: struct 'data' lacks field(s) {', '.join(missing)}; OASBUD "
                         f"files need {', '.join(REQUIRED_FIELDS)}")
    if data.size == 0:
        raise InputError(f"{path}: struct array 'data' is empty")
    top = {name: _scalar(contents[name], f"{path}: variable {name}")
           for name in ACQUISITION_KEYS if name in contents}
    return data, top


def _acquisition(record: np.void, at: str) -> dict:
    names = record.dtype.names
    return {name: _scalar(record[name], f"{at}: field {name}")
            for name in ACQUISITION_KEYS if name in names and not _is_empty(record[name])}


def _scalar(value, at: str) -> float:
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or array.size != 1:
        raise InputError(f"{at} must be one real number, got {array.dtype} array of shape "
                         f"{array.shape}")
    return float(array.item())


def _unwrap_array(value) -> np.ndarray:
    # With squeeze_me=False a struct field holds the MATLAB array itself.
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def _is_empty(value) -> bool:
    return isinstance(value, np.ndarray) and value.size == 0


def _text(value) -> str | None:
    array = np.asarray(value)
    if array.size == 0:
        return None
    if array.dtype.kind in "US":
        return str(array.ravel()[0]).strip()
    if array.dtype.kind in "iuf" and array.size == 1:
        number = array.item()
        return str(int(number)) if float(number).is_integer() else str(number)
    return None


def _lesion_id(value, entry: int) -> str:
    return _text(value) or f"entry{entry:04d}"
