"""Issue 10: the store never destroys what it did not create, is written by one run at a time,
knows the inputs it was made from, and names every damaged part instead of raising."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from augengine import store
from augengine.errors import ConfigError, InputError
from tests.test_store import N, SHARD, SIZE, make_rows, whole_store  # noqa: F401 - fixture


def claim(path, sources=()):
    """What ``run`` does before its first write: check the path, lock it, create the store."""
    store.check_output_path(path, list(sources))
    with store.locked_output(path):
        store.create_store(path, N, SIZE, SHARD, False, "h", {})


# --- case 1: never delete or write into the user's files ------------------------------------------

def test_a_folder_of_user_files_is_refused_and_kept(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("notes")
    with pytest.raises(ConfigError, match="is not an augengine store and holds 1 entries"):
        claim(keep)
    assert (keep / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"], "nothing written into it"


def test_the_working_directory_and_its_parents_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for path in (".", str(work), str(tmp_path)):
        with pytest.raises(ConfigError, match="working directory"):
            claim(path)
    assert list(work.iterdir()) == []


def test_sources_and_their_folders_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "benign").mkdir(parents=True)
    mat = tmp_path / "scans.mat"
    mat.write_bytes(b"x")
    with pytest.raises(ConfigError, match="holds the source"):
        claim(data, [str(data / "benign")])          # a folder above a source
    with pytest.raises(ConfigError, match="holds the source"):
        claim(mat, [str(mat)])                       # the source file itself
    with pytest.raises(ConfigError, match="inside the source folder"):
        claim(data / "benign" / "out.zarr", [str(data)])  # discovery would read the store
    assert mat.read_bytes() == b"x" and not (data / "benign" / "out.zarr").exists()
    claim(tmp_path / "out.zarr", [str(mat)])          # beside a file source: fine


def test_an_existing_file_is_refused(tmp_path):
    file = tmp_path / "thesis.pdf"
    file.write_bytes(b"%PDF")
    with pytest.raises(ConfigError, match="not a directory"):
        claim(file)
    assert file.read_bytes() == b"%PDF"


def test_an_empty_folder_and_an_own_store_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    claim(empty)
    claim(empty)  # the same job again: resumes
    assert (empty / "zarr.json").exists()


def test_a_foreign_zarr_group_is_refused(tmp_path):
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["owner"] = "someone"
    with pytest.raises(ConfigError, match="not an augengine store"):
        claim(tmp_path / "other.zarr")


# --- case 7: one run at a time --------------------------------------------------------------------

HOLD = """
import sys, time
from augengine import store
with store.locked_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_is_refused_while_the_first_holds_the_store(tmp_path):
    path = tmp_path / "ds.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another augengine run \(pid {holder.pid} "):
            claim(path)
    finally:
        holder.kill()
        holder.wait()
    claim(path)  # the holder died (SIGKILL): its lock is gone with it and is taken over
    assert f"pid {os.getpid()} " in (path / store.RECORDS / store.LOCK_FILE).read_text()


def _race(path, config_hash, barrier, results):
    barrier.wait()
    try:
        store.check_output_path(path, [])
        with store.locked_output(path):
            store.create_store(path, N, SIZE, SHARD, False, config_hash, {})
        results.put(config_hash)
    except ConfigError:
        results.put(None)


def test_two_jobs_racing_for_one_store_never_both_win(tmp_path):
    context = multiprocessing.get_context("fork")
    for attempt in range(20):
        path = tmp_path / f"race{attempt}.zarr"
        barrier, results = context.Barrier(2), context.Queue()
        racers = [context.Process(target=_race, args=(path, h, barrier, results))
                  for h in ("job-a", "job-b")]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
        winners = [h for h in (results.get(timeout=5), results.get(timeout=5)) if h]
        assert len(winners) == 1, f"attempt {attempt}: accepted {winners}"
        assert zarr.open_group(path, mode="r").attrs["config_hash"] == winners[0]


# --- case 3: the store knows its inputs -----------------------------------------------------------

INPUTS = [{"sample_id": "a", "files": json.dumps([["/d/a.png", 10, 1]])},
          {"sample_id": "b", "files": json.dumps([["/d/b.png", 12, 1]])}]


def test_changed_inputs_are_refused_with_what_changed(tmp_path):
    path = tmp_path / "ds.zarr"
    store.create_store(path, 4, SIZE, 2, False, "h", {}, INPUTS)
    store.create_store(path, 4, SIZE, 2, False, "h", {}, INPUTS)  # unchanged: accepted
    changed = [INPUTS[0], {"sample_id": "b", "files": json.dumps([["/d/b.png", 13, 2]])},
               {"sample_id": "c", "files": json.dumps([["/d/c.png", 9, 1]])}]
    with pytest.raises(ConfigError) as info:
        store.create_store(path, 6, SIZE, 2, False, "h", {}, changed)
    message = str(info.value)
    assert "1 added ('c')" in message and "1 modified ('b')" in message, message
    assert "--rebuild" in message and "\n" not in message
    assert zarr.open_group(path, mode="r")["images"].shape[0] == 4, "refused: nothing changed"


def test_rebuild_takes_the_new_inputs_and_length(tmp_path):
    path = tmp_path / "ds.zarr"
    store.create_store(path, 4, SIZE, 2, True, "h", {}, INPUTS)
    store.create_store(path, 6, SIZE, 2, True, "h", {}, INPUTS[:1] * 3, rebuild=True)
    group = zarr.open_group(path, mode="r")
    assert {name: group[name].shape[0] for name in ("images", "masks", "labels")} == \
        {"images": 6, "masks": 6, "labels": 6}
    assert group.attrs["planned"] == 6 and store.read_inputs(path) == INPUTS[:1] * 3


# --- cases 4 and 5: damaged shards, masks and labels ----------------------------------------------

def shard_file(path, shard):
    return path / "images" / "c" / str(shard) / "0" / "0"


@pytest.mark.parametrize("damage", ["truncate", "flip-index"])
def test_a_damaged_shard_is_named_and_can_be_rewritten(whole_store, damage):
    file = shard_file(whole_store, 1)
    data = bytearray(file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-10] ^= 0xFF   # the shard index (and its crc32c) sits at the end
    file.write_bytes(bytes(data))
    problems = store.verify_store(whole_store)
    assert problems and problems[0].startswith("shard 1 of images: unreadable ("), problems
    rows = store.read_journal(whole_store, 1).rows
    group = zarr.open_group(whole_store, mode="r")
    assert store.shard_problem(group, 1, 4, 8, rows).startswith("shard 1 of images: unreadable")
    images = zarr.open_group(whole_store, mode="r")["images"]
    restored = np.stack([np.full(SIZE, k, np.uint8) for k in range(4)])
    labels = np.zeros(4, np.int8)
    store.write_shard(whole_store, 4, restored, labels, restored)  # the rebuild path
    assert (images[4:8] == restored).all()


def test_zeroed_masks_fail_verify(whole_store):
    zarr.open_group(whole_store, mode="r+")["masks"][0:SHARD] = 0
    problems = store.verify_store(whole_store)
    assert any("index 0" in p and "mask sha256" in p for p in problems), problems


def test_a_quarantined_slot_must_hold_label_minus_one(tmp_path, rng):
    path = tmp_path / "q.zarr"
    store.create_store(path, 2, SIZE, SHARD, False, "h", {})
    images = rng.integers(0, 256, (2, *SIZE), dtype=np.uint8)
    labels = np.array([0, -1], np.int8)
    store.write_shard(path, 0, images, labels, None)
    quarantined = [{"index": 1, "input_id": "s1", "source_path": "/x", "variant": 0, "shard": 0,
                    "reason": "NaN in RF"}]
    store.finalize(path, make_rows(images[:1], labels[:1], 0), quarantined, 2)
    assert store.verify_store(path) == []
    zarr.open_group(path, mode="r+")["labels"][0:2] = np.array([0, 1], np.int8)
    assert store.verify_store(path) == ["index 1 (quarantined): label 1 in array, expected -1"]


@pytest.mark.parametrize("name", ["manifest.parquet", "quarantine.parquet"])
def test_a_truncated_parquet_file_is_one_line(whole_store, name):
    file = whole_store / "records" / name
    file.write_bytes(file.read_bytes()[:40])
    problems = store.verify_store(whole_store)
    assert len(problems) == 1 and name in problems[0] and "unreadable" in problems[0], problems
    with pytest.raises(InputError, match=f"{name}: .* unreadable"):
        store.inspect_store(whole_store)


# --- case 6: unreadable sources are quarantine records --------------------------------------------

def test_unreadable_sources_are_quarantine_records(tmp_path, rng):
    path = tmp_path / "s.zarr"
    store.create_store(path, 1, SIZE, SHARD, False, "h", {})
    images = rng.integers(0, 256, (1, *SIZE), dtype=np.uint8)
    labels = np.zeros(1, np.int8)
    store.write_shard(path, 0, images, labels, None)
    counts = store.finalize(path, make_rows(images, labels, 0), [], 1,
                            [("/data/broken.mat", "not a MATLAB file")])
    assert counts["unreadable_sources"] == 1 and counts["quarantined"] == 0
    record = pq.read_table(path / "records" / "quarantine.parquet").to_pylist()
    assert record == [{"index": None, "input_id": "/data/broken.mat",
                       "source_path": "/data/broken.mat", "variant": None, "shard": None,
                       "reason": "source unreadable: not a MATLAB file"}]
    assert store.verify_store(path) == [], "a source with no planned samples leaves no gap"
    assert store.inspect_store(path)["quarantine"] == [
        "     1 x source unreadable: not a MATLAB file (/data/broken.mat)"]
