"""The writer pool under SIGKILL: a driver killed mid-run, and an actor killed while its writer
holds a shard not yet confirmed; either way the resumed store equals an uninterrupted one."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from augengine import store
from augengine.config import parse_job
from augengine.plan import make_plan
from augengine.runner import ACTOR_MAX_RESTARTS, ShardWorker, run_job
from tests.test_runner import actor_pid, small_job

pytestmark = pytest.mark.slow


def many_shards_job(phantom_dir: Path, out: Path) -> dict:
    """The small job in shards of 2: 12 shards, so a kill lands between shards."""
    return small_job(phantom_dir, out, output={"path": str(out), "size": [48, 48],
                                               "shard_size": 2})


def store_files(path: Path) -> dict:
    """Every file of a store that must be byte-identical between runs: arrays, manifest,
    quarantine and inputs; not the group's zarr.json and the journals (they carry the job's
    identity, which names the output path), the lock, or a killed writer's ``*.partial``."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("zarr.json", store.LOCK_FILE)
            and p.parent.name != "_journal" and not p.name.endswith(".partial")} | \
        {p.relative_to(path): p.read_bytes() for p in path.glob("*/zarr.json")}


@pytest.fixture(scope="module")
def uninterrupted(ray_session, phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "ds.zarr"
    run_job(parse_job(many_shards_job(phantom_dir, out)), progress=False)
    return store_files(out)


def test_a_driver_killed_mid_run_resumes_to_the_same_bytes(ray_session, uninterrupted,
                                                           phantom_dir, tmp_path):
    out = tmp_path / "ds.zarr"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(many_shards_job(phantom_dir, out)))
    # The embedded Ray listens on loopback only (its runtime context still names the host's
    # address); a second driver keeps 127.0.0.1 only when Ray's "no cluster" switch is set (as
    # augengine.raycluster does for the embedded Ray), and sends the token only in token mode.
    port = ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    driver = subprocess.Popen([sys.executable, "-m", "augengine", "run", "--quiet", "--address",
                               f"127.0.0.1:{port}", str(job)], stderr=subprocess.PIPE,
                              env=dict(os.environ, RAY_AUTH_MODE="token",
                                       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
    deadline = time.monotonic() + 120
    while not list((out / "records" / "_journal").glob("*.parquet")) and driver.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    journaled = len(list((out / "records" / "_journal").glob("*.parquet")))
    assert 0 < journaled < make_plan(parse_job(many_shards_job(phantom_dir, out))).n_shards, \
        f"the driver was not killed mid-run ({journaled} shards journaled; exit " \
        f"{driver.returncode}: {driver.stderr.read().decode()[-2000:]})"
    resumed = run_job(parse_job(many_shards_job(phantom_dir, out)), progress=False)
    assert resumed.shards_kept >= journaled - 1  # the last one may have been mid-journal
    assert store.verify_store(out) == []
    assert store_files(out) == uninterrupted


def test_an_actor_killed_with_a_write_queued_loses_it_and_the_rebuild_is_identical(
        ray_session, uninterrupted, phantom_dir, tmp_path):
    """The window the driver cannot see: the shard is built and handed to the writer thread,
    not yet confirmed. The restarted actor must say it never wrote it (so the driver builds it
    again) rather than confirm a write that died with the process."""
    out = tmp_path / "ds.zarr"
    config = parse_job(many_shards_job(phantom_dir, out))
    plan = make_plan(config)
    run_job(config, progress=False)
    shard, indices = 3, plan.shard_indices(3)
    shutil.rmtree(out / "images" / "c" / "3")     # the shard is not on disk
    shutil.rmtree(out / "masks" / "c" / "3")
    (out / "labels" / "c" / "3").unlink()
    actor = ray_session.remote(ShardWorker).options(
        max_concurrency=2, num_cpus=0.1, max_restarts=ACTOR_MAX_RESTARTS,
        max_task_retries=1).remote(str(out), plan.chains, config.seed, config.output.size,
                                   config.output.shard_size)
    try:
        items = [plan.work_item(i) for i in indices]
        pid = actor_pid(ray_session, actor)
        ray_session.get(actor.process_shard.remote(shard, indices.start, items))
        os.kill(pid, signal.SIGKILL)
        assert ray_session.get(actor.wait_written.remote(shard)) is None
        assert actor_pid(ray_session, actor) != pid, "the actor was not restarted"
        ray_session.get(actor.process_shard.remote(shard, indices.start, items))
        rows, quarantined = ray_session.get(actor.wait_written.remote(shard))
        assert quarantined == store.read_journal(out, shard).quarantined
        recorded = {row["index"]: row["sha256"] for row in store.read_journal(out, shard).rows}
        assert {row["index"]: row["sha256"] for row in rows} == recorded, (
            f"shard {shard}: the writer's checksums differ from the journaled ones")
    finally:
        ray_session.kill(actor)
    assert store_files(out) == uninterrupted


def test_all_actors_killed_mid_run_are_restarted_and_the_store_is_identical(
        ray_session, uninterrupted, phantom_dir, tmp_path):
    out = tmp_path / "ds.zarr"
    killed = []

    def kill_every_actor(shard, actors):
        # After the first journaled shard the other shards are being built or written.
        if not killed:
            for actor in actors:
                pid = actor_pid(ray_session, actor)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    result = run_job(parse_job(many_shards_job(phantom_dir, out)), progress=False,
                     on_shard_done=kill_every_actor)
    assert len(killed) == 2, "the job should run on two actors"
    assert result.written == result.planned and store.verify_store(out) == []
    assert store_files(out) == uninterrupted
