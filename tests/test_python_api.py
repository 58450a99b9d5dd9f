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
from augengine.errors import ConfigError
from augengine.train import dataset as dataset_module
from augengine.cli import main
from tests.test_runner import small_job
from tests.train.test_jobs import make_tiny_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """32 rows, 16 lesions x (original, flip), shards of 4, bmode at 40/50/60 dB by lesion."""
    return make_tiny_store(tmp_path_factory.mktemp("api") / "tiny.zarr")


def assert_xarray_reads(path: Path) -> None:
    """xarray opens the store, as users call it and without the consolidated metadata, with
    the named dimensions and the arrays' values, and nothing warns."""
    group = zarr.open_group(path, mode="r")
    for kwargs in ({}, {"consolidated": False}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = xr.open_zarr(path, **kwargs)
            values = {name: ds[name].values for name in group.array_keys()}
        assert ds["images"].dims == ("sample", "y", "x") and ds["labels"].dims == ("sample",)
        assert ("masks" not in group) or ds["masks"].dims == ("sample", "y", "x")
        for name in group.array_keys():
            np.testing.assert_array_equal(values[name], group[name][:], err_msg=name)
        assert ds.attrs["shard_size"] == group.attrs["shard_size"]
        assert set(ds.data_vars) == set(group.array_keys()), kwargs


def test_xarray_opens_a_store_with_named_dimensions_and_its_values(tiny):
    assert_xarray_reads(tiny)
    assert (tiny / "records" / "manifest.parquet").is_file()


@pytest.mark.slow
def test_xarray_opens_a_store_made_by_run(ray_session, phantom_dir, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "ds.zarr")))
    assert main(["run", str(job), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "ds.zarr").iterdir()) == [
        "images", "labels", "masks", "records", "zarr.json"]
    assert_xarray_reads(tmp_path / "ds.zarr")


def as_schema_2(path: Path) -> Path:
    """The store at ``path`` as augengine wrote it before ``records/`` (schema 2): the records
    beside the arrays, the lock there too, no consolidated metadata."""
    records = path / "records"
    for entry in records.iterdir():
        if entry.name != "zarr.json":
            entry.rename(path / entry.name)
    (records / "zarr.json").unlink()
    records.rmdir()
    meta = json.loads((path / "zarr.json").read_text())
    meta.pop("consolidated_metadata", None)
    meta["attributes"]["schema_version"] = 2
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def test_a_schema_2_store_is_still_read(tiny, tmp_path):
    import shutil

    old = as_schema_2(Path(shutil.copytree(tiny, tmp_path / "old.zarr")))
    view = augengine.open_store(old)
    assert view.manifest.num_rows == 32 and view.where({"flip.axis": "horizontal"}).indices.tolist() \
        == list(range(1, 32, 2))
    assert store.verify_store(old) == []
    assert len(augengine.StoreDataset(old)) == 32


@pytest.mark.slow
def test_a_run_into_a_schema_2_store_is_refused_or_moves_its_records(ray_session, phantom_dir,
                                                                      tmp_path, capsys):
    job = tmp_path / "job.yaml"
    out = tmp_path / "ds.zarr"
    job.write_text(yaml.safe_dump(small_job(phantom_dir, out)))
    assert main(["run", str(job), "--quiet"]) == 0
    manifest = (out / "records" / "manifest.parquet").read_bytes()
    as_schema_2(out)
    capsys.readouterr()
    assert main(["run", str(job), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "a store of schema version 2" in error \
        and "re-run with --rebuild to move them there" in error, error
    assert (out / "manifest.parquet").read_bytes() == manifest, "refused: nothing moved"
    result = augengine.run(job, progress=False, rebuild=True)
    assert (result.shards_built, result.written) == (0, 24), "every shard kept"
    assert (out / "records" / "manifest.parquet").read_bytes() == manifest
    assert not (out / "manifest.parquet").exists() and not (out / store.LOCK_FILE).exists()
    assert store.verify_store(out) == [] and augengine.open_store(out).attrs["schema_version"] == 3
    assert_xarray_reads(out)


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


@pytest.mark.parametrize("where", [
    {"label": 1, "flip.axis": "horizontal"},
    [("label", "1"), ("flip.axis", "horizontal")],
    ["label=1", "flip.axis=horizontal"],
    ["label=1", "ops~flip"],
    lambda row: row["label"] == 1 and "flip" in row["ops"],
])
def test_one_where_for_the_view_the_dataset_and_the_preview(tiny, tmp_path, monkeypatch, where):
    from augengine import preview

    # Lesions 1, 3, ..., 15 are malignant; their flipped variants are the odd rows 3, 7, ...
    expected = [2 * lesion + 1 for lesion in range(1, 16, 2)]
    assert augengine.open_store(tiny).where(where).indices.tolist() == expected, where
    assert augengine.StoreDataset(tiny, where=where).indices.tolist() == expected, where
    shown = []
    monkeypatch.setattr(preview, "render_grid", lambda images, masks, captions, *args, **kw:
                        shown.extend(int(c.split("#")[1].split()[0]) for c in captions)
                        or type("Image", (), {"save": lambda self, out: None})())
    preview.preview_store(tiny, tmp_path / "p.png", where=where)
    assert sorted(shown) == expected, where


def test_a_where_naming_no_column_is_one_line_with_did_you_mean(tiny):
    view = augengine.open_store(tiny)
    with pytest.raises(ConfigError,
                       match=r"^where: unknown manifest column 'lable'; did you mean 'label'\?"):
        view.where("lable=1")
    with pytest.raises(ConfigError, match=r"^where: expected COLUMN=VALUE"):
        view.where(["label"])


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


def python_blocks(heading: str | None = None) -> list[str]:
    """The ```python blocks of docs/python.md: those of its section ``heading`` (a ``## ``
    title's start), or with None those of every section but the job example."""
    sections = re.split(r"\n(?=## )", (REPO / "docs" / "python.md").read_text())
    if heading is None:
        chosen = [s for s in sections if not s.startswith("## A job in Python")]
    else:
        chosen = [s for s in sections if s.startswith(f"## {heading}")]
    return [block for section in chosen
            for block in re.findall(r"```python\n(.*?)```", section, flags=re.S)]


def test_the_docs_snippets_run(tiny, monkeypatch, tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out/dataset.zarr").symlink_to(tiny)
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/python.md", "exec"), namespace)
    assert namespace["epoch"] == 1


@pytest.mark.slow
def test_the_docs_job_example_runs_as_written(ray_session, phantom_dir, monkeypatch, tmp_path,
                                              capsys):
    [block] = python_blocks("A job in Python")
    monkeypatch.chdir(tmp_path)
    Path("phantoms").symlink_to(phantom_dir)
    # A script's own namespace: its op and model live in __main__, so they reach the actors by
    # value, as the document says.
    namespace = {"__name__": "__main__"}
    exec(compile(block, "docs/python.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.startswith("8 samples in 2 shards\n"), printed
    assert "out/python-demo.zarr: 8 written, 0 quarantined" in printed, printed
    gamma_rows = namespace["brightened"].manifest.to_pylist()
    assert len(gamma_rows) == 4 and all('"op": "gamma"' in row["ops"] for row in gamma_rows)
    assert store.verify_store(tmp_path / "out" / "python-demo.zarr") == []
    augengine.registry.OPS.pop("gamma")  # the document's op, registered from this namespace


def test_the_readme_python_snippet_runs(tiny, phantom_dir, monkeypatch, tmp_path):
    [block] = re.findall(r"### From Python.*?```python\n(.*?)```",
                         (REPO / "README.md").read_text(), flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    Path("jobs").symlink_to(REPO / "jobs")
    Path("demo-output").mkdir()
    Path("demo-output/phantoms").symlink_to(phantom_dir)
    Path("demo-output/dataset.zarr").symlink_to(tiny)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["plan"].n_samples > 0 and len(namespace["manifest"]) == 32
    assert namespace["at_50"].manifest.num_rows == 10


# --- jobs from Python: augengine.Job, plan, run ----------------------------------------------

def test_a_job_is_the_same_from_keywords_a_mapping_and_a_file(phantom_dir, tmp_path):
    from augengine.api import as_job

    data = small_job(phantom_dir, tmp_path / "ds.zarr")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    built = augengine.Job(**data)
    assert as_job(data) == built == as_job(path) == as_job(str(path)) and as_job(built) is built
    plan = augengine.plan(built)
    assert (plan.n_samples, plan.n_shards) == (24, 5)
    assert augengine.plan(path).job_hash() == plan.job_hash()


@pytest.mark.parametrize("change, message", [
    ({"steps": [{"op": "bmode", "dynamic_range": 40}]},
     "steps[0] (bmode): unknown parameter 'dynamic_range'; did you mean 'dynamic_range_db'?"),
    ({"step": []}, "unknown key 'step'; did you mean 'steps'?"),
    ({"steps": [{"op": "flp"}]}, "steps[0].op: unknown op 'flp'; did you mean 'flip'?"),
])
def test_errors_are_the_lines_the_command_prints(phantom_dir, tmp_path, capsys, change, message):
    data = small_job(phantom_dir, tmp_path / "ds.zarr", **change)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path)]) == 2
    line = capsys.readouterr().err
    assert line == f"augengine plan: error: {path}: {message}\n", line
    for call in (augengine.plan, augengine.run):
        with pytest.raises(ConfigError) as error:
            call(path)
        assert str(error.value) == f"{path}: {message}"
    with pytest.raises(ConfigError) as error:
        augengine.Job(**data)
    assert str(error.value) == f"job: {message}"


def test_something_that_is_not_a_job_is_one_line():
    with pytest.raises(ConfigError, match="^a job is an augengine.Job, a mapping or a YAML file "
                                          "path, got int$"):
        augengine.plan(3)


def test_the_package_names_the_api_without_loading_it():
    import subprocess
    import sys

    code = ("import sys, augengine; heavy = [m for m in ('zarr', 'torch', 'ray', 'pydantic') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "assert callable(augengine.plan) and callable(augengine.run); "
            "from augengine.plan import make_plan; "
            "assert callable(augengine.plan) and augengine.plan.make_plan is make_plan; "
            "assert augengine.Job.__name__ == 'JobConfig'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
