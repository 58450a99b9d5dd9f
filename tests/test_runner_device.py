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


def test_device_path_makes_the_cpu_samples(phantom_dir, tmp_path):
    config = parse_job({
        "name": "device", "seed": 3, "steps": STEPS,
        "sources": [{"reader": "oasbud", "path": str(phantom_dir / "phantoms.mat")}],
        "output": {"path": str(tmp_path / "unused.zarr"), "size": [48, 48], "shard_size": 64},
    })
    plan = make_plan(config)
    items = [plan.work_item(i) for i in range(plan.n_samples)]
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
