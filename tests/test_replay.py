"""``augengine.regenerate.replay`` and ``augengine replay STORE INDEX``: a stored sample made again
from its manifest row (and the job the store records), checked against its stored checksums."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import augengine.regenerate as regenerate
from augengine import store
from augengine.cli import main
from augengine.config import parse_job
from augengine.errors import InputError
from augengine.regenerate import replay
from augengine.runner import build_shard
from tests.test_batched_chains import nst_example, write_store  # noqa: F401 - fixture

pytestmark = pytest.mark.filterwarnings("ignore:no encoder_weights given")


def rf_job(mat_file, out) -> dict:
    """A demo-like job: RF phantoms -> B-mode at two dynamic ranges -> crop -> scan conversion ->
    identity, a flip or a random rotation (the mask follows), 8 samples a shard."""
    return {"name": "replay", "seed": 3,
            "sources": [{"reader": "oasbud", "path": str(mat_file)}],
            "steps": [{"op": "bmode", "sweep": {"dynamic_range_db": [40, 60]}},
                      {"op": "roi_crop", "margin_mm": 3},
                      {"op": "scan_convert"},
                      {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"},
                                  {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}}]}],
            "output": {"path": str(out), "size": [32, 32], "shard_size": 8}}


def write(job: dict, keep_as: str):
    """The store of ``job``, written in this process shard by shard as ``run_job`` does."""
    config = parse_job(job)
    out = config.output
    return write_store(config, lambda plan, items: build_shard(
        items, plan.chains, config.seed, tuple(out.size), out.shard_size), keep_as)


@pytest.fixture(scope="module")
def rf_store(phantom_dir, tmp_path_factory):
    """A store made from a private copy of the phantoms (a test removes it) and that copy."""
    root = tmp_path_factory.mktemp("replay")
    mat_file = root / "phantoms.mat"
    shutil.copy(phantom_dir / "phantoms.mat", mat_file)
    return write(rf_job(mat_file, root / "ds.zarr"), "rf.zarr"), mat_file


def test_every_row_replays_to_its_stored_bytes(rf_store):
    path, _ = rf_store
    view = store.open_store(path)
    job = parse_job(view.attrs["job"])
    rows = view.manifest.to_pylist()
    assert len(rows) == 4 * 6, f"expected 24 samples (4 frames x 6 variants), got {len(rows)}"
    for row in rows:
        frame = replay(row, job)
        assert store.image_sha256(frame.data) == row["sha256"], f"sample {row['sample_id']}"
        assert frame.mask is not None and store.image_sha256(frame.mask) == row["mask_sha256"], \
            f"sample {row['sample_id']}: mask"
        assert np.array_equal(frame.data, view.images[row["index"]]), f"sample {row['sample_id']}"


def test_replay_command_says_the_checksum_matches(rf_store, capsys):
    path, _ = rf_store
    row = store.open_store(path).manifest.to_pylist()[5]
    assert main(["replay", str(path), "5"]) == 0
    assert capsys.readouterr().out == (f"{path}: sample {row['sample_id']} (index 5): "
                                       f"regenerated, sha256 {row['sha256']} matches\n")


def test_replay_command_names_both_checksums_when_they_differ(rf_store, capsys, monkeypatch):
    path, _ = rf_store
    row = store.open_store(path).manifest.to_pylist()[5]
    apply_chain = regenerate.apply_chain

    def brighter(*args, **kwargs):  # the same chain, every grey level one higher
        out, applied = apply_chain(*args, **kwargs)
        out.data = np.minimum(out.data.astype(np.int16) + 1, 255).astype(np.uint8)
        return out, applied

    monkeypatch.setattr(regenerate, "apply_chain", brighter)
    assert main(["replay", str(path), "5"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: sample {row['sample_id']} (index 5): regenerated image "
                          f"differs: stored sha256 {row['sha256']}, regenerated ")
    assert out.count("\n") == 1 and len(out.split()[-1]) == 64, out


def test_replay_command_refuses_an_index_without_a_sample(rf_store, capsys):
    path, _ = rf_store
    assert main(["replay", str(path), "1000"]) == 2
    err = capsys.readouterr().err
    assert err == (f"augengine replay: error: {path}: no written sample at index 1000 (the store "
                   "plans 24; quarantined samples have none: augengine inspect)\n"), err


def test_replay_command_refuses_an_index_that_is_not_a_number(rf_store, capsys):
    path, _ = rf_store
    with pytest.raises(SystemExit) as info:
        main(["replay", str(path), "x"])
    assert info.value.code == 2
    assert "invalid int value: 'x'" in capsys.readouterr().err


def test_replay_without_its_source_says_which_is_missing(rf_store, capsys):
    path, mat_file = rf_store
    moved = mat_file.with_suffix(".away")
    mat_file.rename(moved)
    try:
        assert main(["replay", str(path), "3"]) == 2
    finally:
        moved.rename(mat_file)
    err = capsys.readouterr().err
    assert err.startswith("augengine replay: error: sample ") and str(mat_file) in err, err
    assert err.count("\n") == 1, err


def test_style_transfer_rows_replay_to_their_stored_bytes(nst_example):  # noqa: F811
    """The NST example job (a trained decoder, then identity or SRAD): each sample's pair is
    styled again alone, in a batch padded to batch_size, and gives the stored bytes."""
    _, _, path = nst_example
    view = store.open_store(path)
    job = parse_job(view.attrs["job"])
    rows = view.manifest.to_pylist()
    for row in (rows[0], rows[7], rows[-1]):
        assert json.loads(row["ops"])[1]["op"] == "nst", row["ops"]
        frame = replay(row, job)
        assert store.image_sha256(frame.data) == row["sha256"], f"sample {row['sample_id']}"


def test_style_transfer_replay_needs_the_decoder_checkpoint(nst_example, tmp_path):  # noqa: F811
    _, _, path = nst_example
    view = store.open_store(path)
    recorded = view.attrs["job"]
    missing = tmp_path / "gone.pt"
    job = parse_job(dict(recorded, nst=dict(recorded["nst"], checkpoint=str(missing))))
    row = view.manifest.to_pylist()[0]
    with pytest.raises(InputError) as info:
        replay(row, job)
    message = str(info.value)
    assert message.startswith(f"sample {row['sample_id']}: replay needs the inputs and model "
                              "files the job read (") and str(missing) in message, message
