"""``--backend ray``: the training loop on Ray Train's ``TorchTrainer``, the GPU decision from
the cluster's resources, and a submitted job's runtime env kept under augengine's.

The end-to-end run uses the session's embedded Ray (``ray_session``: token auth, loopback) and
the tiny store of ``test_jobs.py``: ResNet-18 at 32 px, 2 CPU workers, 1 epoch.
"""
from __future__ import annotations

import doctest
import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from augengine.errors import ConfigError
from augengine.models import load_weights, resnet18
from augengine.train.cli import main
from augengine.train.distributed import init_distributed, ray_use_gpu
from augengine.train.loop import load_checkpoint
from augengine.train.ray_backend import RAY_TRAIN_DIR
from tests.train.test_jobs import REPO, TINY, make_tiny_store


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("ray-backend") / "tiny.zarr")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("module", ["augengine.raycluster"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


# --- the GPU decision -----------------------------------------------------------------------------

@pytest.mark.parametrize("workers, resources, device, expected", [
    (2, {"CPU": 2.0}, None, False),                 # CPU-only cluster
    (2, {"CPU": 16.0, "GPU": 2.0}, None, True),     # one GPU per worker
    (1, {"CPU": 16.0, "GPU": 8.0}, None, True),
    (2, {"CPU": 16.0, "GPU": 2.0}, "cpu", False),   # --device cpu keeps them off the GPUs
    (2, {"CPU": 16.0, "GPU": 2.0}, "cuda", True),
])
def test_workers_take_gpus_when_the_cluster_has_enough(workers, resources, device, expected):
    assert ray_use_gpu(workers, resources, device) is expected, \
        f"{workers} workers on {resources} with device {device}: expected use_gpu {expected}"


@pytest.mark.parametrize("workers, resources, device, message", [
    (4, {"CPU": 16.0, "GPU": 2.0}, None,
     "--processes 4 asks for 4 Ray workers with one GPU each, but the Ray cluster has 2 GPU(s); "
     "use --processes 2 or fewer, or --device cpu"),
    (2, {"CPU": 16.0}, "cuda", "--device cuda, but the Ray cluster has no GPU"),
    (0, {"CPU": 2.0}, None, "--processes (Ray workers) must be an integer >= 1, got 0"),
    (1, {"CPU": 2.0}, "cuda:1", "--device on Ray must be cpu or cuda"),
])
def test_too_few_gpus_is_one_line(workers, resources, device, message):
    with pytest.raises(ConfigError) as caught:
        ray_use_gpu(workers, resources, device)
    assert message in str(caught.value) and "\n" not in str(caught.value), \
        f"{workers} workers on {resources}: got {caught.value!r}, expected {message!r}"


def test_backend_ray_outside_a_ray_train_worker_is_refused():
    with pytest.raises(ConfigError, match="backend 'ray' runs only in the workers of Ray "
                                          "Train's TorchTrainer"):
        init_distributed("ray", "cpu")


# --- two CPU workers on the embedded Ray ---------------------------------------------------------

@pytest.mark.slow
def test_two_ray_train_workers_write_the_single_process_checkpoint(ray_session, tiny_store,
                                                                   tmp_path, monkeypatch,
                                                                   capsys):
    """2 workers, 1 epoch; the driver claims CUDA (as a GPU head would) but the cluster has no
    GPU, so the workers train on the CPU. ``--out`` is relative to the driver's folder (Ray Train
    runs its workers elsewhere). Then one plain process resumes the run for epoch 2: the
    checkpoint is the loop's own, and the evaluate path loads its weights."""
    out = tmp_path / "run"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the driver only
    monkeypatch.chdir(tmp_path)
    code = main(["classifier", "--data", str(tiny_store), "--out", "run", *TINY,
                 "--epochs", "1", "--loader", "torch", "--backend", "ray", "--processes", "2",
                 "--debug-rank-hashes"])
    assert code == 0, f"--backend ray exited {code}: {capsys.readouterr().err[-2000:]}"
    assert "1 epoch(s) run after 0 on 2 rank(s)" in capsys.readouterr().out, \
        "the driver must print rank 0's summary line"
    ray_run = load_checkpoint(out / "checkpoint.pt")
    hashes = [json.loads((out / f"rank{r}.json").read_text())["sha256"] for r in (0, 1)]
    assert hashes[0] == hashes[1] == ray_run["sha256"], \
        f"workers ended with weights {hashes}, checkpoint {ray_run['sha256']}: expected equal"
    assert (ray_run["epoch"], ray_run["world_size"], ray_run["config"]["device"]) == \
        (1, 2, "cpu"), "expected epoch 1 on 2 workers, on the CPU the cluster has"
    training = json.loads((out / "metrics.json").read_text())["metrics"]["training"]
    assert (training["backend"], training["world_size"]) == ("ray", 2), f"metrics {training}"
    assert sorted(p.name for p in (out / RAY_TRAIN_DIR).iterdir()) == \
        [".validate_storage_marker"], "Ray Train keeps only its storage marker in the run"

    monkeypatch.undo()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code = main(["classifier", "--data", str(tiny_store), "--out", str(out), *TINY,
                 "--epochs", "2", "--loader", "torch", "--resume"])
    assert code == 0, f"a single process could not resume the Ray run: {capsys.readouterr()}"
    single = load_checkpoint(out / "checkpoint.pt")
    assert sorted(single) == sorted(ray_run), \
        f"checkpoint keys: Ray {sorted(ray_run)}, single process {sorted(single)}"
    assert {k: v.shape for k, v in single["model"].items()} == \
        {k: v.shape for k, v in ray_run["model"].items()}, "the weights' names or shapes differ"
    assert single["epoch"] == 2 and single["history"]["train_loss"][0] == \
        ray_run["history"]["train_loss"][0], "the resumed run must keep epoch 1's history"
    model = load_weights(resnet18(num_classes=2), out / "checkpoint.pt").eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.slow
def test_a_worker_error_ends_as_one_line(ray_session, tmp_path, capsys):
    """Ray logs the failed worker's traceback; the command still ends with the error's one
    line and exit 2, not Ray's TrainingFailedError."""
    code = main(["classifier", "--data", str(tmp_path / "missing.zarr"), "--out",
                 str(tmp_path / "run"), *TINY, "--loader", "torch", "--backend", "ray",
                 "--processes", "1"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("python -m augengine.train.cli classifier: error: ") \
        and last.endswith("missing.zarr: not an augengine store (no zarr.json)"), \
        f"exit {code}, last stderr line {last!r}: expected the worker's error as one line"


# --- a submitted job's runtime env ---------------------------------------------------------------

JOB_DRIVER = textwrap.dedent("""
    import json, os
    import ray
    from augengine import raycluster
    from augengine.train.distributed import ray_runtime_env

    raycluster.connect(runtime_env=ray_runtime_env())

    @ray.remote(num_cpus=0)
    def seen():
        return {name: os.environ.get(name)
                for name in ("AUGENGINE_JOB_VAR", "OMP_NUM_THREADS", "PYTHONPATH")}

    print(json.dumps(ray.get(seen.remote())))
    ray.shutdown()
""")


@pytest.mark.slow
def test_a_submitted_jobs_runtime_env_survives(ray_session, tmp_path):
    """As ``ray job submit --runtime-env`` hands it over: Ray refuses a ``ray.init`` runtime env
    that sets a variable the job sets; augengine's only fills in the rest."""
    job = {"runtime_env": {"env_vars": {"AUGENGINE_JOB_VAR": "kept", "OMP_NUM_THREADS": "3"}}}
    # The embedded Ray listens on loopback only; a second driver keeps 127.0.0.1 only with Ray's
    # "no cluster" switch set (as in tests/test_runner_writers.py).
    port = ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job),
           "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run([sys.executable, "-c", JOB_DRIVER], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"driver exited {done.returncode}: {done.stderr[-2000:]}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["AUGENGINE_JOB_VAR"], seen["OMP_NUM_THREADS"]) == ("kept", "3"), \
        f"workers saw {seen}: the job's variables must win"
    assert str(REPO) in seen["PYTHONPATH"].split(os.pathsep), \
        f"augengine's PYTHONPATH must fill in what the job left unset: {seen['PYTHONPATH']}"
