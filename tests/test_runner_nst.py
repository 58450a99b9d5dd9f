"""Style-transfer jobs on the runner: pairs become outputs, post-steps apply, provenance is kept."""
from __future__ import annotations

import json

import pytest

from augengine import store
from augengine.config import parse_job
from augengine.errors import InputError
from augengine.nst.training import train_feedforward
from augengine.plan import make_plan
from augengine.runner import run_job
from tests.nst.test_training import TINY, make_texture_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nstjob")
    source = make_texture_store(root / "originals.zarr", n_per_class=3, size=32)
    settings = dict(TINY, pairing="within_class_all")
    train_feedforward(source, root / "run", epochs=1, lrp=False, **settings)
    return source, root / "run" / "checkpoint.pt", root


def nst_job(source, checkpoint, out, **changes):
    job = {"name": "nst", "seed": 4,
           "sources": [{"reader": "store", "path": str(source)}],
           "nst": {"checkpoint": str(checkpoint), "batch_size": 4},
           "steps": [{"one_of": [{"op": "identity"},
                                 {"op": "srad", "iterations": 3, "dynamic_range_db": 50}]}],
           "output": {"path": str(out), "size": [32, 32], "shard_size": 5},
           "workers": 2}
    job.update(changes)
    return job


def test_nst_job_writes_every_pair_with_its_provenance(ray_session, trained):
    source, checkpoint, root = trained
    config = parse_job(nst_job(source, checkpoint, root / "styled.zarr"))
    plan = make_plan(config)
    assert plan.n_samples == 2 * (3 * 3 + 3 * 3)
    result = run_job(config, progress=False)
    assert result.written == plan.n_samples and result.quarantined == 0
    assert store.verify_store(result.path) == []
    rows = store.open_store(result.path).manifest.to_pylist()
    history, nst = json.loads(rows[0]["ops"])[:2]
    assert history["op"] == "from_store" and history["sample_id"] == "t0:0"
    assert nst["op"] == "nst" and nst["content_id"] == "t0:0"
    assert nst["style_id"] == "t0:0" and len(nst["checkpoint_sha256"]) == 64
    assert {"alpha", "beta", "style_layers"} <= set(nst["loss"])
    quality = nst["quality"]
    assert 0 < quality["ssim_to_content"] <= 1 and quality["style_distance_before"] == 0.0, \
        f"t0 styled by itself starts at style distance 0: {quality}"
    other = json.loads(rows[2]["ops"])[1]["quality"]
    assert other["style_distance_before"] > 0, other
    assert rows[3]["sample_id"] == "t0:0~t1:0:1" and json.loads(rows[3]["ops"])[2]["op"] == "srad"
    # Within-class: a content's styles are from its own class only.
    for row in rows:
        nst = json.loads(row["ops"])[1]
        assert int(nst["content_id"][1]) // 3 == int(nst["style_id"][1]) // 3, row["sample_id"]


def test_nst_job_resumes_to_identical_bytes(ray_session, trained, tmp_path):
    source, checkpoint, root = trained
    reference = run_job(parse_job(nst_job(source, checkpoint, tmp_path / "a.zarr")),
                        progress=False)
    out = tmp_path / "b.zarr"
    config = parse_job(nst_job(source, checkpoint, out))
    run_job(config, progress=False)
    (out / "_journal" / "shard-000002.parquet").unlink()
    (out / "manifest.parquet").unlink()
    again = run_job(config, progress=False)
    assert again.shards_built == 1
    assert ((out / "manifest.parquet").read_bytes()
            == (tmp_path / "a.zarr" / "manifest.parquet").read_bytes()), reference.path


def test_nst_job_with_a_missing_checkpoint_fails_clearly(ray_session, trained, tmp_path):
    source, _, _ = trained
    config = parse_job(nst_job(source, tmp_path / "none.pt", tmp_path / "c.zarr"))
    with pytest.raises(InputError, match="none.pt: checkpoint not found"):
        run_job(config, progress=False)


def test_nst_preview_shows_content_style_result_and_relevance(ray_session, trained, tmp_path):
    from PIL import Image

    from augengine.models import fit_classifier
    from augengine.preview import preview_nst

    source, checkpoint, root = trained
    result = run_job(parse_job(nst_job(source, checkpoint, tmp_path / "p.zarr")), progress=False)
    fit_classifier(source, tmp_path / "cls.pt", arch="resnet18", epochs=1, batch_size=4)
    png = preview_nst(result.path, tmp_path / "nst.png", count=4, classifier=tmp_path / "cls.pt")
    with Image.open(png) as image:
        assert image.size == (4 * 160, 4 * 190), "4 rows of content | style | result | relevance"
    plain = preview_nst(result.path, tmp_path / "plain.png", count=2)
    with Image.open(plain) as image:
        assert image.size == (3 * 160, 2 * 190)


def test_iterative_nst_job_with_lrp(ray_session, trained, tmp_path):
    """The paper's optimisation per pair, its content loss weighted by the classifier's LRP."""
    from augengine.models import fit_classifier

    source, _, _ = trained
    fit_classifier(source, tmp_path / "cls.pt", arch="resnet18", epochs=1, batch_size=4)
    job = nst_job(source, None, tmp_path / "iter.zarr", steps=[])
    job["nst"] = {"mode": "iterative", "arch": "resnet18", "iterations": 3, "batch_size": 9,
                  "classifier": str(tmp_path / "cls.pt"), "beta": 1e3,
                  "style_layers": ["relu", "layer1"], "pairing": "within_class_k", "k": 1}
    result = run_job(parse_job(job), progress=False)
    assert result.written == 6 and result.quarantined == 0
    assert store.verify_store(result.path) == []
    rows = store.open_store(result.path).manifest.to_pylist()
    nst = json.loads(rows[0]["ops"])[1]
    assert nst["mode"] == "iterative" and nst["iterations"] == 3 and nst["loss"]["lrp"] is True
    assert len(nst["classifier_sha256"]) == 64 and "ssim_to_content" in nst["quality"]
    assert nst["quality"]["ssim_to_content"] > 0.5, "3 steps from the content stay close to it"
