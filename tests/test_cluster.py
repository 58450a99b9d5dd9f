"""Out-of-process runs: `ray job submit` against a real head, and a driver killed with SIGKILL.

Each test owns what it starts: the head runs under `ray start --block` in its own process group
and is stopped by signalling that group (never a bare `ray stop`, which would kill every Ray on
the host).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from augengine import store
from augengine.config import parse_job
from augengine.plan import make_plan
from augengine.runner import run_job
from tests.test_runner import small_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")


def stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def ray_head():
    """A Ray head on free ports, with its dashboard for `ray job submit`."""
    port, dashboard = free_port(), free_port()
    # Every per-node agent port too: the defaults (e.g. 52365 for the job agent) are taken by
    # the embedded Ray other tests run, and an agent that cannot bind never serves job
    # submissions ("No available agent to submit job").
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
         "--disable-usage-stats", f"--temp-dir={temp_dir}", *agent_ports],
        env=env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                   env=env(), capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            assert head.poll() is None, "ray start --head exited early"
            time.sleep(2)
        else:
            pytest.fail("the Ray head's job server did not come up within 90 s")
        yield address
    finally:
        stop_group(head)


def test_ray_job_submit_runs_the_job(ray_head, phantom_dir, tmp_path):
    out = tmp_path / "submitted.zarr"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "ignored.zarr")))
    deadline = time.time() + 120
    while True:
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(ROOT),
             "--", "python", "jobs/augment.py", "--config", str(job), "--output", str(out)],
            env=env(), capture_output=True, text=True, timeout=300)
        # The job server answers before its per-node agent is up (slow on a busy machine); such a
        # refusal creates no job, so asking again is safe.
        if "No available agent" not in result.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout.lower()
    assert store.verify_store(out) == []
    assert not (tmp_path / "ignored.zarr").exists(), "--output must override output.path"


def test_driver_killed_with_sigkill_resumes_to_identical_bytes(ray_session, phantom_dir, tmp_path):
    """SIGKILL the `augengine run` driver mid-run, then run the same job again."""
    # Enough shards that the kill lands mid-run: 3 ranges x 3 margins x 3 variants, 2 per shard.
    job = small_job(phantom_dir, tmp_path / "ds.zarr",
                    steps=[{"op": "bmode", "sweep": {"dynamic_range_db": [40, 50, 60]}},
                           {"op": "roi_crop", "sweep": {"margin_mm": [2, 5, 10]}},
                           {"op": "scan_convert"},
                           {"one_of": [{"op": "identity"}, {"op": "flip", "axis": "vertical"},
                                       {"op": "rotate", "angle_deg": {"uniform": [-10, 10]}}]}],
                    output={"path": str(tmp_path / "ds.zarr"), "size": [96, 96], "shard_size": 2})
    reference = parse_job(dict(job, output=dict(job["output"], path=str(tmp_path / "ref.zarr"))))
    run_job(reference, progress=False)
    n_shards = make_plan(reference).n_shards

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    driver = subprocess.Popen([str(BIN / "augengine"), "run", str(path), "--quiet"], env=env(),
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    journal = tmp_path / "ds.zarr" / "_journal"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            if journal.exists() and len(list(journal.glob("*.parquet"))) >= 3:
                break
            time.sleep(0.02)
        done_at_kill = len(list(journal.glob("*.parquet"))) if journal.exists() else 0
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, as a crash would
        driver.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # then whatever of its embedded Ray is left
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL
    assert 0 < done_at_kill < n_shards, f"kill landed outside the run ({done_at_kill}/{n_shards})"
    assert not (tmp_path / "ds.zarr" / "manifest.parquet").exists()

    result = run_job(parse_job(job), progress=False)
    assert result.shards_kept >= done_at_kill - 1 and result.shards_built > 0
    assert store.verify_store(tmp_path / "ds.zarr") == []
    assert ((tmp_path / "ds.zarr" / "manifest.parquet").read_bytes()
            == (tmp_path / "ref.zarr" / "manifest.parquet").read_bytes())
