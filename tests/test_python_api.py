"""A store read from users' own Python: xarray and ``augengine.open_store``."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

import augengine
from tests.train.test_jobs import make_tiny_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """32 rows, 16 lesions x (original, flip), shards of 4, bmode at 40/50/60 dB by lesion."""
    return make_tiny_store(tmp_path_factory.mktemp("api") / "tiny.zarr")


def test_xarray_opens_a_store_with_named_dimensions_and_its_values(tiny):
    group = zarr.open_group(tiny, mode="r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(tiny, consolidated=False)
    assert ds["images"].dims == ("sample", "y", "x") and ds["masks"].dims == ("sample", "y", "x")
    assert ds["labels"].dims == ("sample",)
    for name in ("images", "masks", "labels"):
        np.testing.assert_array_equal(ds[name].values, group[name][:])
    assert ds.attrs["shard_size"] == 4
    # What still warns (docs/python.md): zarr names each entry of the group directory that is
    # not Zarr; silencing it needs those files moved out of the group.
    not_zarr = sorted(entry.name for entry in tiny.iterdir()
                      if entry.name != "zarr.json" and not (entry / "zarr.json").exists())
    assert "manifest.parquet" in not_zarr
    assert sorted(str(w.message).split()[2] for w in caught) == not_zarr
    assert {w.category.__name__ for w in caught} == {"ZarrUserWarning"}


def test_an_old_store_without_dimension_names_still_opens(tmp_path):
    path = make_tiny_store(tmp_path / "old.zarr")
    for name in ("images", "masks", "labels"):
        meta = path / name / "zarr.json"
        document = json.loads(meta.read_text())
        del document["dimension_names"]
        meta.write_text(json.dumps(document))
    view = augengine.open_store(path)
    np.testing.assert_array_equal(view.labels[:], zarr.open_group(path, mode="r")["labels"][:])
    assert view.images.shape == (32, 32, 32)


def test_open_store_gives_arrays_manifest_and_a_where_filter(tiny):
    view = augengine.open_store(tiny)
    assert view.masks is not None and view.images.shape[0] == view.manifest.num_rows == 32
    at_50 = view.where({"bmode.dynamic_range_db": 50})
    ops = [json.loads(o) for o in at_50.manifest.column("ops").to_pylist()]
    assert at_50.manifest.num_rows == 10 and all(o[0]["dynamic_range_db"] == 50 for o in ops)
    flipped = at_50.where([("flip.axis", "horizontal")])
    assert flipped.indices.tolist() == [i for i in at_50.indices.tolist() if i % 2]
    assert view.manifest.num_rows == 32, "where returns a new view"
