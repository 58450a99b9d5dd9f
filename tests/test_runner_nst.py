"""Style-transfer jobs on the runner: pairs become outputs, post-steps apply, provenance is kept."""
from __future__ import annotations

import json

import pytest

from augengine import store
from augengine.config import parse_job
from augengine.errors import InputError
from augengine.train.nst_decoder import train_feedforward
from augengine.plan import make_plan
from augengine.runner import run_job
from augengine.train.loop import TrainConfig, train
from tests.train.test_nst_decoder import TINY, make_texture_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nstjob")
    source = make_texture_store(root / "originals.zarr", n_per_class=3, size=32)
    settings = dict(TINY, pairing="within_class_all")
    train_feedforward(source, root / "run", epochs=1, lrp=False, **settings)
    return source, root / "run" / "checkpoint.pt", root


def train_classifier(source, out):
    """``checkpoint.pt`` of one epoch of the ``train classifier`` job (ResNet-18, 32 px) on
    ``source``: a benign/malignant network for LRP."""
    train(TrainConfig("classifier", str(source), str(out), arch="resnet18", image_size=32,
                      epochs=1, batch_size=4, loader="torch"))
    return out / "checkpoint.pt"


def nst_job(source, checkpoint, out, **changes):
    job = {"name": "nst", "seed": 4,
           "sources": [{"reader": "store", "path": str(source)}],
           "nst": {"checkpoint": str(checkpoint), "batch_size": 4, "quality_checks": 1.0},
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
    (out / "records" / "_journal" / "shard-000002.parquet").unlink()
    (out / "records" / "manifest.parquet").unlink()
    again = run_job(config, progress=False)
    assert again.shards_built == 1
    assert ((out / "records" / "manifest.parquet").read_bytes()
            == (tmp_path / "a.zarr" / "records" / "manifest.parquet").read_bytes()), reference.path


def test_nst_job_with_a_missing_checkpoint_fails_clearly(ray_session, trained, tmp_path):
    source, _, _ = trained
    config = parse_job(nst_job(source, tmp_path / "none.pt", tmp_path / "c.zarr"))
    with pytest.raises(InputError, match="none.pt: checkpoint not found"):
        run_job(config, progress=False)


def test_nst_preview_shows_content_style_result_and_relevance(ray_session, trained, tmp_path):
    from PIL import Image

    from augengine.preview import preview_nst

    source, checkpoint, root = trained
    result = run_job(parse_job(nst_job(source, checkpoint, tmp_path / "p.zarr")), progress=False)
    classifier = train_classifier(source, tmp_path / "cls")
    png = preview_nst(result.path, tmp_path / "nst.png", count=4, classifier=classifier)
    with Image.open(png) as image:
        assert image.size == (4 * 160, 4 * 190), "4 rows of content | style | result | relevance"
    plain = preview_nst(result.path, tmp_path / "plain.png", count=2)
    with Image.open(plain) as image:
        assert image.size == (3 * 160, 2 * 190)


def test_iterative_nst_job_with_lrp(ray_session, trained, tmp_path):
    """The paper's optimisation per pair, its content loss weighted by the classifier's LRP."""
    source, _, _ = trained
    classifier = train_classifier(source, tmp_path / "cls")
    job = nst_job(source, None, tmp_path / "iter.zarr", steps=[])
    job["nst"] = {"mode": "iterative", "arch": "resnet18", "iterations": 3, "batch_size": 9,
                  "classifier": str(classifier), "beta": 1e3,
                  "style_layers": ["relu", "layer1"], "pairing": "within_class_k", "k": 1,
                  "quality_checks": 1.0}
    result = run_job(parse_job(job), progress=False)
    assert result.written == 6 and result.quarantined == 0
    assert store.verify_store(result.path) == []
    rows = store.open_store(result.path).manifest.to_pylist()
    nst = json.loads(rows[0]["ops"])[1]
    assert nst["mode"] == "iterative" and nst["iterations"] == 3 and nst["loss"]["lrp"] is True
    assert len(nst["classifier_sha256"]) == 64 and "ssim_to_content" in nst["quality"]
    assert nst["quality"]["ssim_to_content"] > 0.5, "3 steps from the content stay close to it"


def _nst_records(path):
    rows = store.open_store(path).manifest.to_pylist()
    return rows, [json.loads(row["ops"])[1] for row in rows]


def test_multi_reference_job_styles_each_content_once_and_resumes(ray_session, trained, tmp_path):
    from augengine.preview import preview_nst

    source, checkpoint, _ = trained
    job = nst_job(source, checkpoint, tmp_path / "multi.zarr")
    job["nst"].update(pairing="within_class_k", k=2, references="multi")
    config = parse_job(job)
    plan = make_plan(config)
    assert plan.n_samples == 6 * 2, "6 contents x 2 variants, each styled by 2 references at once"
    result = run_job(config, progress=False)
    assert result.written == 12 and result.quarantined == 0
    assert store.verify_store(result.path) == []
    rows, records = _nst_records(result.path)
    for row, nst in zip(rows, records):
        content, styles = nst["content_id"], nst["style_ids"]
        assert "style_id" not in nst and len(set(styles)) == 2 and content not in styles, row
        assert {int(s[1]) // 3 for s in styles} == {int(content[1]) // 3}, "within its class"
        assert row["sample_id"] == "~".join([content, *styles]) + f":{row['variant']}"
        assert 0 < nst["quality"]["ssim_to_content"] <= 1
    assert len({row["sample_id"] for row in rows}) == 12
    # Resume: one shard lost, rebuilt to the same bytes.
    manifest = (tmp_path / "multi.zarr" / "records" / "manifest.parquet").read_bytes()
    (tmp_path / "multi.zarr" / "records" / "_journal" / "shard-000001.parquet").unlink()
    (tmp_path / "multi.zarr" / "records" / "manifest.parquet").unlink()
    assert run_job(config, progress=False).shards_built == 1
    assert (tmp_path / "multi.zarr" / "records" / "manifest.parquet").read_bytes() == manifest
    png = preview_nst(result.path, tmp_path / "multi.png", count=2)
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (3 * 160, 2 * 190), "content | 2 x 2 mosaic of styles | result"


def test_explicit_pairs_job_follows_the_file(ray_session, trained, tmp_path):
    from augengine.errors import ConfigError

    source, checkpoint, _ = trained
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("content_id,style_id\nt4:0,t5:0\nt0:0,t3:0\nt0:0,t1:0\n")
    job = nst_job(source, checkpoint, tmp_path / "explicit.zarr", steps=[], workers=1)
    job["nst"].update(pairing="explicit", pairs=str(pairs), allow_cross_class=True)
    result = run_job(parse_job(job), progress=False)
    assert result.written == 3 and store.verify_store(result.path) == []
    rows, records = _nst_records(result.path)
    assert [(nst["content_id"], nst["style_id"]) for nst in records] == [
        ("t4:0", "t5:0"), ("t0:0", "t3:0"), ("t0:0", "t1:0")], "file order, cross-class allowed"
    assert [row["sample_id"] for row in rows] == ["t4:0~t5:0:0", "t0:0~t3:0:0", "t0:0~t1:0:0"]
    pairs.write_text("content_id,style_id\nt4:0,t5:0\nt0:0,t2:0\nt0:0,t1:0\n")
    with pytest.raises(ConfigError, match="different job config"):
        run_job(parse_job(job), progress=False)


def test_iterative_multi_reference_job(ray_session, trained, tmp_path):
    """Explicit rows of two references, optimised against the Eq. 9 target (no LRP here)."""
    source, _, _ = trained
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("content_id,style_id_1,style_id_2\nt1:0,t0:0,t2:0\nt5:0,t3:0,t4:0\n")
    job = nst_job(source, None, tmp_path / "iter-multi.zarr", steps=[], workers=1)
    job["nst"] = {"mode": "iterative", "arch": "resnet18", "iterations": 2, "lrp": False,
                  "beta": 1e3, "style_layers": ["relu", "layer1"], "pairing": "explicit",
                  "pairs": str(pairs), "references": "multi", "quality_checks": 1.0}
    result = run_job(parse_job(job), progress=False)
    assert result.written == 2 and store.verify_store(result.path) == []
    _, records = _nst_records(result.path)
    assert [(nst["content_id"], nst["style_ids"]) for nst in records] == [
        ("t1:0", ["t0:0", "t2:0"]), ("t5:0", ["t3:0", "t4:0"])]
    assert all(nst["mode"] == "iterative" and nst["quality"]["style_distance_before"] > 0
               for nst in records)
