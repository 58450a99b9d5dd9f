"""write_shard encodes shard files itself (zarr's per-chunk overhead, BENCHMARKS.md): its files
must be the very bytes zarr writes for the same data, and zarr must read them back."""
from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from augengine import store

SHARD, SIZE = 4, (12, 10)


def files_of(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != store.LOCK_FILE}


def random_shard(rng, n, with_masks):
    images = rng.integers(0, 256, (n, *SIZE), dtype=np.uint8)
    images[rng.random(n) < 0.3] = 0                       # quarantined slots: all fill value
    labels = rng.integers(-1, 3, n).astype(np.int8)
    masks = (rng.random((n, *SIZE)) < 0.2).astype(np.uint8) if with_masks else None
    if masks is not None:
        masks[rng.random(n) < 0.5] = 0                    # samples without a mask
    return images, labels, masks


@pytest.mark.parametrize("n_samples,with_masks,seed", [(10, True, 0), (8, True, 1),
                                                       (10, False, 2), (3, True, 3)])
def test_write_shard_bytes_are_zarrs_own(tmp_path, n_samples, with_masks, seed):
    rng = np.random.default_rng(seed)
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    for path in (ours, theirs):
        store.create_store(path, n_samples, SIZE, SHARD, True, "h", {})
    group = zarr.open_group(theirs, mode="r+")
    written = []
    for start in range(0, n_samples, SHARD):
        n = min(SHARD, n_samples - start)
        images, labels, masks = random_shard(rng, n, with_masks)
        if start == 0:
            labels[:] = -1                                # a wholly quarantined labels chunk
            if masks is not None:
                masks[:] = 0                              # and no mask at all: no masks file
        store.write_shard(ours, start, images, labels, masks)
        group["images"][start:start + n] = images
        group["labels"][start:start + n] = labels
        group["masks"][start:start + n] = 0 if masks is None else masks
        written.append((images, labels, masks))
    assert files_of(ours) == files_of(theirs)
    back = zarr.open_group(ours, mode="r")
    stacked = [np.concatenate(part) for part in zip(*[w[:2] for w in written])]
    np.testing.assert_array_equal(back["images"][:], stacked[0])
    np.testing.assert_array_equal(back["labels"][:], stacked[1])
    assert back["images"][n_samples - 1].shape == SIZE


def test_a_rewrite_replaces_a_damaged_shard_and_ignores_stray_partials(tmp_path, rng):
    path = tmp_path / "s.zarr"
    store.create_store(path, SHARD, SIZE, SHARD, False, "h", {})
    images, labels, _ = random_shard(rng, SHARD, False)
    images[0] = 9
    store.write_shard(path, 0, images, labels, None)
    shard_file = path / "images" / "c" / "0" / "0" / "0"
    good = shard_file.read_bytes()
    shard_file.write_bytes(good[:50])                     # truncated by a crash elsewhere
    (shard_file.parent / "0.123-456.partial").write_bytes(b"a killed writer's leftovers")
    store.write_shard(path, 0, images, labels, None)
    assert shard_file.read_bytes() == good
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["images"][:], images)


def test_a_failed_write_leaves_the_old_shard_and_no_temporary_file(tmp_path, rng, monkeypatch):
    path = tmp_path / "s.zarr"
    store.create_store(path, SHARD, SIZE, SHARD, False, "h", {})
    images, labels, _ = random_shard(rng, SHARD, False)
    images[0] = 9
    store.write_shard(path, 0, images, labels, None)
    before = files_of(path)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        store.write_shard(path, 0, images[::-1].copy(), labels, None)
    assert files_of(path) == before


def test_a_layout_it_does_not_encode_is_refused(tmp_path):
    group = zarr.open_group(tmp_path / "other.zarr", mode="a")
    group.create_array("images", shape=(4, *SIZE), chunks=(1, *SIZE), shards=(4, *SIZE),
                       dtype="uint8", compressors=zarr.codecs.BloscCodec())
    group.create_array("labels", shape=(4,), chunks=(4,), dtype="int8")
    with pytest.raises(ValueError, match="not in the layout write_shard encodes"):
        store.write_shard(tmp_path / "other.zarr", 0, np.zeros((4, *SIZE), np.uint8),
                          np.zeros(4, np.int8), None)


def test_rows_that_are_not_one_whole_shard_are_refused(tmp_path):
    path = tmp_path / "s.zarr"
    store.create_store(path, 10, SIZE, SHARD, False, "h", {})
    with pytest.raises(ValueError, match="not one whole shard"):
        store.write_shard(path, 2, np.ones((4, *SIZE), np.uint8), np.zeros(4, np.int8), None)
