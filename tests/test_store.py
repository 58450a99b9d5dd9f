"""The store: layout, journal, manifest, and a verify that catches every way a store can be broken."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from augengine import store
from augengine.errors import ConfigError, InputError

N, SHARD, SIZE = 10, 4, (16, 16)


def make_rows(images, labels, start, masks=None):
    return [{"index": start + k, "sample_id": f"s{start + k}:0", "input_id": f"s{start + k}",
             "source_id": f"s{start + k}", "source_path": "/x", "reader": "busi",
             "label": int(labels[k]), "variant": 0, "chain": "identity",
             "ops": json.dumps([{"op": "identity"}]), "seed": 1, "shard": (start + k) // SHARD,
             "has_mask": masks is not None, "sha256": store.image_sha256(images[k]),
             "mask_sha256": None if masks is None else store.image_sha256(masks[k])}
            for k in range(len(images))]


@pytest.fixture
def whole_store(tmp_path, rng):
    path = tmp_path / "ds.zarr"
    store.create_store(path, N, SIZE, SHARD, True, "hash-a", {"name": "t"})
    rows = []
    for shard in range(-(-N // SHARD)):
        start, stop = shard * SHARD, min((shard + 1) * SHARD, N)
        images = rng.integers(0, 256, (stop - start, *SIZE), dtype=np.uint8)
        labels = (np.arange(start, stop) % 2).astype(np.int8)
        masks = (images > 128).astype(np.uint8)
        store.write_shard(path, start, images, labels, masks)
        shard_rows = make_rows(images, labels, start, masks)
        store.write_journal(path, shard, shard_rows, [], f"digest-{shard}")
        rows += shard_rows
    store.finalize(path, rows, [], N)
    return path


def test_layout_chunks_and_shards(whole_store):
    group = zarr.open_group(whole_store, mode="r")
    images = group["images"]
    assert images.shape == (N, *SIZE) and images.dtype == np.uint8
    assert images.chunks == (1, *SIZE), "one sample per chunk"
    assert images.shards == (SHARD, *SIZE)
    assert group["labels"].dtype == np.int8 and group["masks"].shape == (N, *SIZE)
    assert group["labels"].chunks == (SHARD,), "labels chunked along the image shards"
    attrs = dict(group.attrs)
    assert attrs["schema_version"] == store.SCHEMA_VERSION and attrs["complete"] is True
    assert attrs["counts"] == {"planned": N, "written": N, "quarantined": 0, "unreadable_sources": 0,
                               "by_label": {"0": 5, "1": 5}}
    assert (whole_store / "records" / "manifest.parquet").exists()


def test_whole_store_verifies(whole_store):
    assert store.verify_store(whole_store) == []


def test_journal_round_trip(tmp_path):
    path = tmp_path / "s.zarr"
    path.mkdir()
    quarantined = [{"index": 3, "input_id": "a", "source_path": "/a", "variant": 0, "shard": 0,
                    "reason": "RF is all zeros (Amax = 0)"}]
    store.write_journal(path, 0, [], quarantined, "digest-0")
    assert store.read_journal(path, 0) == store.Journal([], quarantined, "digest-0")
    assert store.read_journal(path, 1) is None
    (path / "records" / "_journal" / "shard-000002.parquet").write_bytes(b"torn")
    assert store.read_journal(path, 2) is None, "an unreadable journal means: redo the shard"


def test_verify_catches_a_changed_image(whole_store):
    zarr.open_group(whole_store, mode="r+")["images"][0:SHARD] = 0
    problems = store.verify_store(whole_store)
    assert any("index 0" in p and "sha256" in p for p in problems), problems


def test_verify_catches_a_changed_label(whole_store):
    group = zarr.open_group(whole_store, mode="r+")
    labels = group["labels"][8:10]
    labels[1] = 1 - labels[1]
    group["labels"][8:10] = labels
    problems = store.verify_store(whole_store)
    assert any("index 9" in p and "label" in p for p in problems), problems


def test_verify_catches_missing_and_duplicate_rows(whole_store):
    table = pq.read_table(whole_store / "records" / "manifest.parquet")
    rows = table.to_pylist()
    rows = rows[:-1] + [rows[0]]
    pq.write_table(pa.Table.from_pylist(rows, schema=store.MANIFEST_SCHEMA),
                   whole_store / "records" / "manifest.parquet")
    problems = store.verify_store(whole_store)
    joined = "\n".join(problems)
    assert "sha256 recorded" in joined, "a rewritten manifest must not match its recorded hash"
    assert "index 0 appears 2 times" in joined and "1 planned samples missing" in joined, joined


def test_verify_reports_an_unfinished_store(tmp_path):
    path = tmp_path / "s.zarr"
    store.create_store(path, N, SIZE, SHARD, False, "h", {})
    problems = store.verify_store(path)
    assert problems and "no manifest.parquet" in problems[0]
    assert store.verify_store(tmp_path / "nothing") == [f"{tmp_path / 'nothing'}: not an augengine store (no zarr.json)"]


def test_quarantined_samples_count_as_planned(tmp_path, rng):
    path = tmp_path / "q.zarr"
    store.create_store(path, 3, SIZE, SHARD, False, "h", {})
    images = rng.integers(0, 256, (3, *SIZE), dtype=np.uint8)
    images[1] = 0
    labels = np.array([0, -1, 1], np.int8)
    store.write_shard(path, 0, images, labels, None)
    rows = [r for r in make_rows(images, labels, 0) if r["index"] != 1]
    quarantined = [{"index": 1, "input_id": "s1", "source_path": "/x", "variant": 0, "shard": 0,
                    "reason": "NaN in RF"}]
    counts = store.finalize(path, rows, quarantined, 3)
    assert counts["written"] == 2 and counts["quarantined"] == 1
    assert store.verify_store(path) == []
    view = store.open_store(path)
    assert view.quarantine.to_pylist()[0]["reason"] == "NaN in RF"


def test_another_job_cannot_reuse_the_store(whole_store):
    store.create_store(whole_store, N, SIZE, SHARD, True, "hash-a", {})  # same job: accepted
    with pytest.raises(ConfigError, match="different job config"):
        store.create_store(whole_store, N, SIZE, SHARD, True, "hash-b", {})


def test_shard_problem_detects_changes(whole_store):
    group = zarr.open_group(whole_store, mode="r")
    rows = store.read_journal(whole_store, 1).rows
    assert store.shard_problem(group, 1, 4, 8, rows) is None
    rows[0] = dict(rows[0], sha256="0" * 64)
    assert "index 4" in store.shard_problem(group, 1, 4, 8, rows)


def test_inspect_counts(whole_store):
    info = store.inspect_store(whole_store)
    assert info["by_label"] == {0: 5, 1: 5} and info["by_chain"] == {"identity": 10}
    assert info["shards"] == 3 and info["bytes_on_disk"] > 0


def test_open_store_rejects_foreign_schema(whole_store):
    zarr.open_group(whole_store, mode="r+").attrs["schema_version"] = 99
    with pytest.raises(InputError, match="schema version 99"):
        store.open_store(whole_store)
