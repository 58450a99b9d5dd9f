"""The experiments' data: the user's source (any reader the job files accept) or, without one,
the simulator; the runner jobs that turn it into stores; and stores made of chosen rows.

``--data`` is read by the sources' own readers through a job's ``sources`` entry
(:class:`augengine.config.SourceConfig`); nothing here parses a file format.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from augengine.errors import InputError
from augengine.sources import LABEL_NAMES

__all__ = ["DYNAMIC_RANGES_DB", "MARGINS_MM", "RF_READERS", "compose_store", "data_summary",
           "detect_reader", "geometric_variants", "reconstruction_steps", "source_config",
           "stage_store"]

#: Seed 001's thresholds of the log-compressed envelope, dB.
DYNAMIC_RANGES_DB = (40, 50, 60)
#: Seed 001's tissue margins around the ROI, mm.
MARGINS_MM = (2, 5, 10)
RF_READERS = ("oasbud", "rf_npz")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def detect_reader(path: str | Path) -> str:
    """The reader of a ``--data`` path, from what is there.

    ``.mat`` -> ``oasbud``; a folder with ``zarr.json`` -> ``store``; ``.npz`` or a folder of
    them -> ``rf_npz``; ``.dcm``/``.dicom`` or a folder holding one -> ``dicom``; a folder with
    ``benign/`` or ``malignant/`` images -> ``busi``.

    Raises
    ------
    InputError
        Nothing there, or nothing recognisable (pass ``--reader``).

    Examples
    --------
    >>> detect_reader("OASBUD.mat")
    'oasbud'
    """
    path = Path(path)
    if path.suffix.lower() == ".mat":
        return "oasbud"
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "rf_npz"
        if suffix in (".dcm", ".dicom"):
            return "dicom"
    elif (path / "zarr.json").is_file():
        return "store"
    elif any(path.glob("*.npz")):
        return "rf_npz"
    elif any(p.suffix.lower() in (".dcm", ".dicom") for p in path.rglob("*") if p.is_file()):
        return "dicom"
    elif any(p.suffix.lower() in _IMAGE_SUFFIXES for name in ("benign", "malignant")
             for p in (path / name).glob("*")):
        return "busi"
    raise InputError(f"{path}: cannot tell which reader reads it (an OASBUD .mat, .npz files, a "
                     "BUSI folder, DICOM or an augengine store); pass --reader")


def source_config(path: str | Path, reader: str | None = None,
                  options: Mapping | None = None) -> dict:
    """A job's ``sources`` entry for ``--data``: the reader (detected unless given) and its
    options; a store is read as its originals only (no earlier augmentation).

    Examples
    --------
    >>> source_config("x/OASBUD.mat", options={"pitch_m": 2e-4})["reader"]
    'oasbud'
    """
    reader = reader or detect_reader(path)
    options = dict(options or {})
    if reader == "store":
        options.setdefault("originals_only", True)
    return {"reader": reader, "path": str(Path(path).absolute()), "options": options}


def reconstruction_steps(reader: str, dynamic_ranges_db: Sequence[float] | float,
                         margins_mm: Sequence[float] | float) -> list[dict]:
    """The steps that make an original: for RF, B-mode at the dynamic range(s), an ROI crop with
    the margin(s), scan conversion and resizing (seed 001); for images, resizing only (seed 002
    classifies whole BUSI images).

    Examples
    --------
    >>> [s["op"] for s in reconstruction_steps("oasbud", [40, 50, 60], 5)]
    ['bmode', 'roi_crop', 'scan_convert', 'resize']
    >>> reconstruction_steps("busi", 50, 5)
    [{'op': 'resize'}]
    """
    if reader not in RF_READERS:
        return [{"op": "resize"}]

    def step(op, name, value):
        if isinstance(value, (list, tuple)):
            return {"op": op, "sweep": {name: list(value)}}
        return {"op": op, name: value}

    return [step("bmode", "dynamic_range_db", dynamic_ranges_db),
            step("roi_crop", "margin_mm", margins_mm), {"op": "scan_convert"}, {"op": "resize"}]


def geometric_variants(image_size: int) -> dict:
    """The engine's geometric augmentation as one step: the original (``identity``) or one of a
    horizontal flip, a rotation uniform in [-15, 15] degrees, a zoom uniform in [0.85, 1.15] and
    a shift uniform in +-10 % of the side (seed 002's rotation, scaling and flipping, 800 ->
    4000 images; seed 004's translation).

    Examples
    --------
    >>> [alt["op"] for alt in geometric_variants(64)["one_of"]]
    ['identity', 'flip', 'rotate', 'scale', 'translate']
    """
    shift = round(0.1 * image_size, 1)
    return {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"},
                       {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}},
                       {"op": "scale", "factor": {"uniform": [0.85, 1.15]}},
                       {"op": "translate", "dy_px": {"uniform": [-shift, shift]},
                        "dx_px": {"uniform": [-shift, shift]}}]}


def stage_store(job: dict, origin: str) -> Path:
    """Run a runner job (resuming a finished or partial store of the same job) and return its
    store path."""
    from augengine.config import parse_job
    from augengine.runner import run_job

    config = parse_job(job, origin=origin)
    store = Path(config.output.path)
    if not _complete(store):
        run_job(config, progress=False)
    return store


def _complete(store: Path) -> bool:
    from augengine.store import manifest_file, open_store

    if not manifest_file(store).is_file():
        return False

    return bool(open_store(store).attrs.get("complete"))


def data_summary(store: str | Path, name: str) -> dict:
    """What a store's originals (no augmentation op) hold for the classifier (labels 0 and 1):
    lesions and images per class, and the samples the runner left out.

    Returns
    -------
    dict
        ``name``, ``lesions`` and ``images`` (``{"benign": n, "malignant": n}``), ``left_out``.
    """
    from augengine.store import open_store
    from augengine.manifest import originals_only

    view = open_store(store)
    rows = [row for row in originals_only(view.manifest.select(["source_id", "label", "ops"]))
            .to_pylist() if row["label"] in (0, 1)]
    lesions = {}
    for row in rows:
        lesions.setdefault(LABEL_NAMES[row["label"]], set()).add(row["source_id"])
    images = Counter(LABEL_NAMES[row["label"]] for row in rows)
    classes = ("benign", "malignant")
    return {"name": name, "lesions": {c: len(lesions.get(c, ())) for c in classes},
            "images": {c: images.get(c, 0) for c in classes},
            "left_out": int(view.quarantine.num_rows)}


def compose_store(path: str | Path, parts: Sequence[tuple[str | Path, np.ndarray]],
                  shard_size: int = 256) -> Path:
    """A store holding chosen rows of other stores, their manifest rows (ids, labels, op
    chains) kept; e.g. the training split's originals, or the originals plus styled images.

    Parameters
    ----------
    path : str or Path
        The new store (kept when it already holds the same rows).
    parts : sequence of (store path, ndarray of int)
        The store indices to take from each store, in that order; images of one size.

    Returns
    -------
    Path
    """
    from augengine.store import (check_output_path, create_store, finalize, locked_output,
                                 open_store, write_shard)

    path = Path(path)
    views = [(open_store(store), np.sort(np.asarray(rows, dtype=np.int64)))
             for store, rows in parts]
    sizes = {tuple(view.images.shape[1:]) for view, _ in views}
    if len(sizes) != 1:
        raise InputError(f"{path}: the stores to combine hold images of sizes {sorted(sizes)}")
    size = sizes.pop()
    recipe = {"compose": [{"store": str(view.path), "manifest_sha256":
                           view.attrs.get("manifest_sha256"), "rows": rows.tolist()}
                          for view, rows in views]}
    config_hash = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    if _complete(path) and open_store(path).attrs.get("config_hash") == config_hash:
        return path
    rows_out, images, labels, masks = [], [], [], []
    with_masks = any(view.masks is not None for view, _ in views)
    for view, rows in views:
        manifest = {row["index"]: row for row in view.manifest.to_pylist()}
        missing = [int(i) for i in rows if int(i) not in manifest]
        if missing:
            raise InputError(f"{view.path}: no manifest row for store index {missing[0]}")
        images.append(view.images.oindex[rows] if rows.size else np.zeros((0, *size), np.uint8))
        labels.append(np.asarray([manifest[int(i)]["label"] for i in rows], np.int8))
        if with_masks:
            masks.append(view.masks.oindex[rows] if view.masks is not None and rows.size
                         else np.zeros((rows.size, *size), np.uint8))
        rows_out += [manifest[int(i)] for i in rows]
    images = np.concatenate(images)
    labels = np.concatenate(labels)
    masks = np.concatenate(masks) if with_masks else None
    n = images.shape[0]
    if n == 0:
        raise InputError(f"{path}: no rows to write")
    ids = Counter(row["sample_id"] for row in rows_out)
    if max(ids.values()) > 1:
        raise InputError(f"{path}: sample id {ids.most_common(1)[0][0]!r} comes twice")
    check_output_path(path, [str(view.path) for view, _ in views])
    with locked_output(path):
        create_store(path, n, size, shard_size, with_masks, config_hash, recipe)
        for start in range(0, n, shard_size):
            stop = min(start + shard_size, n)
            write_shard(path, start, images[start:stop], labels[start:stop],
                        None if masks is None else masks[start:stop])
        for index, row in enumerate(rows_out):
            row.update(index=index, shard=index // shard_size)
        finalize(path, rows_out, [], n)
    return path

