"""benchmarks/bench_production.py at a toy size, on the CPU and on the CUDA emulator: every stage
timed, and on the emulator the chain's launches and syncs counted. The figures mean nothing; the
run proves the bench reaches the runner's real path and reports what BENCHMARKS.md quotes."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_production

STAGES = {"style", "chain", "device_to_host", "write"}
#: What the chains cost on the emulator at BENCHMARKS.md's command (batch = shard = 8): the
#: ceilings a change must not raise. NST + srad_series: two stacks and one srad_series_u8 per
#: shard, one copy back. Demo chain (1 frame, 36 outputs in one shard): 17 launches, the head
#: run across the shard (one envelope of 5 launches, one compression for the 3 ranges, two each
#: for the 9 crops' scan_convert and resize), the flip, rotate and translate groups one stack
#: and one warp each, the copy back one stack; its one sync the wait for that copy, which brings
#: bmode's deferred all-zero check back with the images.
CEILINGS = {"NST + srad_series": {"launches": 3 / 8, "syncs_per_batch": 1},
            "demo": {"launches": 17 / 36, "syncs_per_batch": 1}}

@pytest.mark.parametrize("device", ["cpu", "emulated"])
def test_production_bench_writes_its_summary(tmp_path, device):
    out = tmp_path / "summary.json"
    bench_production.main(["--n", "4", "--size", "32", "--device", device, "--batch-size", "8",
                           "--shard-size", "8", "--arch", "resnet18", "--layer", "layer1",
                           "--demo-frames", "1" if device == "emulated" else "0",
                           "--out", str(out)])
    summary = json.loads(out.read_text())
    assert {"hardware", "device", "size", "write", "targets", "production"} <= set(summary)
    job = summary["production"]
    assert job["pairs"] == 8 and job["images"] == 8, "4 sources, 2 per class: 2 x 2 x 2 pairs"
    assert set(job["stages_s"]) == STAGES and job["images_per_s"] > 0
    for stage in ("style", "chain", "write"):
        assert job["stages_s"][stage] > 0, f"stage {stage} was not timed: {job['stages_s']}"
    if device == "cpu":
        assert job["counters"] is None and "demo" not in summary
        return
    for name, part in (("NST + srad_series", job), ("demo", summary["demo"])):
        counters = part["counters"]
        assert counters["launches_per_image"] > 0 and counters["syncs_per_image"] > 0, (
            f"{name}: nothing counted on the emulator: {counters}")
        assert counters["meets_targets"] == (counters["launches_per_image"] <= 0.5
                                             and counters["syncs_per_batch"] <= 1), name
        ceiling = CEILINGS[name]
        assert counters["launches_per_image"] <= ceiling["launches"] + 1e-9, (
            f"{name}: {counters['launches_per_image']:.3f} launches per image, expected <= "
            f"{ceiling['launches']:.3f}: {counters['launches_by_name']}")
        assert counters["syncs_per_batch"] <= ceiling["syncs_per_batch"], (
            f"{name}: {counters['syncs_per_batch']} syncs per batch, expected <= "
            f"{ceiling['syncs_per_batch']}: {counters['syncs_by_name']}")
    for name, part in (("NST + srad_series", job), ("demo", summary["demo"])):
        assert part["counters"]["meets_targets"], (
            f"{name} misses issue 9's targets (<= 0.5 launches per image, <= 1 sync per "
            f"batch): {part['counters']}")
    assert "srad_series_u8<float>" in job["counters"]["launches_by_name"], (
        "the post-step never reached the SRAD series kernel on the emulated device")
    assert summary["demo"]["images"] == 36, "jobs/demo.yaml: 3 x 3 sweeps x 4 one_of variants"


def test_production_bench_runs_without_zarr(tmp_path):
    """The GPU machine has no zarr: the bench must still style, run the chain and time the write
    floor in the store's place, saying so (a fresh process: this one has imported zarr)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "summary.json"
    code = ("import sys; sys.modules['zarr'] = None\n"
            "from benchmarks import bench_production\n"
            "bench_production.main(['--n', '4', '--size', '32', '--batch-size', '4', "
            "'--shard-size', '8', '--arch', 'resnet18', '--layer', 'layer1', "
            f"'--out', {str(out)!r}])")
    root = Path(bench_production.__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["write"].startswith("floor, not the store (zarr missing)"), summary["write"]
    assert summary["production"]["stages_s"]["write"] > 0
