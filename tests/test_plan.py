"""Exact plans, including style transfer: the paper's 800 images give 325,408 outputs."""
from __future__ import annotations

import numpy as np
import pytest

from augengine import store
from augengine.cli import main
from augengine.config import parse_job
from augengine.errors import ConfigError, InputError
from augengine.plan import make_plan


@pytest.fixture(scope="module")
def paper_store(tmp_path_factory):
    """A store shaped like the paper's set: 348 benign + 452 malignant (tiny 8x8 images)."""
    path = tmp_path_factory.mktemp("paper") / "originals.zarr"
    n, shard = 800, 256
    labels = np.array([0] * 348 + [1] * 452, np.int8)
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    store.create_store(path, n, (8, 8), shard, False, "paper", {})
    rows = []
    for start in range(0, n, shard):
        stop = min(start + shard, n)
        store.write_shard(path, start, images[start:stop], labels[start:stop], None)
    for i in range(n):
        rows.append({"index": i, "sample_id": f"img{i:03d}:0", "input_id": f"img{i:03d}",
                     "source_id": f"img{i:03d}", "source_path": "/x", "reader": "busi",
                     "label": int(labels[i]), "variant": 0, "chain": "identity",
                     "ops": '[{"op": "identity"}]', "seed": 0, "shard": i // shard,
                     "has_mask": False, "sha256": store.image_sha256(images[i])})
    store.finalize(path, rows, [], n)
    return path


def nst_job(source, **nst):
    return {"name": "nst", "seed": 1,
            "sources": [{"reader": "store", "path": str(source)}],
            "nst": {"checkpoint": "runs/nst/checkpoint.pt", **nst},
            "output": {"path": "out.zarr", "size": [8, 8], "shard_size": 256}}


def test_within_class_all_gives_the_papers_325408(paper_store):
    plan = make_plan(parse_job(nst_job(paper_store)))
    assert plan.n_samples == 325_408 == 348**2 + 452**2
    assert plan.counts_by_label() == {"benign": 121_104, "malignant": 204_304}
    assert plan.n_shards == 1272
    ref, variant = plan.item(349)
    assert ref.sample_id == "img001:0" and list(plan.work_item(349).style_positions) == [1] and variant == 0


def test_post_steps_multiply_the_pairs(paper_store):
    job = nst_job(paper_store)
    job["steps"] = [{"one_of": [{"op": "identity"}, {"op": "srad", "iterations": 10,
                                                      "dynamic_range_db": 50}]}]
    plan = make_plan(parse_job(job))
    assert plan.n_samples == 2 * 325_408
    assert "nst(feedforward,within_class_all) > srad(50,10)" in plan.counts_by_chain()


def test_within_class_k(paper_store):
    plan = make_plan(parse_job(nst_job(paper_store, pairing="within_class_k", k=3)))
    assert plan.n_samples == 2400, "k = 3 references: three (content, style) pairs per image"
    assert [int(i) for i in plan.pairs[:3, 0]] == [0, 0, 0]
    styles = [plan.work_item(i).style_positions[0] for i in range(3)]
    assert len(set(styles)) == 3 and 0 not in styles and all(s < 348 for s in styles)


def test_within_class_k_multi_reference_makes_one_output_per_content(paper_store):
    plan = make_plan(parse_job(nst_job(paper_store, pairing="within_class_k", k=3,
                                       references="multi")))
    assert plan.n_samples == 800 and plan.pairs.shape == (800, 4), \
        "k = 3 references together: one output per image"
    assert plan.counts_by_label() == {"benign": 348, "malignant": 452}
    item = plan.work_item(5)
    assert item.nst_key == tuple(plan.pairs[5]) and len(item.styles) == 3
    assert item.input_key == "~".join(["img005:0", *(s.sample_id for s in item.styles)])
    single = make_plan(parse_job(nst_job(paper_store, pairing="within_class_k", k=3)))
    assert np.array_equal(single.pairs[:3, 1], plan.pairs[0, 1:]), \
        "single splits the same draw into one pair per reference"
    assert "nst(feedforward,within_class_k,k=3,multi)" in next(iter(plan.counts_by_chain()))


def write_pairs(path, *rows):
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("header, rows, references, expected", [
    ("content_id,style_id", ["img010:0,img003:0", "img400:0,img799:0", "img010:0,img004:0"],
     "single", [[10, 3], [400, 799], [10, 4]]),
    ("content_id,style_id_1,style_id_2",
     ["img010:0,img003:0,img004:0", "img400:0,img799:0,img401:0"],
     "single", [[10, 3], [10, 4], [400, 799], [400, 401]]),
    ("content_id,style_id_1,style_id_2",
     ["img400:0,img799:0,img401:0", "img010:0,img003:0,img004:0"],
     "multi", [[400, 799, 401], [10, 3, 4]]),
])
def test_explicit_pairs_count_and_keep_the_file_order(paper_store, tmp_path, header, rows,
                                                       references, expected):
    pairs = write_pairs(tmp_path / "pairs.csv", header, *rows)
    job = nst_job(paper_store, pairing="explicit", pairs=pairs, references=references)
    job["steps"] = [{"one_of": [{"op": "identity"}, {"op": "flip", "axis": "vertical"}]}]
    plan = make_plan(parse_job(job))
    assert plan.pairs.tolist() == expected
    assert plan.n_samples == 2 * len(expected), f"{len(expected)} rows x 2 variants"
    assert plan.counts_by_label() == {"benign": 2 * sum(r[0] < 348 for r in expected),
                                      "malignant": 2 * sum(r[0] >= 348 for r in expected)}


@pytest.mark.parametrize("rows, references, needle", [
    (["content_id,style_id", "img000:0,img001:0", "img000:0,img500:0"], "single",
     (r"pairs.csv line 3, style_id: style 'img500:0' \(class 'malignant'\) is not in the "
      r"class of content 'img000:0' \('benign'\)")),
    (["content_id,style_id", "img000:0,img001:0", "img000:0,img001:0"], "single",
     "pairs.csv line 3: img000:0~img001:0 repeats line 2; every output must be distinct"),
    (["content_id,style_id_1,style_id_2", "img000:0,img001:0,img002:0",
      "img000:0,img001:0,img003:0"], "single",
     "pairs.csv line 3: img000:0~img001:0 repeats line 2"),
    (["content_id,style_id_1,style_id_2", "img000:0,img001:0,img002:0",
      "img000:0,img001:0,img002:0"], "multi", "line 3: img000:0~img001:0~img002:0 repeats line 2"),
    (["content_id,style_id", "img000:0,img001"], "single", r"did you mean 'img001:0'"),
])
def test_explicit_pairs_errors_name_the_line(paper_store, tmp_path, rows, references, needle):
    pairs = write_pairs(tmp_path / "pairs.csv", *rows)
    with pytest.raises(ConfigError, match=needle):
        make_plan(parse_job(nst_job(paper_store, pairing="explicit", pairs=pairs,
                                    references=references)))


def test_multi_rows_sharing_a_pair_are_distinct_outputs(paper_store, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.csv", "content_id,style_id_1,style_id_2",
                        "img000:0,img001:0,img002:0", "img000:0,img001:0,img003:0")
    plan = make_plan(parse_job(nst_job(paper_store, pairing="explicit", pairs=pairs,
                                       references="multi")))
    assert [plan.work_item(i).input_key for i in range(2)] == [
        "img000:0~img001:0~img002:0", "img000:0~img001:0~img003:0"]


def test_job_hash_follows_the_pairing_file(paper_store, tmp_path):
    path = tmp_path / "pairs.csv"
    config = parse_job(nst_job(paper_store, pairing="explicit",
                               pairs=write_pairs(path, "content_id,style_id", "img000:0,img001:0")))
    first = make_plan(config).job_hash()
    assert make_plan(config).job_hash() == first
    write_pairs(path, "content_id,style_id", "img000:0,img002:0")
    assert make_plan(config).job_hash() != first, "other pairs, same YAML: another job"
    assert make_plan(parse_job(nst_job(paper_store))).job_hash() == \
        parse_job(nst_job(paper_store)).config_hash(), "no pairing file: the config's hash"


def test_plan_command_prints_the_count(paper_store, tmp_path, capsys):
    import yaml

    path = tmp_path / "nst.yaml"
    path.write_text(yaml.safe_dump(nst_job(paper_store)))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "800 input samples -> 325408 style-transfer pairs" in out and "= 325408 output" in out
    path.write_text(yaml.safe_dump(nst_job(paper_store, pairing="within_class_k", k=3,
                                           references="multi")))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("800 input samples -> 800 multi-reference style transfers (within_class_k: each "
            "content styled by its 3 references together)") in out, out


@pytest.mark.parametrize("nst, needle", [
    ({"pairing": "within_class_k"}, "k is required"),
    ({"k": 2}, "k is required"),
    ({"alpha": 2}, "alpha"),
    ({"mode": "iterative"}, "with lrp needs classifier"),
    ({"mode": "painterly"}, "mode"),
])
def test_bad_nst_settings(paper_store, nst, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_job(nst_job(paper_store, **nst))


def test_nst_needs_images_not_rf(tmp_path):
    job = nst_job(tmp_path)
    job["sources"] = [{"reader": "oasbud", "path": "x.mat"}]
    job["steps"] = [{"op": "bmode", "dynamic_range_db": 50}]
    with pytest.raises(ConfigError, match="style transfer works on B-mode images"):
        parse_job(job)


def rf_job(source: dict) -> dict:
    return {"sources": [source], "steps": [{"op": "bmode", "dynamic_range_db": 50}],
            "output": {"path": "out.zarr"}}


@pytest.mark.parametrize("options, message", [
    ({"fs_Hz": 4e7}, "unknown option 'fs_Hz'; did you mean 'fs_hz'?"),
    ({"rate": 4e7}, "unknown option 'rate'; allowed: fs_hz, fc_hz, c_m_s, pitch_m"),
    ({"fs_hz": "40 MHz"}, "oasbud option fs_hz must be a number > 0, got '40 MHz'"),
])
def test_reader_options_are_checked_against_the_readers_own(phantom_dir, options, message):
    config = parse_job(rf_job({"reader": "oasbud", "path": str(phantom_dir / "phantoms.mat"),
                               "options": options}))
    with pytest.raises(ConfigError) as info:
        make_plan(config)
    assert str(info.value) == f"sources[0] (oasbud): {message}"


def test_a_source_the_reader_cannot_read_is_named_with_its_reader_and_path(phantom_dir):
    mat = (phantom_dir / "phantoms.mat").resolve()
    config = parse_job({"sources": [{"reader": "busi", "path": str(mat)}],
                        "output": {"path": "out.zarr"}})
    with pytest.raises(InputError) as info:
        make_plan(config)
    assert str(info.value) == (f"no readable samples in any source: sources[0] (busi): {mat}: "
                               f"not a directory (BUSI layout needs benign/, malignant/, normal/ "
                               f"folders)")
