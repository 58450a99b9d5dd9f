"""A dataset on disk: a Zarr v3 group of sharded arrays plus a Parquet manifest beside them.

Layout of ``STORE`` (a directory)::

    zarr.json                  group attributes: schema version, config hash, inputs digest,
                               counts, manifest sha256; the arrays' metadata consolidated
    images/                    (N, H, W) uint8, one sample per chunk, ``shard_size`` per shard, zstd
    masks/                     (N, H, W) uint8 0/1, present when any source has ROIs/masks
    labels/                    (N,) int8 (-1 where a planned sample was quarantined)
    records/                   a Zarr group with no arrays, holding what is not Zarr:
      manifest.parquet         one row per written sample (``MANIFEST_SCHEMA``)
      quarantine.parquet       one row per planned sample that could not be made, with the
                               reason, and one per source that could not be read at all (index null)
      inputs.parquet           what the plan read: sample ids in plan order, files, sizes, mtimes
      _journal/shard-XXXXXX.parquet   the driver's record of each finished shard (resume points)
      .augengine.lock          held (``flock``) by the one run writing the store

Why ``records/`` is a group: zarr names every entry of a group's directory that is neither
``zarr.json`` nor a node with a warning when it lists the group (``xarray.open_zarr(...,
consolidated=False)`` does), and ignores nothing else. A subgroup is a node, and opening the
arrays never lists inside it. The consolidated metadata lets ``xarray.open_zarr(STORE)`` open
the arrays without listing anything. Schema-2 stores keep the records beside the arrays; they
are read as they are (:func:`records_dir`), and a run into one moves them under ``--rebuild``.

Concurrency rule (a shard file holds many samples and is rewritten whole): one writer per shard,
always. A worker writes each file of its shard in one go (:func:`write_shard`, atomically); only
the driver writes the journal, manifest and attributes, and only one driver at a time
(:func:`locked_output`). Rewriting a shard with the same content is byte-identical, so retries are
safe.

Safety rule: nothing here deletes or overwrites a file the store did not create. An output path
that is an existing non-store directory with anything in it, the working directory, a source or a
folder holding one is refused before anything is written (:func:`check_output_path`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ZarrUserWarning

from augengine.checksums import file_sha256
from augengine.errors import ConfigError, InputError, one_line
from augengine.manifest import MANIFEST_SCHEMA, rows_where

#: 2: masks checksummed (``mask_sha256``), inputs recorded (``inputs.parquet``, ``inputs_digest``),
#: unreadable sources in the quarantine. 3: the Parquet records in ``records/``, the arrays'
#: metadata consolidated.
SCHEMA_VERSION = 3
#: Schema versions this augengine reads (and, for 2, converts on ``--rebuild``).
READABLE_SCHEMAS = (2, 3)
RECORDS = "records"
LOCK_FILE = ".augengine.lock"
#: The files a schema-2 store holds beside its arrays, and a schema-3 store in ``records/``.
_RECORD_ENTRIES = ("manifest.parquet", "quarantine.parquet", "inputs.parquet", "_journal")

#: ``index``, ``variant`` and ``shard`` are null for a source that could not be read at all (its
#: samples were never planned).
QUARANTINE_SCHEMA = pa.schema([
    ("index", pa.int64()),
    ("input_id", pa.string()),
    ("source_path", pa.string()),
    ("variant", pa.int32()),
    ("shard", pa.int32()),
    ("reason", pa.string()),
])

INPUTS_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("files", pa.string()),
])


def image_sha256(image: np.ndarray) -> str:
    """Checksum of a sample (image or mask): sha256 of its C-order uint8 bytes."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


#: Named axes of each array, so xarray (``xarray.open_zarr``) can open the store: it needs
#: ``dimension_names`` on every array. Stores made before they were set still open here.
DIMENSIONS = {"images": ("sample", "y", "x"), "masks": ("sample", "y", "x"), "labels": ("sample",)}


def _create_array(group, name, shape, chunks, shards, dtype, fill):
    return group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype,
                              compressors=ZstdCodec(level=3), fill_value=fill,
                              dimension_names=DIMENSIONS[name])


def _is_store(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def records_dir(path: str | Path) -> Path:
    """Where the store at ``path`` keeps its Parquet records: ``records/``, or the group
    directory itself in a schema-2 store (a group without the ``records`` group)."""
    path = Path(path)
    return path if _is_store(path) and not _is_store(path / RECORDS) else path / RECORDS


def manifest_file(path: str | Path) -> Path:
    """The manifest of the store at ``path`` (``records/manifest.parquet``; beside the arrays in
    a schema-2 store)."""
    return records_dir(path) / "manifest.parquet"


def consolidate(path: str | Path) -> None:
    """Record the arrays' metadata in the group's ``zarr.json`` (zarr's consolidated metadata),
    so that readers (``xarray.open_zarr``) open them without listing the directory. Called
    whenever an array is created or resized: zarr readers then trust this copy.

    zarr warns that consolidated metadata is not in the v3 specification yet, and while
    consolidating it lists ``records/``; both are about our own writing, not the store.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        zarr.consolidate_metadata(str(path))


def check_output_path(path: str | Path, source_paths: list[str]) -> None:
    """Refuse an output path whose writing could destroy a user's files (``ConfigError``, one line).

    Refused: the working directory or any folder above it; an existing file; an existing
    directory that is not a store and holds anything but a stale lock of ours; a source itself,
    a folder holding a source, or a folder inside a directory source (discovery would read the
    store's own files as inputs).
    """
    out = Path(path).resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise ConfigError(f"output.path {path}: is the working directory or a folder above it; "
                          "name a new directory for the store (e.g. out/dataset.zarr)")
    for source in source_paths:
        src = Path(source).resolve()
        if out == src or out in src.parents:
            raise ConfigError(f"output.path {path}: holds the source {source}; name a new "
                              "directory outside the sources")
        if src.is_dir() and src in out.parents:
            raise ConfigError(f"output.path {path}: is inside the source folder {source}, whose "
                              "discovery would read the store's own files; write it elsewhere")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.path {path}: exists and is not a directory; refusing to "
                          "overwrite it")
    if out.is_dir() and not _is_store(out):
        foreign = sorted(p.name for p in out.iterdir() if not _stale_lock(p))
        if foreign:
            raise ConfigError(f"output.path {path}: exists, is not an augengine store and holds "
                              f"{len(foreign)} entries (first: {foreign[0]!r}); refusing to write "
                              "into it: choose a new or empty directory")


def _stale_lock(entry: Path) -> bool:
    """``records/`` holding nothing but our lock: what a run that stopped before creating the
    store leaves (a lock file directly in the directory, from earlier versions, likewise)."""
    if entry.name == LOCK_FILE:
        return True
    return entry.name == RECORDS and entry.is_dir() and \
        all(p.name == LOCK_FILE for p in entry.iterdir())


@contextlib.contextmanager
def locked_output(path: str | Path):
    """Hold the store's lock while a run writes it; a second run is refused with one line.

    The lock is an ``flock`` on ``records/.augengine.lock`` (in any store, schema 2 included;
    earlier versions locked ``.augengine.lock`` beside the arrays): the kernel drops it when its holder exits,
    however it exits, so a lock left by a killed run is taken over without a stale-lock guess.
    The file records who holds it (host, pid, start) for the refusal message and stays behind
    (unlinking it would let a waiting run lock a file nobody else sees). Call
    :func:`check_output_path` first: this creates the directory.
    """
    records = Path(path) / RECORDS
    records.mkdir(parents=True, exist_ok=True)
    fd = os.open(records / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(f"output.path {path}: in use by another augengine run ({holder}); "
                              "wait for it to finish or choose another output.path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def create_store(path: str | Path, n_samples: int, size: tuple[int, int], shard_size: int,
                 with_masks: bool, config_hash: str, job: dict, inputs: list[dict] = (),
                 rebuild: bool = False) -> None:
    """Create the arrays for a plan, or accept an existing store written by the same job from the
    same inputs. Call under :func:`locked_output`, after :func:`check_output_path`.

    A store from a different job (another config hash) is refused. A store whose recorded
    ``inputs`` (:meth:`augengine.plan.Plan.inputs`) differ from the plan's is refused with what
    changed, unless ``rebuild``: then its arrays take the plan's length and the new inputs are
    recorded; the runner keeps only the shards whose own inputs are unchanged.
    """
    path, inputs = Path(path), list(inputs)
    digest = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
    if _is_store(path):
        _check_identity(path, config_hash, with_masks, digest, inputs, rebuild)
        if rebuild:
            _move_records(path)
            group = zarr.open_group(path, mode="r+", use_consolidated=False)
            for name in ("images", "masks", "labels"):
                if name in group and group[name].shape[0] != n_samples:
                    group[name].resize((n_samples, *group[name].shape[1:]))
            _write_inputs(path, inputs)
            group.attrs.update({"planned": n_samples, "inputs_digest": digest, "complete": False,
                                "schema_version": SCHEMA_VERSION})
            consolidate(path)
        return
    # mode "a" creates the group beside our lock file; mode "w" would empty the directory first.
    group = zarr.open_group(path, mode="a")
    h, w = size
    _create_array(group, "images", (n_samples, h, w), (1, h, w), (shard_size, h, w), "uint8", 0)
    if with_masks:
        _create_array(group, "masks", (n_samples, h, w), (1, h, w), (shard_size, h, w), "uint8", 0)
    # Labels are tiny: one chunk per image shard keeps the same single-writer boundaries without
    # paying per-chunk codec overhead for one byte.
    _create_array(group, "labels", (n_samples,), (shard_size,), None, "int8", -1)
    group.create_group(RECORDS, attributes={"about": "augengine's Parquet records of the store "
                                                     "(manifest, quarantine, inputs, journal)"})
    _write_inputs(path, inputs)
    group.attrs.update({"schema_version": SCHEMA_VERSION, "config_hash": config_hash,
                        "inputs_digest": digest, "job": job, "planned": n_samples,
                        "shard_size": shard_size, "complete": False})
    consolidate(path)


def _move_records(path: Path) -> None:
    """Give a schema-2 store the schema-3 layout: its records (ours) moved into ``records/``,
    where this run already holds the lock; the old lock file beside the arrays goes."""
    if records_dir(path) != path:
        return
    for name in _RECORD_ENTRIES:
        if (path / name).exists():
            os.replace(path / name, path / RECORDS / name)
    (path / LOCK_FILE).unlink(missing_ok=True)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    group.create_group(RECORDS, attributes={"about": "augengine's Parquet records of the store "
                                                     "(manifest, quarantine, inputs, journal)"})


def _check_identity(path: Path, config_hash: str, with_masks: bool, digest: str,
                    inputs: list[dict], rebuild: bool) -> None:
    attrs = dict(zarr.open_group(path, mode="r").attrs)
    if "config_hash" not in attrs:
        raise ConfigError(f"{path}: a Zarr group that is not an augengine store; choose another "
                          "output.path")
    if attrs.get("schema_version") == 2 and not rebuild:
        raise ConfigError(f"{path}: a store of schema version 2, whose records lie beside its "
                          f"arrays (this augengine writes {SCHEMA_VERSION}, with them in "
                          f"{RECORDS}/); re-run with --rebuild to move them there, or choose "
                          "another output.path")
    if attrs.get("schema_version") not in READABLE_SCHEMAS:
        raise ConfigError(f"{path}: a store of schema version {attrs.get('schema_version')!r} "
                          f"(this augengine writes {SCHEMA_VERSION}); choose another output.path")
    if attrs["config_hash"] != config_hash:
        raise ConfigError(
            f"{path} holds a dataset from a different job config (hash "
            f"{str(attrs['config_hash'])[:12]} vs {config_hash[:12]}); choose another "
            "output.path or delete it")
    if ("masks" in zarr.open_group(path, mode="r")) != with_masks:
        raise ConfigError(f"{path}: the inputs now {'have' if with_masks else 'lack'} masks and the "
                          "store does not; choose another output.path")
    if attrs.get("inputs_digest") != digest and not rebuild:
        raise ConfigError(f"{path}: {describe_input_changes(read_inputs(path), inputs)} since the "
                          "store was made; re-run with --rebuild to rebuild the shards they "
                          "change, or choose another output.path")


def _write_inputs(path: Path, inputs: list[dict]) -> None:
    _write_parquet(pa.Table.from_pylist(inputs, schema=INPUTS_SCHEMA),
                   records_dir(path) / "inputs.parquet")


def read_inputs(path: str | Path) -> list[dict]:
    """The inputs recorded for a store (``[]`` when none can be read)."""
    try:
        return pq.read_table(records_dir(path) / "inputs.parquet").to_pylist()
    except (OSError, pa.ArrowInvalid):
        return []


def describe_input_changes(old: list[dict], new: list[dict]) -> str:
    """One phrase saying how two :meth:`~augengine.plan.Plan.inputs` lists differ, naming the
    first samples or files of each kind of change."""
    def key(row):
        return row["sample_id"] if row["sample_id"] is not None else row["files"].split('"')[1]

    before = {key(r): r["files"] for r in old}
    after = {key(r): r["files"] for r in new}
    parts = []
    for what, names in (("added", [k for k in after if k not in before]),
                        ("removed", [k for k in before if k not in after]),
                        ("modified", [k for k in after if k in before and after[k] != before[k]])):
        if names:
            parts.append(f"{len(names)} {what} ({', '.join(map(repr, names[:3]))}"
                         f"{', ...' if len(names) > 3 else ''})")
    if not parts:
        parts.append("the order of the inputs changed" if before else
                     "the store records no inputs")
    return "inputs changed: " + "; ".join(parts)


def _shard_file(array, shard: int) -> Path:
    store_root = Path(str(array.store_path.store.root))
    key = array.metadata.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))
    return store_root / array.path / key


# Why write_shard encodes shard files itself instead of assigning to the zarr array: zarr 3.1
# runs its codec pipeline once per chunk (one sample per chunk here) through asyncio, and that
# overhead, not zstd, set the pace: write_shard ran at 0.14-0.24 of the zstd floor
# (benchmarks/bench_store.py, BENCHMARKS.md). The encoding below is the store's own codec chain
# exactly as zarr.codecs.sharding writes it (chunks in order, chunks equal to the fill value
# left out, a little-endian uint64 (offset, length) index with its crc32c at the end) using the
# same zstd (numcodecs) and crc32c (google_crc32c) zarr calls; tests/test_store_writer.py
# checks the files are byte-identical to zarr's own and that zarr reads them. Any other codec
# chain is refused rather than guessed.
_NO_CHUNK = np.iinfo(np.uint64).max


def _zstd_level(codecs) -> int | None:
    """The zstd level of a ``bytes -> zstd`` chain of a one-byte dtype, else None."""
    from zarr.codecs import BytesCodec

    if (len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and codecs[0].endian is None
            and isinstance(codecs[1], ZstdCodec) and not codecs[1].checksum):
        return codecs[1].level
    return None


def _shard_encoding(array) -> tuple[int, int, bool]:
    """``(rows per file, zstd level, sharded)`` of an array in the store's layout: one row per
    chunk inside ``bytes -> zstd`` shards with a crc32c index at the end (images, masks), or
    unsharded ``bytes -> zstd`` chunks (labels). ``ValueError`` for anything else."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    codecs, config = array.metadata.codecs, array.async_array.config
    level, sharded = _zstd_level(codecs), False
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        sharding, sharded = codecs[0], True
        index_ok = (len(sharding.index_codecs) == 2
                    and isinstance(sharding.index_codecs[0], BytesCodec)
                    and sharding.index_codecs[0].endian.value == "little"
                    and isinstance(sharding.index_codecs[1], Crc32cCodec)
                    and sharding.index_location.value == "end")
        one_row = tuple(sharding.chunk_shape) == (1, *array.shape[1:])
        level = _zstd_level(sharding.codecs) if index_ok and one_row else None
    if level is None or array.dtype.itemsize != 1 or config.write_empty_chunks \
            or config.order != "C":
        raise ValueError(f"{array.path}: not in the layout write_shard encodes "
                         f"({array.metadata.codecs})")
    return (array.shards or array.chunks)[0], level, sharded


def _encode_sharded(data: np.ndarray, rows: int, fill, level: int) -> bytes | None:
    """One shard file of ``rows`` one-row chunks holding ``data`` (its first rows), or None when
    every chunk equals the fill value (zarr then stores no file)."""
    import google_crc32c
    from numcodecs import Zstd

    codec = Zstd(level=level)
    index = np.full((rows, *(1,) * (data.ndim - 1), 2), _NO_CHUNK, "<u8")
    kept = (data.reshape(len(data), -1) != fill).any(axis=1)
    parts, offset = [], 0
    for row in np.flatnonzero(kept):
        blob = codec.encode(np.ascontiguousarray(data[row]))
        index[row] = offset, len(blob)
        parts.append(blob)
        offset += len(blob)
    if not parts:
        return None
    raw = index.tobytes()
    return b"".join([*parts, raw, np.array([google_crc32c.value(raw)], "<u4").tobytes()])


def _encode_chunk(data: np.ndarray, rows: int, fill, level: int) -> bytes | None:
    """One unsharded chunk of ``rows`` rows: ``data`` padded with the fill value (zarr stores
    edge chunks whole), or None when it is all fill value."""
    from numcodecs import Zstd

    chunk = np.full((rows, *data.shape[1:]), fill, data.dtype)
    chunk[:len(data)] = data
    return None if (chunk == fill).all() else Zstd(level=level).encode(chunk)


def _replace_file(target: Path, content: bytes | None) -> None:
    """Put ``content`` at ``target`` atomically (a temporary file beside it, then a rename), or
    remove ``target`` when there is none. A writer killed mid-way leaves the old file and a stray
    ``*.partial`` that zarr never reads; the old file is never read, so a damaged one is simply
    replaced."""
    if content is None:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: a retried task may overlap a dying attempt of the same shard.
    tmp = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_shard(path: str | Path, start: int, images: np.ndarray, labels: np.ndarray,
                masks: np.ndarray | None) -> None:
    """Write one whole shard (rows ``start : start + len(images)``) of every array, each file
    replaced atomically, in zarr's own bytes (see above why they are encoded here).

    Rewriting the same data gives the same bytes, so a retried write is harmless. ``masks`` None
    (no sample of the shard has one) leaves the masks shard empty.
    """
    group = zarr.open_group(path, mode="r")
    for name, data in (("images", images), ("labels", labels), ("masks", masks)):
        if name not in group:
            continue
        array = group[name]
        rows, level, sharded = _shard_encoding(array)
        if start % rows or len(images) != min(rows, array.shape[0] - start):
            raise ValueError(f"{name}: rows {start}:{start + len(images)} are not one whole shard "
                             f"of {rows}")
        if data is None:
            data = np.zeros((len(images), *array.shape[1:]), array.dtype)
        data = np.asarray(data, array.dtype)
        fill = array.metadata.fill_value
        encode = _encode_sharded if sharded else _encode_chunk
        _replace_file(_shard_file(array, start // rows), encode(data, rows, fill, level))


def _journal_file(path: Path, shard: int) -> Path:
    return records_dir(path) / "_journal" / f"shard-{shard:06d}.parquet"


@dataclass
class Journal:
    """The driver's record of one finished shard."""

    rows: list[dict]
    quarantined: list[dict]
    #: :meth:`augengine.plan.Plan.shard_digest` of the plan that made it.
    inputs_digest: str | None


def write_journal(path: str | Path, shard: int, rows: list[dict], quarantined: list[dict],
                  inputs_digest: str) -> None:
    """Record a finished shard (driver only), atomically: a reader sees the old file or the new."""
    target = _journal_file(Path(path), shard)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    meta = {b"quarantine": json.dumps(quarantined, sort_keys=True).encode(),
            b"inputs_digest": inputs_digest.encode()}
    _write_parquet(table.replace_schema_metadata(meta), target)


def read_journal(path: str | Path, shard: int) -> Journal | None:
    """The record of a finished shard, or None if it has no (readable) record."""
    target = _journal_file(Path(path), shard)
    if not target.exists():
        return None
    try:
        table = pq.read_table(target)
        meta = table.schema.metadata or {}
        quarantined = json.loads(meta.get(b"quarantine", b"[]"))
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    digest = meta.get(b"inputs_digest")
    return Journal(table.to_pylist(), quarantined, digest.decode() if digest else None)


def remove_journals_from(path: str | Path, first_shard: int) -> None:
    """Drop the journal files of shards ``>= first_shard`` (ours; a plan that shrank on
    ``--rebuild`` no longer has those shards)."""
    for file in (records_dir(path) / "_journal").glob("shard-*.parquet"):
        if int(file.stem.removeprefix("shard-")) >= first_shard:
            file.unlink()


def shard_problem(group: zarr.Group, shard: int, start: int, stop: int, rows: list[dict],
                  quarantined: list[dict] = ()) -> str | None:
    """The first thing wrong with stored shard ``shard`` (rows ``start:stop``) against its
    manifest rows and quarantine entries, or None when every image, mask and label matches."""
    return next(_shard_problems(group, shard, start, stop, rows, quarantined), None)


def _shard_problems(group, shard, start, stop, rows, quarantined):
    """Yield every mismatch of one shard; a shard file that cannot be read (truncated, bad
    checksum) is a named problem, not an exception."""
    blocks = {}
    for name in ("images", "labels") + (("masks",) if "masks" in group else ()):
        try:
            blocks[name] = group[name][start:stop]
        except Exception as error:  # noqa: BLE001 - any codec or I/O failure: the shard is bad
            yield f"shard {shard} of {name}: unreadable ({one_line(error)})"
    if "images" not in blocks or "labels" not in blocks:
        return
    for row in rows:
        k, name = row["index"] - start, f"sample {row['sample_id']} (index {row['index']})"
        digest = image_sha256(blocks["images"][k])
        if digest != row["sha256"]:
            yield f"{name}: image sha256 {digest[:12]} != manifest {row['sha256'][:12]}"
        if "masks" in blocks and row.get("mask_sha256") is not None:
            digest = image_sha256(blocks["masks"][k])
            if digest != row["mask_sha256"]:
                yield f"{name}: mask sha256 {digest[:12]} != manifest {row['mask_sha256'][:12]}"
        if int(blocks["labels"][k]) != row["label"]:
            yield f"{name}: label {int(blocks['labels'][k])} in array, {row['label']} in manifest"
    for entry in quarantined:
        label = int(blocks["labels"][entry["index"] - start])
        if label != -1:
            yield f"index {entry['index']} (quarantined): label {label} in array, expected -1"


def finalize(path: str | Path, rows: list[dict], quarantined: list[dict], planned: int,
             unreadable_sources: list[tuple[str, str]] = ()) -> dict:
    """Write the manifest, the quarantine record and the group's counts (driver only).

    ``unreadable_sources`` (files that could not even be listed, so have no planned samples)
    become quarantine rows with a null index, after the samples'.
    """
    path = Path(path)
    rows = sorted(rows, key=lambda r: r["index"])
    quarantined = sorted(quarantined, key=lambda r: r["index"])
    quarantined += [{"index": None, "input_id": source, "source_path": source, "variant": None,
                     "shard": None, "reason": f"source unreadable: {reason}"}
                    for source, reason in unreadable_sources]
    manifest = manifest_file(path)
    _write_parquet(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), manifest)
    _write_parquet(pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA),
                        records_dir(path) / "quarantine.parquet")
    samples_quarantined = sum(q["index"] is not None for q in quarantined)
    counts = {
        "planned": planned,
        "written": len(rows),
        "quarantined": samples_quarantined,
        "unreadable_sources": len(unreadable_sources),
        "by_label": {str(k): v for k, v in sorted(Counter(r["label"] for r in rows).items())},
    }
    group = zarr.open_group(path, mode="r+")
    update = {"counts": counts, "manifest_sha256": file_sha256(manifest),
              "complete": len(rows) + samples_quarantined == planned}
    if any(group.attrs.get(key) != value for key, value in update.items()):
        group.attrs.update(update)
    return counts


def _write_parquet(table: pa.Table, target: Path) -> None:
    """Write ``table`` to ``target`` atomically (a reader sees the old file or the new), leaving
    the file (and its mtime) alone when it already holds the same bytes: a store read as the
    source of another job then keeps its identity across a resume that changed nothing."""
    tmp = target.with_suffix(".partial")
    pq.write_table(table, tmp)
    if target.exists() and file_sha256(tmp) == file_sha256(target):
        tmp.unlink()
    else:
        os.replace(tmp, target)


def quarantine_summary(quarantined: list[dict], first: int = 3) -> list[str]:
    """Lines for people: the count per reason, most frequent first, with up to ``first``
    samples (or sources) each."""
    by_reason: dict[str, list[str]] = {}
    for entry in quarantined:
        by_reason.setdefault(entry["reason"], []).append(entry["input_id"])
    lines = []
    for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        names = list(dict.fromkeys(ids))
        lines.append(f"{len(ids):>6} x {reason} ({', '.join(names[:first])}"
                     f"{', ...' if len(names) > first else ''})")
    return lines


@dataclass(frozen=True)
class StoreView:
    """A read-only view of a finished store: arrays, attributes, manifest and quarantine.

    ``images``, ``masks`` (None when the store has none) and ``labels`` are the Zarr arrays, all
    store rows (quarantined slots included); ``manifest`` is a pyarrow Table of the written rows,
    whose ``index`` column addresses the arrays. :meth:`where` narrows the manifest.

    Examples
    --------
    >>> view = open_store("out/dataset.zarr")                               # doctest: +SKIP
    >>> at_40 = view.where({"bmode.dynamic_range_db": 40})                  # doctest: +SKIP
    >>> at_40.images[at_40.indices[0]].shape                                # doctest: +SKIP
    (224, 224)
    """

    path: Path
    group: zarr.Group
    attrs: dict
    manifest: pa.Table
    quarantine: pa.Table

    @property
    def images(self) -> zarr.Array:
        return self.group["images"]

    @property
    def masks(self) -> zarr.Array | None:
        return self.group["masks"] if "masks" in self.group else None

    @property
    def labels(self) -> zarr.Array:
        return self.group["labels"]

    @property
    def indices(self) -> np.ndarray:
        """The array rows of the manifest's samples, in manifest order (int64)."""
        return np.asarray(self.manifest.column("index").to_numpy(), dtype=np.int64)

    def where(self, conditions) -> StoreView:
        """This view with only the manifest rows that meet every condition (the arrays are
        unchanged).

        ``conditions``: as every reader takes them (:func:`augengine.manifest.rows_where`):
        ``{"bmode.dynamic_range_db": 40, "flip.axis": "horizontal"}`` keeps the rows made with
        both, ``{"label": 1}`` or ``"label=1"`` the malignant ones, ``"chain~rotate"`` those whose
        chain names a rotation; or a function of a row dict.
        """
        return replace(self, manifest=self.manifest.filter(rows_where(self.manifest, conditions)))


def _read_table(file: Path, what: str, missing: str | None = None) -> pa.Table | None:
    """A Parquet file of the store, or an ``InputError`` naming it (None if absent and allowed)."""
    try:
        return pq.read_table(file)
    except FileNotFoundError:
        if missing is None:
            return None
        raise InputError(f"{file.parent}: no {file.name} ({missing})") from None
    except (OSError, pa.ArrowInvalid) as error:
        raise InputError(f"{file}: {what} unreadable ({one_line(error)}); re-run the job to "
                         "rewrite it") from None


def open_store(path: str | Path) -> StoreView:
    """Open a store for reading (``augengine.open_store``); a clear error if it is not one.

    Stores written before the arrays had dimension names open the same way.
    """
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError(f"{path}: not an augengine store (no zarr.json)")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
    except Exception as error:  # noqa: BLE001 - a damaged zarr.json is a named problem
        raise InputError(f"{path}/zarr.json: unreadable ({one_line(error)})") from None
    if attrs.get("schema_version") not in READABLE_SCHEMAS:
        raise InputError(f"{path}: schema version {attrs.get('schema_version')!r}, "
                         f"this augengine reads {', '.join(map(str, READABLE_SCHEMAS))}")
    manifest = _read_table(manifest_file(path), "manifest",
                           missing="the run has not finished; re-run it to resume")
    quarantine = _read_table(records_dir(path) / "quarantine.parquet", "quarantine record")
    return StoreView(path, group, attrs, manifest,
                     QUARANTINE_SCHEMA.empty_table() if quarantine is None else quarantine)


def verify_store(path: str | Path, max_problems: int = 20) -> list[str]:
    """Check a store is whole; return the first problems found (empty list: it is whole).

    Checks: attributes and array shapes agree with the plan; the manifest file matches its
    recorded sha256; every planned index is in exactly one of manifest and quarantine, once;
    shard numbers are right; every image's and mask's sha256 and every label match its
    manifest row, and quarantined slots hold label -1. A shard that cannot be read is named.
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
    if file_sha256(manifest_file(view.path)) != attrs.get("manifest_sha256"):
        problem("manifest.parquet does not match the sha256 recorded in the group attributes")
    if not attrs.get("complete"):
        problem("the store is marked incomplete (an interrupted run: re-run the job to resume)")
    rows = view.manifest.to_pylist()
    quarantined = [q for q in view.quarantine.to_pylist() if q["index"] is not None]
    indices = Counter(r["index"] for r in rows)
    indices.update(q["index"] for q in quarantined)
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
    if not shard_size or extra:
        return problems
    by_shard: dict[int, tuple[list, list]] = {}
    for row in rows:
        if row["shard"] != row["index"] // shard_size:
            problem(f"sample {row['sample_id']} (index {row['index']}): shard {row['shard']}, "
                    f"expected {row['index'] // shard_size}")
        by_shard.setdefault(row["index"] // shard_size, ([], []))[0].append(row)
    for entry in quarantined:
        by_shard.setdefault(entry["index"] // shard_size, ([], []))[1].append(entry)
    for shard, (shard_rows, shard_quarantined) in sorted(by_shard.items()):
        start = shard * shard_size
        for text in _shard_problems(group, shard, start, min(start + shard_size, planned),
                                    shard_rows, shard_quarantined):
            problem(text)
    return problems


def inspect_store(path: str | Path) -> dict:
    """Counts by label and by op chain, shapes, shards, bytes on disk and quarantine reasons;
    for style transfer, the mean quality scores and how many samples they cover."""
    view = open_store(path)
    rows = view.manifest.to_pylist()
    size = sum(f.stat().st_size for f in view.path.rglob("*") if f.is_file())
    images = view.group["images"]
    styled = [step for row in rows for step in json.loads(row["ops"]) if step.get("op") == "nst"]
    quality = [step["quality"] for step in styled if "quality" in step]
    nst_quality = None
    if quality:
        nst_quality = {key: round(float(np.mean([q[key] for q in quality])), 4)
                       for key in quality[0]}
    return {
        "path": str(view.path),
        "job": view.attrs.get("job", {}).get("name"),
        "nst_quality_mean": nst_quality,
        # Samples whose style transfer was quality-checked (nst.quality_checks), of all styled.
        "nst_quality_assessed": ({"assessed": len(quality), "samples": len(styled)}
                                 if styled else None),
        "images": f"{tuple(images.shape)} {images.dtype}",
        "masks": "masks" in view.group,
        "shards": -(-images.shape[0] // view.attrs["shard_size"]),
        "counts": view.attrs.get("counts"),
        "by_label": dict(sorted(Counter(r["label"] for r in rows).items())),
        "by_chain": dict(Counter(r["chain"] for r in rows)),
        "quarantine": quarantine_summary(view.quarantine.to_pylist()),
        "bytes_on_disk": size,
        "complete": view.attrs.get("complete"),
    }
