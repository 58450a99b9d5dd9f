"""augengine.ray_data: a store as a Ray Data Dataset, one block per shard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augengine.config import parse_job
from augengine.runner import run_job
from augengine import store as store_module
from augengine.store import open_store
from tests.test_runner import small_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(ray_session, phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("raydata") / "ds.zarr"
    run_job(parse_job(small_job(phantom_dir, out)), progress=False)
    return out


def _rows_by_id(dataset) -> dict[str, dict]:
    return {row["sample_id"]: row for row in dataset.take_all()}


def test_rows_are_the_stored_samples_one_block_per_shard(store):
    from augengine.ray_data import read_store

    view = open_store(store)
    dataset = read_store(store).materialize()
    assert dataset.num_blocks() == 5 == -(-view.group["images"].shape[0] // 5)
    rows = _rows_by_id(dataset)
    assert len(rows) == view.manifest.num_rows == 24
    for entry in view.manifest.to_pylist():
        row = rows[entry["sample_id"]]
        np.testing.assert_array_equal(row["image"], view.group["images"][entry["index"]])
        np.testing.assert_array_equal(row["mask"], view.group["masks"][entry["index"]])
        assert (row["label"], row["source_id"]) == (entry["label"], entry["source_id"])


def test_a_store_without_masks_gives_zero_masks(store, tmp_path):
    import shutil

    from augengine.ray_data import read_store

    copy = tmp_path / "no-masks.zarr"
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "masks")
    store_module.consolidate(copy)  # readers trust the consolidated metadata
    assert "masks" not in open_store(copy).group
    rows = read_store(copy).take_all()
    assert len(rows) == 24 and all(row["mask"].shape == row["image"].shape
                                   and not row["mask"].any() for row in rows)


def test_where_keeps_only_the_accepted_rows(store):
    from augengine.ray_data import read_store

    view = open_store(store)
    wanted = {r["sample_id"] for r in view.manifest.to_pylist() if r["label"] == 1}
    dataset = read_store(store, where=lambda row: row["label"] == 1).materialize()
    rows = _rows_by_id(dataset)
    assert set(rows) == wanted and len(wanted) == 12
    assert all(row["label"] == 1 for row in rows.values())
    assert dataset.num_blocks() == 3  # samples 12..23: shards 2, 3 and 4; no block for 0 and 1
    assert read_store(store, where=lambda row: False).count() == 0


@pytest.mark.parametrize("where", [{"label": 1, "flip.axis": "horizontal"},
                                   ["label=1", "flip.axis=horizontal"], "chain~flip"])
def test_where_takes_the_conditions_every_reader_takes(store, where):
    from augengine.ray_data import read_store

    expected = sorted(open_store(store).where(where).manifest.column("sample_id").to_pylist())
    assert expected and set(expected) < set(open_store(store).manifest.column("sample_id")
                                            .to_pylist())
    assert sorted(row["sample_id"] for row in read_store(store, where=where).take_all()) \
        == expected, where


def test_map_batches_runs_a_model_over_the_store(store):
    from augengine.ray_data import read_store

    def mean_brightness(batch):
        return {"sample_id": batch["sample_id"], "mean": batch["image"].mean(axis=(1, 2))}

    view = open_store(store)
    means = {row["sample_id"]: row["mean"]
             for row in read_store(store).map_batches(mean_brightness).take_all()}
    assert len(means) == 24
    for entry in view.manifest.to_pylist():
        assert means[entry["sample_id"]] == pytest.approx(
            view.group["images"][entry["index"]].mean())


def test_the_docs_example_runs(store, capsys):
    """docs/ray_data.md's example, on the test store and the session's Ray."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "ray_data.md").read_text()
    code = text.split("```python\n")[1].split("```")[0]
    assert "ray.init()" in code and "demo-output/dataset.zarr" in code
    code = code.replace("ray.init()", "pass").replace("demo-output/dataset.zarr", str(store))
    exec(compile(code, "docs/ray_data.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert all(line.split()[0].startswith("malignant_") for line in lines), lines
