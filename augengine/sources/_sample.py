"""The unit every reader yields: one scan or image with its label, ROI and metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Label codes used across the engine (BUSI folder names map onto them).
LABELS = {"benign": 0, "malignant": 1, "normal": 2}
LABEL_NAMES = {code: name for name, code in LABELS.items()}


@dataclass
class Sample:
    """One input sample.

    Exactly one of ``rf`` and ``image`` is set.

    Attributes
    ----------
    sample_id : str
        Unique id of this scan/image within its source collection, e.g. ``"lesion007/rf1"``.
    source_id : str
        Id of the physical source shared by every scan of the same lesion/patient (used to keep
        all variants of one source in one train/val/test split). Equals ``sample_id`` when
        nothing coarser is known.
    label : int
        0 benign, 1 malignant, 2 normal (see ``LABELS``).
    rf : ndarray (depth, lines) or None
        Raw RF, time (depth) along axis 0, any real dtype (OASBUD: int16).
    image : ndarray (H, W) uint8 or None
        B-mode image, grey levels.
    roi : ndarray of bool or None
        Lesion mask/ROI, same shape as ``rf`` or ``image``.
    meta : dict
        Acquisition and provenance: for RF ``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m``; always
        ``path`` (the file it came from); optional ``birads``, ``patient_id``, ...
    """

    sample_id: str
    source_id: str
    label: int
    rf: np.ndarray | None = None
    image: np.ndarray | None = None
    roi: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "rf" if self.rf is not None else "image"


@dataclass(frozen=True)
class SampleRef:
    """A cheap, picklable pointer to one sample inside a source, resolved by ``load_sample``.

    ``reader`` is the source kind (``"oasbud"``, ``"rf_npz"``, ``"busi"``, ``"dicom"``), ``path``
    the file (or BUSI image file), ``key`` the entry inside it (e.g. the struct index and scan for
    OASBUD), and the id/label fields as on ``Sample``.
    """

    reader: str
    path: str
    key: str
    sample_id: str
    source_id: str
    label: int
    has_roi: bool
