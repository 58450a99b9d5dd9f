"""A dataset on disk: a Zarr v3 group of sharded arrays plus a Parquet manifest beside them.

Layout of ``STORE`` (a directory)::

    zarr.json                  group attributes: schema version, config hash, counts, manifest sha256
    images/                    (N, H, W) uint8, one sample per chunk, ``shard_size`` per shard, zstd
    masks/                     (N, H, W) uint8 0/1, present when any source has ROIs/masks
    labels/                    (N,) int8 (-1 where a planned sample was quarantined)
    manifest.parquet           one row per written sample (``MANIFEST_SCHEMA``)
    quarantine.parquet         one row per planned sample that could not be made, with the reason
    _journal/shard-XXXXXX.parquet   the driver's record of each finished shard (resume points)

Concurrency rule (Zarr rewrites a whole shard on every write): one writer per shard, always. A
worker writes its whole shard with one assignment; only the driver writes the journal, manifest and
attributes. Rewriting a shard with the same content is byte-identical, so retries are safe.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import ZstdCodec

from augengine.errors import ConfigError, InputError

SCHEMA_VERSION = 1

MANIFEST_SCHEMA = pa.schema([
    ("index", pa.int64()),
    ("sample_id", pa.string()),
    ("input_id", pa.string()),
    ("source_id", pa.string()),
    ("source_path", pa.string()),
    ("reader", pa.string()),
    ("label", pa.int8()),
    ("variant", pa.int32()),
    ("chain", pa.string()),
    ("ops", pa.string()),
    ("seed", pa.int64()),
    ("shard", pa.int32()),
    ("has_mask", pa.bool_()),
    ("sha256", pa.string()),
])

QUARANTINE_SCHEMA = pa.schema([
    ("index", pa.int64()),
    ("input_id", pa.string()),
    ("source_path", pa.string()),
    ("variant", pa.int32()),
    ("shard", pa.int32()),
    ("reason", pa.string()),
])


def image_sha256(image: np.ndarray) -> str:
    """Checksum of a sample: sha256 of its C-order uint8 bytes."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def _create_array(group, name, shape, chunks, shards, dtype, fill):
    return group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype,
                              compressors=ZstdCodec(level=3), fill_value=fill)




def create_store(path: str | Path, n_samples: int, size: tuple[int, int], shard_size: int,
                 with_masks: bool, config_hash: str, job: dict) -> None:
    """Create the arrays for a plan, or accept an existing store written by the same job.

    A store from a different job (another config hash) is refused rather than mixed.
    """
    path = Path(path)
    if (path / "zarr.json").exists():
        attrs = dict(zarr.open_group(path, mode="r").attrs)
        if attrs.get("config_hash") != config_hash:
            raise ConfigError(
                f"{path} holds a dataset from a different job config (hash "
                f"{str(attrs.get('config_hash'))[:12]} vs {config_hash[:12]}); choose another "
                "output.path or delete it")
        return
    group = zarr.open_group(path, mode="w")
    h, w = size
    _create_array(group, "images", (n_samples, h, w), (1, h, w), (shard_size, h, w), "uint8", 0)
    if with_masks:
        _create_array(group, "masks", (n_samples, h, w), (1, h, w), (shard_size, h, w), "uint8", 0)
    # Labels are tiny: one chunk per image shard keeps the same single-writer boundaries without
    # paying per-chunk codec overhead for one byte.
    _create_array(group, "labels", (n_samples,), (shard_size,), None, "int8", -1)
    group.attrs.update({"schema_version": SCHEMA_VERSION, "config_hash": config_hash,
                        "job": job, "planned": n_samples, "shard_size": shard_size,
                        "complete": False})


def write_shard(path: str | Path, start: int, images: np.ndarray, labels: np.ndarray,
                masks: np.ndarray | None) -> None:
    """Write one whole shard (rows ``start : start + len(images)``) in one assignment per array."""
    group = zarr.open_group(path, mode="r+")
    stop = start + len(images)
    group["images"][start:stop] = images
    group["labels"][start:stop] = labels
    if "masks" in group:
        group["masks"][start:stop] = masks if masks is not None else 0


def _journal_file(path: Path, shard: int) -> Path:
    return Path(path) / "_journal" / f"shard-{shard:06d}.parquet"


def write_journal(path: str | Path, shard: int, rows: list[dict], quarantined: list[dict]) -> None:
    """Record a finished shard (driver only), atomically: a reader sees the old file or the new."""
    target = _journal_file(Path(path), shard)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".partial")
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    meta = {b"quarantine": json.dumps(quarantined, sort_keys=True).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    os.replace(tmp, target)


def read_journal(path: str | Path, shard: int) -> tuple[list[dict], list[dict]] | None:
    """The rows recorded for a finished shard, or None if it has no (readable) record."""
    target = _journal_file(Path(path), shard)
    if not target.exists():
        return None
    try:
        table = pq.read_table(target)
    except (OSError, pa.ArrowInvalid):
        return None
    quarantined = json.loads((table.schema.metadata or {}).get(b"quarantine", b"[]"))
    return table.to_pylist(), quarantined


def shard_matches(path: str | Path, start: int, stop: int, rows: list[dict]) -> bool:
    """True when the stored images of a shard match the checksums recorded for it."""
    images = zarr.open_group(path, mode="r")["images"][start:stop]
    return all(image_sha256(images[row["index"] - start]) == row["sha256"] for row in rows)


def finalize(path: str | Path, rows: list[dict], quarantined: list[dict], planned: int,
             unreadable_sources: list[tuple[str, str]] = ()) -> dict:
    """Write the manifest, the quarantine record and the group's counts (driver only).

    ``unreadable_sources`` (files that could not even be listed, so have no planned samples) are
    kept in the attributes beside the counts.
    """
    path = Path(path)
    rows = sorted(rows, key=lambda r: r["index"])
    quarantined = sorted(quarantined, key=lambda r: r["index"])
    manifest = path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), manifest.with_suffix(".partial"))
    os.replace(manifest.with_suffix(".partial"), manifest)
    pq.write_table(pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA),
                   path / "quarantine.parquet")
    counts = {
        "planned": planned,
        "written": len(rows),
        "quarantined": len(quarantined),
        "by_label": {str(k): v for k, v in sorted(Counter(r["label"] for r in rows).items())},
    }
    group = zarr.open_group(path, mode="r+")
    group.attrs.update({"counts": counts, "manifest_sha256": _file_sha256(manifest),
                        "unreadable_sources": [list(item) for item in unreadable_sources],
                        "complete": len(rows) + len(quarantined) == planned})
    return counts


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StoreView:
    """A read-only view of a finished store: arrays, attributes, manifest and quarantine."""

    path: Path
    group: zarr.Group
    attrs: dict
    manifest: pa.Table
    quarantine: pa.Table


def open_store(path: str | Path) -> StoreView:
    """Open a store for reading; a clear error if it is not one."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError(f"{path}: not an augengine store (no zarr.json)")
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path}: schema version {attrs.get('schema_version')!r}, "
                         f"this augengine reads {SCHEMA_VERSION}")
    try:
        manifest = pq.read_table(path / "manifest.parquet")
    except FileNotFoundError:
        raise InputError(f"{path}: no manifest.parquet (the run has not finished; re-run it to "
                         "resume)") from None
    quarantine_file = path / "quarantine.parquet"
    quarantine = (pq.read_table(quarantine_file) if quarantine_file.exists()
                  else QUARANTINE_SCHEMA.empty_table())
    return StoreView(path, group, attrs, manifest, quarantine)


def verify_store(path: str | Path, max_problems: int = 20) -> list[str]:
    """Check a store is whole; return the first problems found (empty list: it is whole).

    Checks: attributes and array shapes agree with the plan; the manifest file matches its
    recorded sha256; every planned index is in exactly one of manifest and quarantine, once;
    shard numbers are right; every image's sha256 and label match its manifest row.
    """
    try:
        view = open_store(path)
    except InputError as error:
        return [str(error)]
    problems: list[str] = []

    def problem(text):
        if len(problems) < max_problems:
            problems.append(text)

    attrs, group = view.attrs, view.group
    planned, shard_size = attrs.get("planned"), attrs.get("shard_size")
    for name in ("images", "labels") + (("masks",) if "masks" in group else ()):
        if group[name].shape[0] != planned:
            problem(f"{name} has {group[name].shape[0]} rows, the plan has {planned}")
    if _file_sha256(view.path / "manifest.parquet") != attrs.get("manifest_sha256"):
        problem("manifest.parquet does not match the sha256 recorded in the group attributes")
    if not attrs.get("complete"):
        problem("the store is marked incomplete (an interrupted run: re-run the job to resume)")
    rows = view.manifest.to_pylist()
    indices = Counter(r["index"] for r in rows)
    indices.update(r["index"] for r in view.quarantine.to_pylist())
    for index, n in sorted(indices.items()):
        if n > 1:
            problem(f"sample index {index} appears {n} times in manifest + quarantine")
    missing = sorted(set(range(planned or 0)) - set(indices))
    if missing:
        problem(f"{len(missing)} planned samples missing from manifest and quarantine "
                f"(first: {missing[:5]})")
    extra = sorted(i for i in indices if not 0 <= i < (planned or 0))
    if extra:
        problem(f"manifest holds indices outside the plan: {extra[:5]}")
    counts = attrs.get("counts", {})
    if counts.get("written") != len(rows):
        problem(f"attributes count {counts.get('written')} written samples, manifest has {len(rows)}")
    by_shard: dict[int, list[dict]] = {}
    for row in rows:
        if shard_size and row["shard"] != row["index"] // shard_size:
            problem(f"sample {row['sample_id']} (index {row['index']}): shard {row['shard']}, "
                    f"expected {row['index'] // shard_size}")
        by_shard.setdefault(row["index"] // shard_size, []).append(row)
    images, labels = group["images"], group["labels"]
    for shard, shard_rows in sorted(by_shard.items()):
        start = shard * shard_size
        stop = min(start + shard_size, planned)
        block, block_labels = images[start:stop], labels[start:stop]
        for row in shard_rows:
            offset = row["index"] - start
            if image_sha256(block[offset]) != row["sha256"]:
                problem(f"sample {row['sample_id']} (index {row['index']}): image sha256 "
                        f"{image_sha256(block[offset])[:12]} != manifest {row['sha256'][:12]}")
            if int(block_labels[offset]) != row["label"]:
                problem(f"sample {row['sample_id']} (index {row['index']}): label "
                        f"{int(block_labels[offset])} in array, {row['label']} in manifest")
    return problems


def inspect_store(path: str | Path) -> dict:
    """Counts by label and by op chain, shapes, shards and bytes on disk."""
    view = open_store(path)
    rows = view.manifest.to_pylist()
    size = sum(f.stat().st_size for f in view.path.rglob("*") if f.is_file())
    images = view.group["images"]
    quality = [step["quality"] for row in rows for step in json.loads(row["ops"])
               if step.get("op") == "nst" and "quality" in step]
    nst_quality = None
    if quality:
        nst_quality = {key: round(float(np.mean([q[key] for q in quality])), 4)
                       for key in quality[0]}
    return {
        "path": str(view.path),
        "job": view.attrs.get("job", {}).get("name"),
        "nst_quality_mean": nst_quality,
        "images": f"{tuple(images.shape)} {images.dtype}",
        "masks": "masks" in view.group,
        "shards": -(-images.shape[0] // view.attrs["shard_size"]),
        "counts": view.attrs.get("counts"),
        "by_label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "by_chain": dict(Counter(r["chain"] for r in rows)),
        "bytes_on_disk": size,
        "complete": view.attrs.get("complete"),
    }
