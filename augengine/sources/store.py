"""Read an augengine store as a source, so one job's output feeds the next (e.g. reconstruction
-> style transfer, or a second round of augmentation on B-mode images).

Each manifest row is one sample: ``sample_id`` and ``source_id`` carry over (so splits by source
stay leak-free across jobs), the image and mask come from the arrays, and ``meta["made_by"]``
holds the row's history as a ``from_store`` op (recorded first in the next store's manifest), with
``dynamic_range_db`` lifted out of its ``bmode`` step, however many stores back, for SRAD.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import zarr

from augengine.errors import InputError
from augengine.manifest import originals_only as keep_originals
from augengine.sources._sample import Sample, SampleRef


def discover_store(path, originals_only: bool = False) -> list[SampleRef]:
    """One ref per manifest row of the store at ``path`` (in index order).

    ``originals_only=True`` keeps only rows whose chain has no augmentation op
    (:func:`augengine.manifest.originals_only`): the natural input of a style-transfer job.
    """
    from augengine.store import open_store

    root = Path(path).resolve()
    manifest = open_store(root).manifest
    if originals_only:
        manifest = keep_originals(manifest)
    if manifest.num_rows == 0:
        raise InputError(f"{root}: the store has no samples" + (" without augmentation ops"
                                                                  if originals_only else ""))
    return [SampleRef(reader="store", path=str(root), key=str(row["index"]),
                      sample_id=row["sample_id"], source_id=row["source_id"], label=row["label"],
                      has_roi=row["has_mask"])
            for row in manifest.select(["index", "sample_id", "source_id", "label",
                                        "has_mask"]).to_pylist()]


@lru_cache(maxsize=2)
def _group(path: str) -> zarr.Group:
    return zarr.open_group(path, mode="r")


@lru_cache(maxsize=2)
def _ops_by_index(path: str) -> dict[int, str]:
    import pyarrow.parquet as pq

    from augengine.store import manifest_file

    table = pq.read_table(manifest_file(path), columns=["index", "ops"])
    return dict(zip(table["index"].to_pylist(), table["ops"].to_pylist()))


def load_store(ref: SampleRef) -> Sample:
    """The image (uint8), mask (bool, if any) and op history of one store row."""
    index = int(ref.key)
    try:
        group = _group(ref.path)
        image = group["images"][index]
        roi = group["masks"][index].astype(bool) if ref.has_roi and "masks" in group else None
        ops = json.loads(_ops_by_index(ref.path)[index])
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{ref.path}: sample {ref.sample_id!r} (index {index}): "
                         f"cannot be read ({error})") from None
    # The ops that made this image travel on as the first entry of the next job's chain, so a
    # store's manifest holds the whole history back to the raw source.
    meta = {"path": ref.path, "index": index,
            "made_by": [{"op": "from_store", "store": ref.path, "sample_id": ref.sample_id,
                         "ops": ops}]}
    dynamic_range = _dynamic_range(ops)
    if dynamic_range is not None:
        meta["dynamic_range_db"] = dynamic_range
    return Sample(sample_id=ref.sample_id, source_id=ref.source_id, label=ref.label, image=image,
                  roi=roi, meta=meta)


def _dynamic_range(ops: list[dict]) -> float | None:
    """The dynamic range of the last ``bmode`` in a history, looking into earlier stores."""
    for step in reversed(ops):
        if step.get("op") == "bmode":
            return step["dynamic_range_db"]
        if step.get("op") == "from_store":
            found = _dynamic_range(step["ops"])
            if found is not None:
                return found
    return None
