"""Sample sources: readers for OASBUD ``.mat`` RF, RF ``.npz``, BUSI folders and DICOM, the
lazy ``discover``/``load_sample`` pair the runner uses, and per-sample validation.

Every reader returns ``Sample`` objects that passed :func:`validate_sample`; bad input raises
``augengine.errors.InputError`` with one line naming the file and sample. The RF phantom
simulator that writes OASBUD-layout files is ``augengine.simulate``.
"""
from augengine.sources._sample import LABEL_NAMES, LABELS, Sample, SampleRef
from augengine.sources.busi import read_busi
from augengine.sources.dicom import read_dicom
from augengine.sources.oasbud import OASBUD_DEFAULTS, read_oasbud
from augengine.sources.registry import READERS, discover, input_files, load_sample
from augengine.sources.rf_npz import read_rf_npz
from augengine.sources.validate import UNKNOWN_LABEL, validate_sample

__all__ = [
    "LABELS",
    "LABEL_NAMES",
    "OASBUD_DEFAULTS",
    "READERS",
    "Sample",
    "SampleRef",
    "UNKNOWN_LABEL",
    "discover",
    "input_files",
    "load_sample",
    "read_busi",
    "read_dicom",
    "read_oasbud",
    "read_rf_npz",
    "validate_sample",
]
