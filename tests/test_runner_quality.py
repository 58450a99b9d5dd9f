"""Quality checks of style transfer at a fraction the job chooses: which rows, in which batches,
what the manifest and ``inspect`` say."""
from __future__ import annotations

import json
import math

import pytest

import augengine.nst.quality
from augengine import store
from augengine.cli import main
from augengine.config import parse_job
from augengine.nst.quality import is_assessed
from augengine.plan import make_plan
from augengine.nst.stage import StyleTransferInputs
from augengine.runner import run_job
from tests.test_runner_nst import nst_job, trained  # noqa: F401

pytestmark = pytest.mark.slow


def _job(trained, out, fraction, **output):  # noqa: F811
    source, checkpoint, _ = trained
    job = nst_job(source, checkpoint, out, steps=[])
    job["nst"]["quality_checks"] = fraction
    job["output"].update(output)
    return parse_job(job)


def _assessed_keys(plan, fraction) -> set:
    items = [plan.work_item(i) for i in range(plan.n_samples)]
    return {i.nst_key for i in items if is_assessed(plan.config.seed, i.input_key, fraction)}


def test_the_seeded_rows_are_assessed_in_batches_whatever_the_shards(  # noqa: F811
        trained, tmp_path, monkeypatch):
    config = _job(trained, tmp_path / "out.zarr", 0.5)
    plan = make_plan(config)
    expected = _assessed_keys(plan, 0.5)
    assert 0 < len(expected) < plan.n_rows, "0.5 of 18 rows: some, not all"
    batches = []
    assess = augengine.nst.quality.assess_quality

    def spy(result, *args, **kwargs):
        batches.append(result.shape[0])
        return assess(result, *args, **kwargs)

    monkeypatch.setattr(augengine.nst.quality, "assess_quality", spy)
    by_shard, rows = {}, {}
    inputs = StyleTransferInputs(plan.refs, config.nst, "cpu", config.seed)
    for shard in range(plan.n_shards):
        items = [plan.work_item(i) for i in plan.shard_indices(shard)]
        inputs.prepare(items)
        by_shard.update(inputs.quality)
        picked = {i.nst_key for i in items} & expected
        assert set(inputs.quality) == picked, f"shard {shard}"
        for item in items:
            rows[item.index] = inputs.load(item)[1][-1]
    calls = sum(math.ceil(len({i.nst_key for i in map(plan.work_item, plan.shard_indices(s))}
                              & expected) / 4) for s in range(plan.n_shards))
    assert batches == [4] * calls, f"one call per batch of 4 (padded): {batches}"
    for index, record in rows.items():
        key = plan.work_item(index).nst_key
        assert record["assessed"] == (key in expected) == ("quality" in record), record
    whole = StyleTransferInputs(plan.refs, config.nst, "cpu", config.seed)
    whole.prepare([plan.work_item(i) for i in range(plan.n_samples)])
    assert whole.quality.keys() == by_shard.keys()
    for key, scores in whole.quality.items():
        assert scores == pytest.approx(by_shard[key], rel=1e-4, abs=1e-6), key


def test_a_run_records_which_samples_were_assessed_and_inspect_counts_them(  # noqa: F811
        ray_session, trained, tmp_path, capsys):
    config = _job(trained, tmp_path / "half.zarr", 0.5)
    result = run_job(config, progress=False)
    rows = store.open_store(result.path).manifest.to_pylist()
    expected = _assessed_keys(make_plan(config), 0.5)
    assessed = [json.loads(row["ops"])[1]["assessed"] for row in rows]
    assert sum(assessed) == len(expected) and len(rows) == 18
    info = store.inspect_store(result.path)
    assert info["nst_quality_assessed"] == {"assessed": len(expected), "samples": 18}
    assert 0 < info["nst_quality_mean"]["ssim_to_content"] <= 1
    assert main(["inspect", result.path]) == 0
    assert f"(means over {len(expected)} of 18 samples assessed)" in capsys.readouterr().out
    none = run_job(_job(trained, tmp_path / "none.zarr", False), progress=False)
    info = store.inspect_store(none.path)
    assert info["nst_quality_assessed"] == {"assessed": 0, "samples": 18}
    assert info["nst_quality_mean"] is None
