"""Lazy loading for the runner: list samples cheaply with ``discover``, load each with
``load_sample`` (typically inside a Ray actor, in any order, in another process).

A ``SampleRef`` is small and picklable; its ``path`` is absolute (actors may run in another
working directory) and reader-specific details (struct entry, frame, mask file names, acquisition
defaults) travel in its ``key``. The OASBUD and DICOM readers keep the last
opened file cached per process, so loading ``lesion/rf2`` right after ``lesion/rf1`` (or the
frames of one cine) reads the file once.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from augengine.errors import ConfigError, unknown
from augengine.sources._sample import Sample, SampleRef
from augengine.sources.busi import discover_busi, load_busi
from augengine.sources.dicom import discover_dicom, load_dicom
from augengine.sources.oasbud import discover_oasbud, load_oasbud
from augengine.sources.rf_npz import discover_rf_npz, load_rf_npz
from augengine.sources.store import discover_store, load_store

#: reader name -> (discover(path, **options) -> list[SampleRef], load(ref) -> Sample)
READERS = {
    "oasbud": (discover_oasbud, load_oasbud),
    "rf_npz": (discover_rf_npz, load_rf_npz),
    "busi": (discover_busi, load_busi),
    "dicom": (discover_dicom, load_dicom),
    "store": (discover_store, load_store),
}


def discover(reader: str, path: str, **options) -> list[SampleRef]:
    """List the samples of one source without decoding pixel data where the format allows.

    Parameters
    ----------
    reader : {"oasbud", "rf_npz", "busi", "dicom", "store"}
    path : str
        The ``.mat`` file; an ``.npz`` file or a directory of them; the BUSI root folder; a
        DICOM file or directory; an augengine store.
    **options
        The reader's keyword arguments (``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m`` for
        ``oasbud``; ``label`` for ``dicom``; ``originals_only`` for ``store``: see
        :func:`reader_options`).

    Returns
    -------
    list of SampleRef
        In a stable order (struct order, sorted file names). A sample whose own data is bad is
        still listed (a label that cannot be read is -1) and raises ``InputError`` when loaded.

    Raises
    ------
    ConfigError
        Unknown reader name or option.
    InputError
        Source-level problems: unreadable ``.mat`` file or missing struct fields, unknown or
        empty BUSI class folder, no files found, no DICOM label.

    Example
    -------
    >>> refs = discover("oasbud", "phantoms/phantoms.mat")          # doctest: +SKIP
    >>> sample = load_sample(refs[1])                                # doctest: +SKIP
    """
    if reader not in READERS:
        raise ConfigError(unknown("reader", reader, READERS))
    allowed = reader_options(reader)
    for name in options:
        if name not in allowed:
            raise ConfigError(unknown("option", name, allowed))
    return READERS[reader][0](path, **options)


def reader_options(reader: str) -> list[str]:
    """The options a reader takes: its discover function's parameters after the path, so the
    list cannot drift from what the function accepts."""
    return list(inspect.signature(READERS[reader][0]).parameters)[1:]


def load_sample(ref: SampleRef) -> Sample:
    """Load and validate the sample behind a ``SampleRef`` from :func:`discover`.

    Raises ``InputError`` (one line naming the file and sample) when that sample is bad.
    """
    if ref.reader not in READERS:
        raise ConfigError(unknown("reader", ref.reader, READERS))
    return READERS[ref.reader][1](ref)


def input_files(ref: SampleRef) -> list[str]:
    """The files ``load_sample(ref)`` reads, so a store can tell when its inputs changed.

    A BUSI image brings its mask files; a store source is identified by its ``zarr.json``
    (attributes, rewritten whenever the store is finalized) and its manifest; every other
    reader reads ``ref.path`` alone.
    """
    if ref.reader == "busi":
        image = Path(ref.path)
        return [ref.path, *(str(image.with_name(name)) for name in json.loads(ref.key)["masks"])]
    if ref.reader == "store":
        from augengine.store import manifest_file

        return [str(Path(ref.path) / "zarr.json"), str(manifest_file(ref.path))]
    return [ref.path]
