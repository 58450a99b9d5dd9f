"""``--data``: which reader reads a path, the jobs the experiments build from it, stores made of
chosen rows, and the counts the table header gives, for every source kind."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from augengine.errors import ConfigError, InputError
from augengine.experiments import data as data_module
from augengine.experiments.augmentation import augmentation_job
from augengine.experiments.common import describe_data
from augengine.experiments.data import (compose_store, data_summary, detect_reader,
                                        source_config, stage_store)
from augengine.experiments.dynamic_range import dynamic_range_job


def test_docstring_examples():
    result = doctest.testmod(data_module)
    assert result.attempted > 0 and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed"


def test_detects_the_reader_of_every_source_kind(phantoms_8_8, busi_dir, dicom_dir, tmp_path):
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    found = {path.name: detect_reader(path) for path in (
        phantoms_8_8 / "phantoms.mat", phantoms_8_8 / "npz",
        next((phantoms_8_8 / "npz").glob("*.npz")), busi_dir, dicom_dir,
        dicom_dir / "benign" / "scan0.dcm", tmp_path / "store.zarr")}
    assert list(found.values()) == ["oasbud", "rf_npz", "rf_npz", "busi", "dicom", "dicom",
                                    "store"], found


def test_an_unrecognisable_path_is_one_line_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes.txt: cannot tell which reader.*--reader"):
        detect_reader(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="missing: no such file"):
        detect_reader(tmp_path / "missing")


def test_a_store_is_read_as_its_originals_and_options_pass_through(tmp_path):
    assert source_config(tmp_path, "store")["options"] == {"originals_only": True}
    assert source_config("a.mat", options={"pitch_m": 2e-4})["options"] == {"pitch_m": 2e-4}


def test_dynamic_range_needs_rf(busi_dir):
    with pytest.raises(ConfigError, match="read by busi, which gives B-mode images"):
        dynamic_range_job(source_config(busi_dir), "out.zarr")


@pytest.mark.slow
def test_every_source_kind_becomes_a_counted_store(ray_session, phantoms_8_8, busi_dir,
                                                    dicom_dir, tmp_path):
    expected = {  # lesions and original images per class
        "oasbud": (phantoms_8_8 / "phantoms.mat", (4, 4), (8, 8)),
        "rf_npz": (phantoms_8_8 / "npz", (4, 4), (8, 8)),
        "busi": (busi_dir, (4, 4), (4, 4)),
        "dicom": (dicom_dir, (2, 2), (2, 2)),
    }
    stores = {}
    for reader, (path, lesions, images) in expected.items():
        job = augmentation_job(source_config(path), tmp_path / f"{reader}.zarr", image_size=32)
        stores[reader] = stage_store(job, reader)
        used = data_summary(stores[reader], reader)
        assert (tuple(used["lesions"].values()), tuple(used["images"].values())) == \
            (lesions, images), f"{reader}: {used}"
    # A store of originals as --data: its variants are left out, its originals counted again.
    job = augmentation_job(source_config(stores["oasbud"]), tmp_path / "again.zarr", 32)
    used = data_summary(stage_store(job, "store"), "again")
    assert used["images"] == {"benign": 8, "malignant": 8}, f"store source: {used}"
    assert describe_data(used) == ("again: 8 lesions (4 benign, 4 malignant), 16 original images "
                                   "(8 benign, 8 malignant)")


@pytest.mark.slow
def test_compose_store_keeps_the_chosen_rows_and_their_records(ray_session, busi_dir,
                                                               tmp_path):
    from augengine.store import open_store, verify_store

    source = stage_store(augmentation_job(source_config(busi_dir), tmp_path / "a.zarr", 32), "a")
    view = open_store(source)
    rows = view.indices[[0, 3, 7]]
    composed = compose_store(tmp_path / "c.zarr", [(source, rows), (source, view.indices[[9]])])
    out = open_store(composed)
    assert out.manifest.column("sample_id").to_pylist() == \
        view.manifest.column("sample_id").to_pylist()[:1] + \
        [view.manifest.column("sample_id").to_pylist()[i] for i in (3, 7, 9)]
    np.testing.assert_array_equal(out.images[:], view.images.oindex[np.r_[rows, view.indices[9]]])
    assert verify_store(composed) == [], "the composed store checks out whole"
    again = compose_store(tmp_path / "c.zarr", [(source, rows), (source, view.indices[[9]])])
    assert again == composed, "the same rows again: the store is kept"
