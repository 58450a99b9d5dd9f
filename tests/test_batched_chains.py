"""Batched chains (``start_chain`` + ``finish_chains``, used by ``runner.build_shard``) against
the per-sample path (``apply_chain`` one sample at a time, as ``build_shard`` ran until issue 9):
the same outputs, rows and quarantine, and stores identical file for file for the demo job and
the NST example job."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from augengine import store
from augengine.config import parse_job
from augengine.errors import one_line
from augengine.pipeline import (Frame, apply_chain, describe_chain, finish_chains, realise_chain,
                                sample_seed, start_chain)
from augengine.plan import make_plan
from augengine.nst.stage import StyleTransferInputs
from augengine.runner import _load_input, _on_device, build_shard, run_job

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def per_sample_shard(items, chains, job_seed, output_size, shard_size, device="cpu",
                     load_input=_load_input):
    """The oracle: ``build_shard`` as it was before chains were batched, one sample at a time
    through ``apply_chain`` with the per-input prefix cache."""
    h, w = output_size
    images = np.zeros((len(items), h, w), np.uint8)
    masks = np.zeros((len(items), h, w), np.uint8)
    labels = np.full(len(items), -1, np.int8)
    rows, quarantined = [], []
    loaded_key, frame, made_by, load_error, cache = None, None, [], None, {}
    for slot, item in enumerate(items):
        ref, variant = item.ref, item.variant
        if item.input_key != loaded_key:
            loaded_key, frame, made_by, load_error, cache = item.input_key, None, [], None, {}
            try:
                frame, made_by = load_input(item)
                frame = _on_device(frame, device)
            except Exception as error:  # noqa: BLE001
                load_error = one_line(error)
        seed = sample_seed(job_seed, item.input_key, variant)
        concrete = realise_chain(chains[variant], seed)
        reason = load_error
        if reason is None:
            try:
                out, applied = apply_chain(frame, concrete, output_size, cache)
            except Exception as error:  # noqa: BLE001
                reason = one_line(error)
        if reason is not None:
            quarantined.append({"index": item.index, "input_id": item.input_key,
                                "source_path": ref.path, "variant": variant,
                                "shard": item.index // shard_size, "reason": reason})
            continue
        images[slot] = out.data
        if out.mask is not None:
            masks[slot] = out.mask
        labels[slot] = ref.label
        rows.append({
            "index": item.index, "sample_id": f"{item.input_key}:{variant}",
            "input_id": ref.sample_id, "source_id": ref.source_id, "source_path": ref.path,
            "reader": ref.reader, "label": ref.label, "variant": variant,
            "chain": describe_chain(chains[variant]),
            "ops": json.dumps(made_by + [{"op": op, **params} for op, params in applied],
                              sort_keys=True),
            "seed": seed, "shard": item.index // shard_size, "has_mask": out.mask is not None,
            "sha256": store.image_sha256(images[slot]),
            "mask_sha256": None if out.mask is None else store.image_sha256(masks[slot]),
        })
    return images, masks, labels, rows, quarantined


def write_store(config, make_shard, keep_as: str) -> Path:
    """Write a whole store in this process as ``run_job`` does, each shard from
    ``make_shard(plan, items)``, then move it to ``keep_as`` beside it: stores record their own
    path (attributes, journal digests), so the two paths compared are written at the same one."""
    plan, out = make_plan(config), config.output
    store.create_store(out.path, plan.n_samples, out.size, out.shard_size, plan.has_masks,
                       plan.job_hash(), config.model_dump(mode="json"), plan.inputs())
    all_rows, all_quarantined = [], []
    for shard in range(plan.n_shards):
        indices = plan.shard_indices(shard)
        images, masks, labels, rows, quarantined = make_shard(
            plan, [plan.work_item(i) for i in indices])
        store.write_shard(out.path, indices.start, images, labels, masks)
        store.write_journal(out.path, shard, rows, quarantined, plan.shard_digest(shard))
        all_rows += rows
        all_quarantined += quarantined
    store.finalize(out.path, all_rows, all_quarantined, plan.n_samples, plan.source_errors)
    return Path(out.path).rename(Path(out.path).with_name(keep_as))


def assert_same_store_files(path: Path, expected: Path, what: str) -> int:
    """Every file of the two stores byte for byte (lock files aside); returns the file count."""
    def files(root):
        return {p.relative_to(root): p for p in root.rglob("*")
                if p.is_file() and not p.name.endswith(".lock")}

    got, want = files(path), files(expected)
    assert sorted(got) == sorted(want), f"{what}: stores hold different files"
    differ = [str(name) for name in sorted(want)
              if got[name].read_bytes() != want[name].read_bytes()]
    assert not differ, f"{what}: {len(differ)} of {len(want)} files differ, e.g. {differ[:3]}"
    return len(want)


def job_from_example(name: str, out: Path, **changes):
    job = yaml.safe_load((JOBS / name).read_text())
    job["output"]["path"] = str(out)
    job.update(changes)
    return parse_job(job)


# --- the demo job ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(phantom_dir, tmp_path_factory):
    """jobs/demo.yaml on the test phantoms: the per-sample store and its config maker."""
    root = tmp_path_factory.mktemp("demo")

    def config(name):
        return job_from_example("demo.yaml", root / name, sources=[
            {"reader": "oasbud", "path": str(phantom_dir / "phantoms.mat")}])

    reference = config("ds.zarr")
    out = reference.output
    return config, write_store(reference, lambda plan, items: per_sample_shard(
        items, plan.chains, reference.seed, tuple(out.size), out.shard_size), "per-sample.zarr")


def test_demo_job_batched_store_is_byte_identical(demo):
    config, expected = demo
    batched = config("ds.zarr")
    out = batched.output
    path = write_store(batched, lambda plan, items: build_shard(
        items, plan.chains, batched.seed, tuple(out.size), out.shard_size), "batched.zarr")
    plan = make_plan(batched)
    assert plan.n_samples == 4 * 36 and plan.n_shards == 2, (plan.n_samples, plan.n_shards)
    assert store.open_store(path).attrs["counts"]["written"] == plan.n_samples
    assert_same_store_files(path, expected, "demo job, batched vs per-sample")


@pytest.mark.slow
def test_demo_job_run_on_ray_matches_the_per_sample_store(ray_session, demo, tmp_path):
    config, expected = demo
    result = run_job(config("ray.zarr"), progress=False)
    assert result.written == result.planned == 4 * 36
    view, want = store.open_store(result.path), store.open_store(expected)
    for name in ("images", "masks", "labels"):
        got, wanted = view.group[name][...], want.group[name][...]
        differ = np.flatnonzero((got != wanted).reshape(len(got), -1).any(axis=1))
        assert differ.size == 0, f"{name} of samples {differ[:5].tolist()} differ"
    assert view.manifest.to_pylist() == want.manifest.to_pylist()


# --- the NST example job ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nst_example(tmp_path_factory):
    """jobs/nst_example.yaml on a small texture store whose images were made at 50 dB (so its
    srad step has a dynamic range) with a decoder trained for one epoch."""
    from augengine.train.nst_decoder import train_feedforward
    from tests.train.test_nst_decoder import TINY, make_texture_store

    root = tmp_path_factory.mktemp("nst-example")
    source = make_texture_store(root / "originals.zarr", n_per_class=3, size=32,
                                made_by=({"op": "bmode", "dynamic_range_db": 50},))
    train_feedforward(source, root / "run", epochs=1, lrp=False,
                      **dict(TINY, pairing="within_class_all"))

    def config(name):
        job = yaml.safe_load((JOBS / "nst_example.yaml").read_text())
        job["sources"] = [{"reader": "store", "path": str(source)}]
        job["nst"]["checkpoint"] = str(root / "run" / "checkpoint.pt")
        job["output"]["path"] = str(root / name)
        return parse_job(job)

    def styled_shard(shard_fn, config):
        out, nst = config.output, config.nst
        state = {}

        def make(plan, items):
            if "inputs" not in state:
                state["inputs"] = StyleTransferInputs(plan.refs, nst, "cpu", config.seed)
            state["inputs"].prepare(items)
            return shard_fn(items, plan.chains, config.seed, tuple(out.size), out.shard_size,
                            "cpu", state["inputs"].load)

        return make

    reference = config("ds.zarr")
    return config, styled_shard, write_store(reference, styled_shard(per_sample_shard, reference),
                                             "per-sample.zarr")


def test_nst_example_job_batched_store_is_byte_identical(nst_example):
    config, styled_shard, expected = nst_example
    batched = config("ds.zarr")
    path = write_store(batched, styled_shard(build_shard, batched), "batched.zarr")
    view = store.open_store(path)
    plan = make_plan(batched)
    assert view.attrs["counts"]["written"] == plan.n_samples == 6 * 2 * 2, view.attrs["counts"]
    srad_rows = [r for r in view.manifest.to_pylist() if '"op": "srad"' in r["ops"]]
    assert len(srad_rows) == plan.n_samples // 2, "half the outputs take the srad branch"
    assert_same_store_files(path, expected, "NST example job, batched vs per-sample")


# --- finish_chains on its own ------------------------------------------------------------------


def speckle_frames(rng, count, shape=(40, 36), with_mask=True):
    from augengine.ops import log_compress

    frames = []
    for _ in range(count):
        image = log_compress(np.sqrt(rng.exponential(1.0, shape)) * rng.uniform(0.5, 2), 50)
        mask = np.zeros(shape, bool)
        mask[10:25, 8:20] = True
        frames.append(Frame(image, mask if with_mask else None, (0.1, 0.1), "image",
                            {"dynamic_range_db": 50}))
    return frames


CHAINS = [
    [("identity", {})],
    [("flip", {"axis": "vertical"})],
    [("rotate90", {"k": {"choice": [1, 3]}})],
    [("rotate", {"angle_deg": {"uniform": [-30, 30]}}),
     ("gaussian_blur", {"sigma": {"choice": [0.0, 0.8, 1.6]}})],
    [("translate", {"dy_px": {"uniform": [-6, 6]}, "dx_px": {"uniform": [-6, 6]}}),
     ("scale", {"factor": {"uniform": [0.7, 1.4]}})],
    [("jpeg", {"quality": {"randint": [5, 90]}})],
    [("srad", {"iterations": 3})],
    [("srad", {"iterations": 3, "dynamic_range_db": {"choice": [40, 60]}})],
    [("srad_series", {"scale": {"randint": [0, 2]}, "scales": 3, "iterations_per_scale": 2}),
     ("resize", {"size": [24, 20]})],
]


@pytest.mark.parametrize("with_mask, srad_chunk", [(True, None), (False, None), (True, 1)])
def test_every_batched_op_gives_the_per_sample_bytes(rng, with_mask, srad_chunk, monkeypatch):
    import augengine.pipeline as pipeline

    if srad_chunk is not None:  # one image per SRAD call, as on a CPU with large images
        monkeypatch.setattr(pipeline, "SRAD_CPU_CHUNK_PIXELS", srad_chunk)
    frames = speckle_frames(rng, 5, with_mask=with_mask)
    output_size = (40, 36)
    cases, starts = [], []
    for chain_number, chain in enumerate(CHAINS):
        for sample, frame in enumerate(frames * 2):  # each image twice: shared series, repeats
            concrete = realise_chain(chain, 1000 * chain_number + sample)
            cases.append((chain_number, sample, frame, concrete))
            starts.append(start_chain(frame, concrete, output_size))
    results = finish_chains(starts, output_size)
    for (chain_number, sample, frame, concrete), result in zip(cases, results):
        expected, applied = apply_chain(frame, concrete, output_size)
        what = f"chain {describe_chain(CHAINS[chain_number])}, sample {sample}, {concrete}"
        assert not isinstance(result, Exception), f"{what}: raised {result!r}"
        assert result[1] == applied, f"{what}: applied {result[1]}, expected {applied}"
        assert np.array_equal(result[0].data, expected.data), (
            f"{what}: {int((result[0].data != expected.data).sum())} pixels differ, expected 0")
        if with_mask:
            assert np.array_equal(result[0].mask, expected.mask), f"{what}: mask differs"


def test_the_tail_after_the_last_per_input_op_is_batched(rng, monkeypatch):
    import augengine.pipeline as pipeline

    frames = speckle_frames(rng, 3)
    chain = [("resize", {"size": [30, 30]}), ("rotate", {"angle_deg": {"uniform": [-9, 9]}}),
             ("flip", {"axis": "horizontal"})]
    starts = [start_chain(f, realise_chain(chain, s), (30, 30)) for s, f in enumerate(frames)]
    assert [[op for op, _ in s.applied] for s in starts] == [["resize"]] * 3
    batches = []
    real = pipeline._run_batch
    monkeypatch.setattr(pipeline, "_run_batch", lambda group: (
        batches.append(len(group)), real(group))[1])
    finish_chains(starts, (30, 30))
    assert batches == [3], f"expected one batch of 3 samples, got batches {batches}"


def test_a_bad_sample_in_a_batch_costs_only_itself(rng):
    frames = speckle_frames(rng, 4)
    frames[2] = Frame(frames[2].data, frames[2].mask, (0.1, 0.1), "image", {})  # no range known
    chain = [("srad", {"iterations": 2})]
    starts = [start_chain(f, chain, (40, 36)) for f in frames]
    results = finish_chains(starts, (40, 36))
    assert isinstance(results[2], Exception) and "needs dynamic_range_db" in str(results[2]), \
        f"sample 2 has no dynamic range and should fail alone, got {results[2]!r}"
    for sample in (0, 1, 3):
        expected, _ = apply_chain(frames[sample], chain, (40, 36))
        assert np.array_equal(results[sample][0].data, expected.data), f"sample {sample} differs"


def test_the_heads_resampling_runs_once_per_op_across_inputs_of_any_shape(rng, monkeypatch):
    import dataclasses

    import augengine.pipeline as pipeline

    # Two shapes; the second frame shares the first's shape, the last lacks its spacing.
    frames = speckle_frames(rng, 2) + speckle_frames(rng, 1, shape=(48, 30))
    frames.append(Frame(frames[0].data, frames[0].mask, None, "image", {}))
    head = [("scan_convert", {"pixel_size_mm": 0.08}), ("resize", {})]
    # Two variants of each input sharing the head through the cache, as a one_of makes.
    variants = [head, head + [("rotate", {"angle_deg": {"uniform": [-9, 9]}})]]
    batches = []
    for name in ("scan_convert", "resize"):
        real = pipeline.HEAD_BATCHED[name]
        monkeypatch.setitem(pipeline.HEAD_BATCHED, name, dataclasses.replace(
            real, apply=lambda fs, p, size, real=real, name=name:
            (batches.append((name, len(fs))), real.apply(fs, p, size))[1]))
    cases, starts = [], []
    for sample, frame in enumerate(frames):
        cache = {}
        for variant in variants:
            concrete = realise_chain(variant, 10 * sample + len(variant))
            cases.append((sample, frame, concrete))
            starts.append(start_chain(frame, concrete, (32, 32), cache))
    results = finish_chains(starts, (32, 32))
    # scan_convert: one call for the 4 inputs, which raises (input 3 has no spacing) and so runs
    # again frame by frame through the per-sample op; resize: one call for the 3 left.
    assert batches == [("scan_convert", 4), ("resize", 3)], (
        f"expected one scan_convert and one resize call across shapes, each input once, "
        f"got {batches}")
    for (sample, frame, concrete), result in zip(cases, results):
        if sample == 3:
            with pytest.raises(Exception) as expected_error:
                apply_chain(frame, concrete, (32, 32))
            assert isinstance(result, Exception) and one_line(result) == one_line(
                expected_error.value), f"sample 3 (no spacing) should fail alone, got {result!r}"
            continue
        expected, applied = apply_chain(frame, concrete, (32, 32))
        assert not isinstance(result, Exception), f"sample {sample}: raised {result!r}"
        assert result[1] == applied, f"sample {sample}: applied {result[1]}, expected {applied}"
        assert np.array_equal(result[0].data, expected.data), f"sample {sample}: data differs"
        assert np.array_equal(result[0].mask, expected.mask), f"sample {sample}: mask differs"
        assert result[0].spacing_mm == expected.spacing_mm, f"sample {sample}: spacing differs"
