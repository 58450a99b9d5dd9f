"""The GPU actors' path of the runner (frames moved to the device, every op on its CuPy path),
run on the CPU emulation of CuPy and the kernels (tests/cuda_emulator): same samples as the CPU
path, to the parity tolerances of the kernels. A real GPU run is in tests/ops/test_cuda_parity.py
(skipped without a GPU); this one runs everywhere."""
from __future__ import annotations

import numpy as np

from augengine.config import parse_job
from augengine.plan import make_plan
from augengine.runner import build_shard
from tests import cuda_emulator

STEPS = [
    {"op": "bmode", "dynamic_range_db": 50},
    {"op": "srad", "iterations": 4},
    {"op": "roi_crop", "margin_mm": 5},
    {"op": "scan_convert"},
    {"op": "resize"},
    {"one_of": [{"op": "identity"}, {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}},
                {"op": "gaussian_blur", "sigma": 1.5}, {"op": "jpeg", "quality": 40},
                {"op": "srad_series", "scale": 2}]},
]


def phantom_job(phantom_dir, tmp_path, steps, seed: int, size: int, shard_size: int):
    """The job of ``steps`` on the phantoms, its plan and every work item of it."""
    config = parse_job({
        "name": "device", "seed": seed, "steps": steps,
        "sources": [{"reader": "oasbud", "path": str(phantom_dir / "phantoms.mat")}],
        "output": {"path": str(tmp_path / "unused.zarr"), "size": [size, size],
                   "shard_size": shard_size},
    })
    plan = make_plan(config)
    return config, plan, [plan.work_item(i) for i in range(plan.n_samples)]


def test_device_path_makes_the_cpu_samples(phantom_dir, tmp_path):
    config, plan, items = phantom_job(phantom_dir, tmp_path, STEPS, 3, 48, 64)
    cpu = build_shard(items, plan.chains, config.seed, (48, 48), 64, device="cpu")
    cuda_emulator.LAUNCHES.clear()
    with cuda_emulator.emulated_cupy():
        device = build_shard(items, plan.chains, config.seed, (48, 48), 64, device="cuda")

    assert cpu[4] == [] and device[4] == [], f"quarantined: cpu {cpu[4]}, device {device[4]}"
    launched = set(cuda_emulator.LAUNCHES)
    for kernel in ("hilbert_spectrum<float>", "log_compress_u8<float>", "srad_step<float>",
                   "srad_series_u8<float>"):
        assert kernel in launched, f"the device path never launched {kernel}; launched {launched}"
    for cpu_row, device_row in zip(cpu[3], device[3], strict=True):
        index, chain = cpu_row["index"], cpu_row["chain"]
        assert device_row["ops"] == cpu_row["ops"], f"sample {index}: different ops recorded"
        np.testing.assert_array_equal(device[1][index], cpu[1][index],
                                      err_msg=f"sample {index} ({chain}): masks differ")
        diff = np.abs(device[0][index].astype(int) - cpu[0][index].astype(int))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= 0.005 * diff.size, (
            f"sample {index} ({chain}): {np.count_nonzero(diff)} pixels differ, up to "
            f"{diff.max()} grey levels; expected <= 1 level on <= 0.5 % of the pixels")


DEMO_STEPS = [
    {"op": "bmode", "sweep": {"dynamic_range_db": [40, 50, 60]}},
    {"op": "roi_crop", "sweep": {"margin_mm": [2, 5, 10]}},
    {"op": "scan_convert"},
    {"op": "resize"},
    {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "horizontal"},
                {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}},
                {"op": "translate", "dy_px": {"uniform": [-4, 4]}, "dx_px": {"uniform": [-4, 4]}}]},
]


def test_an_all_zero_frame_is_quarantined_after_the_one_copy_back(phantom_dir, tmp_path):
    """The demo head on the device defers bmode's all-zero check to the shard's copy back: the
    shard waits for the device once, and the zeroed input's samples are quarantined with the
    CPU path's message while the others are made."""
    from augengine.runner import _load_input

    config, plan, items = phantom_job(phantom_dir, tmp_path, DEMO_STEPS, 5, 32, 144)
    zeroed = items[40].input_key

    def load(item):
        frame, made_by = _load_input(item)
        if item.input_key == zeroed:
            frame.data = np.zeros_like(frame.data)
        return frame, made_by

    cpu = build_shard(items, plan.chains, config.seed, (32, 32), 144, "cpu", load)
    with cuda_emulator.emulated_cupy(), cuda_emulator.counting() as counts:
        device = build_shard(items, plan.chains, config.seed, (32, 32), 144, "cuda", load)

    expected = {(q["index"], q["reason"]) for q in cpu[4]}
    assert len(expected) == 36 and all("envelope is all zeros" in r for _, r in expected), (
        f"the CPU path should quarantine input {zeroed}'s 36 samples, got {sorted(expected)[:3]}")
    assert {(q["index"], q["reason"]) for q in device[4]} == expected, (
        f"device quarantine differs: {device[4][:3]} vs {cpu[4][:3]}")
    assert counts.n_syncs == 1, f"expected one wait for the shard, got {dict(counts.syncs)}"
    made = [row["index"] for row in cpu[3]]
    assert [row["index"] for row in device[3]] == made
    for index in made:
        diff = np.abs(device[0][index].astype(int) - cpu[0][index].astype(int))
        assert diff.max() <= 1, f"sample {index}: up to {diff.max()} grey levels from the CPU's"
    for q in device[4]:
        assert not device[0][q["index"]].any(), f"quarantined sample {q['index']} has pixels"


def test_a_shard_is_queued_without_a_wait_and_finished_with_one(phantom_dir, tmp_path):
    """start_shard runs the chains and queues the copy back without waiting for the device, so
    an actor can queue its next shard; finish_shard (the writer thread's) waits once."""
    from augengine.runner import finish_shard, start_shard

    config, plan, items = phantom_job(phantom_dir, tmp_path, DEMO_STEPS, 5, 32, 72)
    items = items[:72]
    expected = build_shard(items, plan.chains, config.seed, (32, 32), 72, "cpu")
    with cuda_emulator.emulated_cupy():
        with cuda_emulator.counting() as started:
            pending = start_shard(items, plan.chains, config.seed, (32, 32), 72, "cuda")
        with cuda_emulator.counting() as finished:
            images, _, labels, rows, quarantined = finish_shard(pending)
    assert started.n_syncs == 0 and started.n_launches > 0, (
        f"start_shard waited for the device: {dict(started.syncs)}")
    assert finished.syncs == {"Event.synchronize": 1} and finished.n_launches == 0, (
        f"finish_shard: {dict(finished.syncs)}, launches {dict(finished.launches)}")
    assert quarantined == expected[4] == [] and len(rows) == 72
    np.testing.assert_array_equal(labels, expected[2])
    diff = np.abs(images.astype(int) - expected[0].astype(int))
    assert diff.max() <= 1, f"up to {diff.max()} grey levels from the CPU's samples"
