"""Issue 10 through ``run``: the defects a hostile user found, each reproduced end to end."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import yaml
import zarr
from PIL import Image

from augengine import store
from augengine.cli import main
from augengine.config import parse_job
from augengine.errors import ConfigError
from augengine.runner import run_job
from tests.test_runner import reference, small_job  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def write_job(tmp_path, job) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


def test_run_refuses_a_folder_of_user_files_and_keeps_them(phantom_dir, tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("notes")
    assert main(["run", write_job(tmp_path, small_job(phantom_dir, keep))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is not an augengine store" in err, err
    assert sorted(os.listdir(keep)) == ["notes.txt"] and (keep / "notes.txt").read_text() == "notes"


def test_run_refuses_the_sources_folder_and_the_working_directory(phantom_dir, tmp_path,
                                                                  monkeypatch):
    with pytest.raises(ConfigError, match="holds the source"):
        run_job(parse_job(small_job(phantom_dir, phantom_dir)), progress=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="working directory"):
        run_job(parse_job(small_job(phantom_dir, ".")), progress=False)
    assert sorted(os.listdir(tmp_path)) == [], "nothing written into the working directory"


def test_a_job_that_cannot_fit_in_memory_is_refused_before_writing(phantom_dir, tmp_path):
    out = tmp_path / "huge.zarr"
    job = small_job(phantom_dir, out, output={"path": str(out), "size": [8192, 8192],
                                               "shard_size": 256})
    with pytest.raises(ConfigError, match=r"one actor needs about 96\.\d GiB, more than this "
                                          r"machine has"):
        run_job(parse_job(job), progress=False)
    assert not out.exists()


# --- case 3: inputs that changed since the store was made -----------------------------------------

def busi_folder(root, names):
    rng = np.random.default_rng(3)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / name)


def busi_job(data, out):
    return parse_job({"name": "busi", "seed": 1, "sources": [{"reader": "busi", "path": str(data)}],
                      "steps": [{"op": "flip", "sweep": {"axis": ["horizontal", "vertical"]}}],
                      "output": {"path": str(out), "size": [32, 32], "shard_size": 2}})


def test_changed_sources_are_refused_then_rebuilt_shard_by_shard(ray_session, tmp_path):
    data, out = tmp_path / "busi", tmp_path / "out.zarr"
    busi_folder(data, ["benign/a.png", "benign/b.png", "malignant/c.png"])
    first = run_job(busi_job(data, out), progress=False)
    assert (first.written, first.shards_built) == (6, 3)
    busi_folder(data, ["malignant/d.png"])                     # one image added at the end
    with pytest.raises(ConfigError, match=r"inputs changed: 1 added \('malignant/d'\).*--rebuild"):
        run_job(busi_job(data, out), progress=False)
    assert store.verify_store(out) == [], "a refused resume leaves the store as it was"
    rebuilt = run_job(busi_job(data, out), progress=False, rebuild=True)
    assert (rebuilt.written, rebuilt.shards_kept, rebuilt.shards_built) == (8, 3, 1)
    os.utime(data / "benign" / "b.png", ns=(1, 1))              # one file touched: its shard only
    again = run_job(busi_job(data, out), progress=False, rebuild=True)
    assert (again.shards_kept, again.shards_built) == (3, 1)
    fresh = run_job(busi_job(data, tmp_path / "fresh.zarr"), progress=False)
    assert store.verify_store(out) == [] and fresh.written == 8
    assert (out / "records" / "manifest.parquet").read_bytes() == \
        (tmp_path / "fresh.zarr" / "records" / "manifest.parquet").read_bytes()
    (data / "malignant" / "d.png").unlink()                    # and shrinking back
    shrunk = run_job(busi_job(data, out), progress=False, rebuild=True)
    assert (shrunk.planned, shrunk.shards_kept, shrunk.shards_built) == (6, 3, 0)
    assert store.verify_store(out) == [] and len(os.listdir(out / "records" / "_journal")) == 3


def test_output_inside_a_source_folder_is_refused(tmp_path):
    data = tmp_path / "busi"
    busi_folder(data, ["benign/a.png"])
    with pytest.raises(ConfigError, match="inside the source folder"):
        run_job(busi_job(data, data / "out.zarr"), progress=False)


# --- cases 4 and 5: damage is rebuilt -------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated shard", "zeroed masks", "flipped label"])
def test_resume_rebuilds_damaged_images_masks_and_labels(ray_session, reference, phantom_dir,
                                                         tmp_path, damage):
    _, _, manifest = reference
    out = tmp_path / "ds.zarr"
    config = parse_job(small_job(phantom_dir, out))
    run_job(config, progress=False)
    group = zarr.open_group(out, mode="r+")
    if damage == "truncated shard":
        file = out / "images" / "c" / "1" / "0" / "0"
        file.write_bytes(file.read_bytes()[:100])
    elif damage == "zeroed masks":
        group["masks"][5:10] = 0
    else:
        group["labels"][5:10] = 1 - group["labels"][5:10]
    assert store.verify_store(out), f"verify must see the {damage}"
    result = run_job(config, progress=False)
    assert result.shards_built == 1, f"{damage}: expected shard 1 rebuilt, {result.shards_built}"
    assert store.verify_store(out) == []
    assert (out / "records" / "manifest.parquet").read_bytes() == manifest


# --- case 6: unreadable sources are shown -----------------------------------------------------

def test_an_unreadable_source_is_quarantined_and_shown(ray_session, phantom_dir, tmp_path, capsys):
    broken = tmp_path / "broken.mat"
    broken.write_bytes(b"not a MATLAB file")
    out = tmp_path / "ds.zarr"
    job = small_job(phantom_dir, out)
    job["sources"].append({"reader": "oasbud", "path": str(broken)})
    assert main(["run", "--quiet", write_job(tmp_path, job)]) == 0
    err = capsys.readouterr().err
    assert "left out (count x reason):" in err, err
    assert any("1 x source unreadable: " in line and line.endswith(f"({broken})")
               for line in err.splitlines()), err
    quarantine = store.open_store(out).quarantine.to_pylist()
    assert [q["source_path"] for q in quarantine] == [str(broken)]
    assert main(["inspect", str(out)]) == 0
    assert "source unreadable" in capsys.readouterr().out


# --- case 9: a failing shard write is one line naming the shard -------------------------------

def test_a_shard_that_cannot_be_written_stops_the_run_in_one_line(ray_session, reference,
                                                                  phantom_dir, tmp_path, capsys):
    out = tmp_path / "ds.zarr"
    job = small_job(phantom_dir, out)
    run_job(parse_job(job), progress=False)
    (out / "records" / "_journal" / "shard-000002.parquet").unlink()
    blocker = out / "images" / "c" / "2" / "0" / "0"
    blocker.unlink()
    (blocker / "x").mkdir(parents=True)  # the shard's file is now a folder: writing it fails
    assert main(["run", "--quiet", write_job(tmp_path, job)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "shard 2 failed (IsADirectoryError" in err and "resume" in err, err
    shutil.rmtree(blocker)
    assert main(["run", "--quiet", write_job(tmp_path, job)]) == 0
    assert store.verify_store(out) == []


def test_a_chained_job_resumes_after_its_source_store_was_resumed(ray_session, reference,
                                                                   tmp_path):
    config, result, _ = reference
    job = parse_job({"name": "second", "seed": 1,
                     "sources": [{"reader": "store", "path": result.path}],
                     "steps": [{"op": "flip", "axis": "vertical"}],
                     "output": {"path": str(tmp_path / "second.zarr"), "size": [48, 48],
                                "shard_size": 8}})
    run_job(job, progress=False)
    assert run_job(config, progress=False).shards_built == 0   # the source store, resumed
    again = run_job(job, progress=False)
    assert again.shards_built == 0, "a resume that changed nothing must not change its identity"
