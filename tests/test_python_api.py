"""A store read from users' own Python: xarray, ``augengine.open_store`` and ``StoreDataset``,
and the docs/python.md snippet that shows them."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
import zarr

import augengine
from augengine import store
from augengine.train import dataset as dataset_module
from augengine.cli import main
from tests.test_runner import small_job
from tests.train.test_jobs import make_tiny_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """32 rows, 16 lesions x (original, flip), shards of 4, bmode at 40/50/60 dB by lesion."""
    return make_tiny_store(tmp_path_factory.mktemp("api") / "tiny.zarr")


def assert_xarray_reads(path: Path) -> set[str]:
    """xarray opens the store with the named dimensions and the arrays' values; returns the
    entries zarr warned about."""
    group = zarr.open_group(path, mode="r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(path, consolidated=False)
    assert ds["images"].dims == ("sample", "y", "x") and ds["labels"].dims == ("sample",)
    assert ("masks" not in group) or ds["masks"].dims == ("sample", "y", "x")
    for name in group.array_keys():
        np.testing.assert_array_equal(ds[name].values, group[name][:])
    assert ds.attrs["shard_size"] == group.attrs["shard_size"]
    # What still warns (docs/python.md): zarr names each entry of the group directory that is
    # not Zarr; silencing it needs those files moved out of the group.
    not_zarr = sorted(entry.name for entry in path.iterdir()
                      if entry.name != "zarr.json" and not (entry / "zarr.json").exists())
    assert {w.category.__name__ for w in caught} == {"ZarrUserWarning"}
    assert sorted(str(w.message).split()[2] for w in caught) == not_zarr
    return set(not_zarr)


def test_xarray_opens_a_store_with_named_dimensions_and_its_values(tiny):
    assert "manifest.parquet" in assert_xarray_reads(tiny)


@pytest.mark.slow
def test_xarray_opens_a_store_made_by_run(ray_session, phantom_dir, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "ds.zarr")))
    assert main(["run", str(job), "--quiet"]) == 0
    assert assert_xarray_reads(tmp_path / "ds.zarr") == {
        ".augengine.lock", "_journal", "inputs.parquet", "manifest.parquet", "quarantine.parquet"}


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


def test_items_equal_the_arrays(tiny):
    data = augengine.StoreDataset(tiny)
    group = zarr.open_group(tiny, mode="r")
    assert len(data) == 32
    for k in (0, 5, 31):
        item = data[k]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 32, 32)
        np.testing.assert_allclose(item["image"][0].numpy() * 255, group["images"][k], atol=1e-3)
        np.testing.assert_array_equal(item["mask"][0].numpy(), group["masks"][k])
        assert item["label"] == int(group["labels"][k])
        assert item["sample_id"] == f"l{k // 2}:{k % 2}"
        assert item["source_id"] == f"lesion{k // 2:02d}"


def test_splits_are_disjoint_by_source_and_cover_the_store(tiny):
    parts = {name: augengine.StoreDataset(tiny, split=name) for name in ("train", "val", "test")}
    sources = {name: set(part.source_ids) for name, part in parts.items()}
    assert not (sources["train"] & sources["val"] or sources["train"] & sources["test"]
                or sources["val"] & sources["test"])
    assert sum(len(part) for part in parts.values()) == 32 and all(map(len, parts.values()))
    given = {"train": ["lesion00"], "val": ["lesion01"],
             "test": [f"lesion{k:02d}" for k in range(2, 16)]}
    assert augengine.StoreDataset(tiny, split="train", splits=given).source_ids == ["lesion00"] * 2


def test_where_and_split_combine(tiny):
    train = augengine.StoreDataset(tiny, split="train")
    both = augengine.StoreDataset(tiny, where={"flip.axis": "horizontal"}, split="train")
    assert both.indices.tolist() == [i for i in train.indices.tolist() if i % 2]


def test_sequential_reads_read_each_shard_once(tiny, monkeypatch):
    reads = []
    original = dataset_module.StoreDataset._read_shard
    monkeypatch.setattr(dataset_module.StoreDataset, "_read_shard",
                        lambda self, shard: reads.append(shard) or original(self, shard))
    data = augengine.StoreDataset(tiny)
    for k in range(len(data)):
        data[k]
    assert reads == list(range(8))


def test_a_dataloader_with_two_forked_workers_serves_every_item_transformed(tiny):
    def invert(item):
        return {**item, "image": 1.0 - item["image"]}

    data = augengine.StoreDataset(tiny, transform=invert)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2,
                                         multiprocessing_context="fork")
    batches = list(loader)
    images = torch.cat([batch["image"] for batch in batches])
    expected = 1.0 - torch.from_numpy(zarr.open_group(tiny, mode="r")["images"][:]).float() / 255
    torch.testing.assert_close(images[:, 0], expected)
    assert [s for batch in batches for s in batch["sample_id"]] == data.sample_ids
    assert torch.cat([batch["label"] for batch in batches]).tolist() == data.labels


def test_the_docs_snippets_run(tiny, monkeypatch, tmp_path):
    text = (REPO / "docs" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out/dataset.zarr").symlink_to(tiny)
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/python.md", "exec"), namespace)
    assert namespace["epoch"] == 1
