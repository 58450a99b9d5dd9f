"""benchmarks/gpu_check.sh dry-run on a machine without a GPU: it must run to the end quickly,
each GPU step saying why it was skipped, and leave its summary (the first GPU run must not be
spent on a script error)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CUDA

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env", "parity", "srad", "bmode", "decoder", "production-probe", "production")


@pytest.mark.skipif(CUDA, reason="a dry run is for machines without a GPU; on one, run the script")
def test_gpu_check_dry_run_reports_every_step(tmp_path):
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    lines = summary.splitlines()
    assert lines[-1].startswith("gpu_check done in"), summary
    for name in STEPS:
        status = [line for line in lines if line.startswith(f"STEP {name} ")]
        assert len(status) == 1, f"step {name}: {len(status)} status lines in\n{summary}"
        if name != "env":
            assert status[0] == f"STEP {name} SKIP: no CUDA device", status[0]
    assert "STEP env OK" in summary and "env| have torch" in summary, summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.log", "summary.txt"]
