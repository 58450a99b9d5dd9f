"""The runner on a real (embedded) Ray: whole stores, resume, actor death, bad samples."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import zarr

from augengine import store
from augengine.config import parse_job
from augengine.errors import ConfigError
from augengine.pipeline import replay
from augengine.plan import format_plan, make_plan
from augengine.runner import run_job

pytestmark = pytest.mark.slow


def small_job(phantom_dir: Path, out: Path, **changes) -> dict:
    job = {
        "name": "small",
        "seed": 5,
        "sources": [{"reader": "oasbud", "path": str(phantom_dir / "phantoms.mat")}],
        "steps": [
            {"op": "bmode", "sweep": {"dynamic_range_db": [40, 60]}},
            {"op": "roi_crop", "margin_mm": 5},
            {"op": "scan_convert"},
            {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"},
                        {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}}]},
        ],
        "output": {"path": str(out), "size": [48, 48], "shard_size": 5},
        "workers": 2,
    }
    job.update(changes)
    return job


def actor_pid(ray, actor) -> int:
    """The process id of a Ray actor, asked through Ray (``__ray_call__`` runs a function on the
    actor instance inside its process)."""
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))


@pytest.fixture(scope="module")
def reference(ray_session, phantom_dir, tmp_path_factory):
    """An uninterrupted run: the bytes every other run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "ds.zarr"
    config = parse_job(small_job(phantom_dir, out))
    result = run_job(config, progress=False)
    return config, result, (out / "manifest.parquet").read_bytes()


def test_run_writes_a_whole_store(reference, phantom_dir):
    config, result, _ = reference
    plan = make_plan(config)
    assert result.planned == plan.n_samples == len(plan.refs) * 6
    assert result.written == plan.n_samples and result.quarantined == 0
    assert store.verify_store(result.path) == []
    view = store.open_store(result.path)
    rows = view.manifest.to_pylist()
    assert [r["index"] for r in rows] == list(range(plan.n_samples))
    assert {r["label"] for r in rows} == {0, 1}
    assert view.group["masks"][0].any(), "the lesion mask should survive the chain"


def test_manifest_rows_replay_exactly(reference):
    """Any sample can be regenerated from its manifest row (source + concrete ops)."""
    config, result, _ = reference
    view = store.open_store(result.path)
    for row in view.manifest.to_pylist()[::7]:
        out = replay(row, config)
        assert store.image_sha256(out.data) == row["sha256"], f"sample {row['sample_id']} differs"


def test_rerun_keeps_every_shard_and_the_same_bytes(reference):
    config, result, manifest = reference
    again = run_job(config, progress=False)
    assert again.shards_built == 0 and again.shards_kept == make_plan(config).n_shards
    assert (Path(result.path) / "manifest.parquet").read_bytes() == manifest


def test_resume_rebuilds_lost_and_damaged_shards(ray_session, reference, phantom_dir, tmp_path):
    _, _, manifest = reference
    out = tmp_path / "ds.zarr"
    config = parse_job(small_job(phantom_dir, out))
    run_job(config, progress=False)
    (out / "_journal" / "shard-000001.parquet").unlink()            # driver died before recording
    zarr.open_group(out, mode="r+")["images"][10:15] = 7             # a shard damaged on disk
    (out / "manifest.parquet").unlink()
    result = run_job(config, progress=False)
    assert result.shards_built == 2, f"expected shards 1 and 2 rebuilt, got {result.shards_built}"
    assert store.verify_store(out) == []
    assert (out / "manifest.parquet").read_bytes() == manifest


def test_killed_actor_is_restarted_and_its_shard_retried(ray_session, reference, phantom_dir,
                                                         tmp_path):
    _, _, manifest = reference
    out = tmp_path / "ds.zarr"
    killed = []

    def kill_one_actor(shard, actors):
        if not killed:
            pid = actor_pid(ray_session, actors[0])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = run_job(parse_job(small_job(phantom_dir, out)), progress=False,
                     on_shard_done=kill_one_actor)
    assert killed, "the test did not kill an actor"
    assert result.written == result.planned
    assert store.verify_store(out) == []
    assert (out / "manifest.parquet").read_bytes() == manifest


def test_bad_samples_are_quarantined_and_the_rest_written(ray_session, phantom_dir, tmp_path):
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    good = sorted((phantom_dir / "npz").glob("*.npz"))[:2]
    for path in good:
        (npz_dir / path.name).write_bytes(path.read_bytes())
    with np.load(good[0]) as data:
        fields = dict(data)
    np.savez(npz_dir / "zeros.npz", **dict(fields, rf=np.zeros_like(fields["rf"]),
                                           sample_id="zeros", source_id="zeros"))
    out = tmp_path / "ds.zarr"
    job = small_job(phantom_dir, out, sources=[{"reader": "rf_npz", "path": str(npz_dir)}])
    result = run_job(parse_job(job), progress=False)
    assert result.quarantined == 6, "all 6 variants of the all-zero frame are quarantined"
    assert result.written == 12
    assert store.verify_store(out) == []
    reasons = store.open_store(out).quarantine.to_pylist()
    assert all("zeros" in r["input_id"] and "all zeros" in r["reason"] for r in reasons), reasons


def test_another_job_on_the_same_store_is_refused(ray_session, reference, phantom_dir):
    _, result, _ = reference
    other = parse_job(small_job(phantom_dir, Path(result.path), seed=6))
    with pytest.raises(ConfigError, match="different job config"):
        run_job(other, progress=False)


def test_plan_prints_exact_counts(phantom_dir, tmp_path):
    plan = make_plan(parse_job(small_job(phantom_dir, tmp_path / "x.zarr")))
    text = format_plan(plan)
    n = len(plan.refs)
    assert f"{n} input samples x 6 variants = {6 * n} output samples" in text
    assert "bmode(40) > roi_crop(5) > scan_convert > flip(horizontal)" in text


def test_a_store_feeds_the_next_job(ray_session, reference, tmp_path):
    """Originals of one store -> despeckled + flipped in a second store; ids carry over."""
    _, result, _ = reference
    out = tmp_path / "second.zarr"
    job = {"name": "second", "seed": 1,
           "sources": [{"reader": "store", "path": result.path,
                        "options": {"originals_only": True}}],
           "steps": [{"op": "srad", "iterations": 5},
                     {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "vertical"}]}],
           "output": {"path": str(out), "size": [48, 48], "shard_size": 8}}
    second = run_job(parse_job(job), progress=False)
    first_rows = store.open_store(result.path).manifest.to_pylist()
    originals = [r for r in first_rows if r["chain"].endswith("scan_convert")]
    assert second.written == 2 * len(originals) and second.quarantined == 0
    assert store.verify_store(out) == []
    rows = store.open_store(out).manifest.to_pylist()
    assert {r["source_id"] for r in rows} == {r["source_id"] for r in originals}
    assert rows[0]["input_id"] == originals[0]["sample_id"]
    assert store.open_store(out).group["masks"][0].any(), "masks travel with the images"


def test_progress_without_a_terminal_is_one_line_per_refresh(monkeypatch, capsys):
    # `ray job logs -f` shows the driver's stderr as a log: redraws must become lines.
    from augengine.runner import progress_bar

    bar = progress_bar(100, 10, "job", True)
    bar.mininterval, bar.miniters = 0, 1
    for _ in range(3):
        bar.update(30)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines) and len(lines) >= 3, f"progress log: {lines}"
    assert lines[0].startswith("job:  10%") and "100/100" in lines[-1], f"progress log: {lines}"
    assert "img/s" in lines[-1], f"no rate in {lines[-1]!r}"
