"""Users' own ops (``augengine.register_op``): checked like built-ins by plan, run on Ray actors,
recorded in the manifest with their drawn parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

import augengine
from augengine.errors import ConfigError, InputError
from augengine.pipeline import OPS, Frame, apply_chain
from augengine.registry import BUILTIN_OPS, user_ops
from tests.test_runner import small_job
from tests.user_op_plugin import brighten


def plugin_job(phantom_dir, out, step) -> dict:
    job = small_job(phantom_dir, out, plugins=["tests.user_op_plugin"])
    job["steps"] = job["steps"][:3] + [step]
    return job


def test_a_built_in_name_is_refused():
    with pytest.raises(ConfigError, match=r"^register_op\('flip'\): 'flip' is a built-in op; "):
        augengine.register_op("flip", lambda image: image)
    assert OPS["flip"].apply.__module__ == "augengine.pipeline"


def test_a_name_taken_by_another_function_is_refused():
    with pytest.raises(ConfigError, match="already registered by tests.user_op_plugin.brighten"):
        augengine.register_op("brighten", lambda image, offset: image,
                              params=OPS["brighten"].params)
    assert OPS["brighten"].apply.fn is brighten


@pytest.mark.parametrize("name, kwargs, message", [
    ("Bad-Name", {}, "an op name is lower case letters"),
    ("ok_name", {"params": dict}, "params must be a pydantic model class"),
    ("ok_name", {"mask": "nearest"}, "mask must be 'keep' or 'same'"),
])
def test_malformed_registrations_are_refused(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        augengine.register_op(name, lambda image: image, **kwargs)
    assert "ok_name" not in OPS


def test_a_parameter_named_like_a_step_key_is_refused():
    class Sweepy(BaseModel):
        sweep: int = 1

    with pytest.raises(ConfigError, match="parameter 'sweep' is a step key"):
        augengine.register_op("sweepy", lambda image, sweep: image, params=Sweepy)


def test_plan_checks_user_ops_like_built_ins(phantom_dir, tmp_path):
    step = {"op": "brighten", "offset": {"randint": [0, 40]}}
    plan = augengine.plan(plugin_job(phantom_dir, tmp_path / "a.zarr", step))
    assert plan.n_samples == 4 * 2 and "brighten" in user_ops() and "brighten" not in BUILTIN_OPS
    misspelt = plugin_job(phantom_dir, tmp_path / "b.zarr", {"op": "brigten", "offset": 3})
    with pytest.raises(ConfigError, match=r"^job: steps\[3\]\.op: unknown op 'brigten'; did you "
                                          r"mean 'brighten'\?$"):
        augengine.plan(misspelt)
    bad_param = plugin_job(phantom_dir, tmp_path / "c.zarr", {"op": "brighten", "ofset": 3})
    with pytest.raises(ConfigError, match=r"steps\[3\] \(brighten\): unknown parameter 'ofset'; "
                                          r"did you mean 'offset'\?"):
        augengine.plan(bad_param)
    out_of_range = plugin_job(phantom_dir, tmp_path / "d.zarr",
                              {"op": "brighten", "offset": {"uniform": [0, 400]}})
    with pytest.raises(ConfigError, match=r"offset: .*less than or equal to 255"):
        augengine.plan(out_of_range)


def test_a_plugin_that_cannot_be_imported_is_one_line(phantom_dir, tmp_path):
    job = small_job(phantom_dir, tmp_path / "a.zarr", plugins=["tests.no_such_plugin"])
    with pytest.raises(ConfigError, match=r"^job: plugins: cannot import plugin "
                                          r"'tests.no_such_plugin' \(No module named"):
        augengine.Job(**job)


@pytest.mark.slow
def test_a_user_op_runs_on_ray_actors_and_is_recorded(ray_session, phantom_dir, tmp_path):
    out = tmp_path / "ds.zarr"
    job = augengine.Job(**plugin_job(phantom_dir, out,
                                     {"op": "brighten", "offset": {"randint": [10, 40]}}))
    result = augengine.run(job, progress=False)
    assert (result.written, result.quarantined) == (8, 0), result.quarantine
    view = augengine.open_store(result.path)
    offsets = set()
    for row in view.manifest.to_pylist():
        last = json.loads(row["ops"])[-2]  # the final recorded resize to output.size follows
        assert last["op"] == "brighten" and 10 <= last["offset"] <= 40, (row["sample_id"], last)
        offsets.add(last["offset"])
        assert row["chain"].endswith("brighten(randint[10,40])"), row["chain"]
    assert len(offsets) > 1, "each sample draws its own offset"
    # The recorded chain replays to the stored bytes, the user op included.
    row = view.manifest.to_pylist()[3]
    from augengine import sources

    ref = next(r for r in sources.discover("oasbud", str(phantom_dir / "phantoms.mat"))
               if r.sample_id == row["input_id"])
    sample = sources.load_sample(ref)
    frame = Frame(sample.rf, sample.roi, None, "rf", dict(sample.meta))
    chain = [(step.pop("op"), step) for step in json.loads(row["ops"])]
    image, _ = apply_chain(frame, chain, (48, 48))
    np.testing.assert_array_equal(image.data, view.images[row["index"]],
                                  err_msg=f"sample {row['sample_id']}")


def test_the_command_imports_the_plugins_a_job_file_names(phantom_dir, tmp_path):
    """A fresh process, where only the job's ``plugins`` can have registered ``brighten``."""
    import subprocess
    import sys

    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(plugin_job(phantom_dir, tmp_path / "a.zarr",
                                              {"op": "brighten", "sweep": {"offset": [5, 10]}})))
    done = subprocess.run([sys.executable, "-m", "augengine", "plan", str(path)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "brighten(10)" in done.stdout and "brighten(5)" in done.stdout, done.stdout


@pytest.fixture
def scratch_ops():
    """Names registered by a test, removed after it."""
    names = []
    yield names
    for name in names:
        OPS.pop(name, None)


def test_mask_same_moves_the_mask_with_the_image_and_keep_refuses_a_new_shape(scratch_ops):
    class Rows(BaseModel):
        rows: int

    def top(image, rows):
        return image[:rows]

    augengine.register_op("top_rows", top, params=Rows, mask="same")
    augengine.register_op("top_rows_keep", top, params=Rows)
    scratch_ops += ["top_rows", "top_rows_keep"]
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 3:5] = 1
    frame = Frame(image, mask, (0.1, 0.1), "image")
    out, applied = apply_chain(frame, [("top_rows", {"rows": 4})], (4, 8))
    np.testing.assert_array_equal(out.data, image[:4])
    np.testing.assert_array_equal(out.mask, mask[:4])
    assert applied == [("top_rows", {"rows": 4})], "no resize: the chain ends at output.size"
    with pytest.raises(InputError, match=r"^op top_rows_keep: changed the image's shape \(8, 8\) "
                                        r"-> \(4, 8\) but left its mask; register it with "
                                        r"mask='same'"):
        apply_chain(frame, [("top_rows_keep", {"rows": 4})], (4, 8))
