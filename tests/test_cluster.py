"""Out-of-process runs: `ray job submit` against a real head, and a driver killed with SIGKILL.

Each test owns what it starts: the head runs under `ray start --block` in its own process group
and is stopped by signalling that group (never a bare `ray stop`, which would kill every Ray on
the host).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

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
    """Token auth on for the head, `ray job submit` and the job (the token: conftest's
    ``RAY_AUTH_TOKEN_PATH``); `ray start` and the job client turn it on only when asked."""
    return dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
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
    """A Ray head on free ports, with token auth and its dashboard for `ray job submit`; yields
    the job server's address and the port of the node's job agent."""
    port, dashboard = free_port(), free_port()
    # Every per-node agent port too: the defaults (e.g. 52365 for the job agent) are taken by
    # the embedded Ray other tests run, and an agent that cannot bind never serves job
    # submissions ("No available agent to submit job").
    ports = {name: free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")}
    agent_ports = [f"--{name}={port}" for name, port in ports.items()]
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
        yield SimpleNamespace(address=address, job_agent=ports["dashboard-agent-listen-port"])
    finally:
        stop_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_job(ray_head, phantom_dir, tmp_path):
    out = tmp_path / "submitted.zarr"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "ignored.zarr")))
    deadline = time.time() + 120
    while True:
        result = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", ray_head.address,
             "--working-dir", str(ROOT), "--", "python", "jobs/augment.py", "--config", str(job),
             "--output", str(out)],
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


def post_status(url: str, body: bytes, wait_s: float = 90) -> int:
    """HTTP status of a JSON POST, waiting for the server to listen (the job agent starts after
    the job server answers)."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    deadline = time.time() + wait_s
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except urllib.error.URLError:
            if time.time() > deadline:
                raise
            time.sleep(2)


def test_job_apis_refuse_a_request_without_the_token(ray_head):
    """What a hostile user tried: a job posted to the head's job server and to the node's job
    agent, without the token, is refused (401) and runs nothing."""
    marker = f"hostile-{secrets.token_hex(4)}"
    job = json.dumps({"entrypoint": f"echo {marker} > /dev/null"}).encode()
    for url in (f"{ray_head.address}/api/jobs/",
                f"http://127.0.0.1:{ray_head.job_agent}/api/job_agent/jobs/"):
        assert post_status(url, job) == 401, url
    listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head.address],
                            env=env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and marker not in listed.stdout


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
    journal = tmp_path / "ds.zarr" / "records" / "_journal"
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
    assert not (tmp_path / "ds.zarr" / "records" / "manifest.parquet").exists()

    result = run_job(parse_job(job), progress=False)
    assert result.shards_kept >= done_at_kill - 1 and result.shards_built > 0
    assert store.verify_store(tmp_path / "ds.zarr") == []
    assert ((tmp_path / "ds.zarr" / "records" / "manifest.parquet").read_bytes()
            == (tmp_path / "ref.zarr" / "records" / "manifest.parquet").read_bytes())
