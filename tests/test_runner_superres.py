"""The ``superres`` op in a job on a real (embedded) Ray: ROI crops upscaled by a checkpoint,
its sha256 in the manifest, and a resumed run that rebuilds a lost shard byte for byte."""
from __future__ import annotations

import json

import pytest

from augengine import store
from augengine.config import parse_job
from augengine.checksums import file_sha256
from augengine.runner import run_job
from tests.models.test_superres import write_superres_checkpoint
from tests.test_runner import small_job

pytestmark = pytest.mark.slow


def test_superres_op_in_a_job_records_its_checkpoint_and_resumes(ray_session, phantom_dir,
                                                                 tmp_path):
    checkpoint = write_superres_checkpoint(tmp_path / "checkpoint.pt", scale=2)
    sha = file_sha256(checkpoint)
    out = tmp_path / "ds.zarr"
    job = small_job(phantom_dir, out, steps=[
        {"op": "bmode", "dynamic_range_db": 50},
        {"op": "roi_crop", "margin_mm": 5},
        {"op": "scan_convert"},
        {"op": "resize", "size": [24, 24]},
        {"op": "superres", "checkpoint": str(checkpoint), "sha256": sha, "batch_size": 4},
        {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"}]},
    ], output={"path": str(out), "size": [48, 48], "shard_size": 3})
    config = parse_job(job)
    first = run_job(config, progress=False)
    assert first.quarantined == 0 and store.verify_store(out) == []
    manifest = (out / "records" / "manifest.parquet").read_bytes()
    rows = store.open_store(out).manifest.to_pylist()
    for row in rows:
        steps = json.loads(row["ops"])
        names = [step["op"] for step in steps]
        assert "superres" in names and names[-1] != "resize", \
            f"sample {row['sample_id']}: superres x2 of 24 px must give the 48 px output " \
            f"without a final resize, got {names}"
        recorded = next(step for step in steps if step["op"] == "superres")
        assert recorded["sha256"] == sha, f"sample {row['sample_id']}: sha256 not recorded"

    (out / "records" / "_journal" / "shard-000001.parquet").unlink()   # the driver died before recording
    (out / "records" / "manifest.parquet").unlink()
    resumed = run_job(config, progress=False)
    assert resumed.shards_built == 1, f"expected shard 1 rebuilt, got {resumed.shards_built}"
    assert store.verify_store(out) == []
    assert (out / "records" / "manifest.parquet").read_bytes() == manifest, \
        "the resumed run must reproduce the manifest (and so every image checksum)"
