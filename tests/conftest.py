"""Shared fixtures: backends to parametrize over, and a GPU marker that skips cleanly."""
from __future__ import annotations

import os

import numpy as np
import pytest


def require_dali() -> None:
    """Fail (not skip) when DALI is missing, unless AUGENGINE_SKIP_DALI=1 asks to skip."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        if os.environ.get("AUGENGINE_SKIP_DALI") == "1":
            pytest.skip("nvidia-dali-cuda120 is not installed (AUGENGINE_SKIP_DALI=1)")
        pytest.fail("nvidia-dali-cuda120 is not installed: pip install nvidia-dali-cuda120, or "
                    "set AUGENGINE_SKIP_DALI=1 to skip the DALI tests")


def require_horovod() -> None:
    """Fail (not skip) when Horovod is missing, unless AUGENGINE_SKIP_HOROVOD=1 asks to skip."""
    try:
        import horovod.torch  # noqa: F401
    except ImportError as error:
        if os.environ.get("AUGENGINE_SKIP_HOROVOD") == "1":
            pytest.skip(f"horovod not importable ({error}) and AUGENGINE_SKIP_HOROVOD=1")
        pytest.fail(f"horovod.torch cannot be imported ({error}): build it with "
                    ".ci/build-horovod.sh, or set AUGENGINE_SKIP_HOROVOD=1 to skip")


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, or no device
        return False


CUDA = _cuda_available()
requires_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (none found)")

#: Array modules for ``@pytest.mark.parametrize("xp", BACKENDS, indirect=True)``: NumPy, CuPy on a
#: GPU (skipped without one) and CuPy emulated on the CPU (tests/cuda_emulator, runs everywhere).
BACKENDS = ["numpy", pytest.param("cupy", marks=[requires_gpu, pytest.mark.gpu]), "emulated"]


@pytest.fixture
def xp(request):
    """The array module named by the ``BACKENDS`` parameter."""
    if request.param == "numpy":
        yield np
    elif request.param == "cupy":
        import cupy

        yield cupy
    else:
        from tests.cuda_emulator import emulated_cupy

        with emulated_cupy() as cupy:
            yield cupy


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one thread is fastest and avoids OpenMP contention on a busy
    2-core machine (measured 0.02 s vs 1.5 s per ResNet-18 forward with 2 threads under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session", autouse=True)
def ray_auth_token(tmp_path_factory):
    """One Ray token for every Ray the tests start, in-process or not, kept in a temporary file:
    without one, Ray would write ``~/.ray/auth_token`` into the real home folder."""
    import secrets

    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield token


@pytest.fixture(scope="session")
def ray_session(ray_auth_token):
    """One embedded Ray per pytest run (starting one costs seconds and ~500 MB), started the way
    ``augengine run`` starts it."""
    import shutil
    import tempfile

    import ray

    from augengine import raycluster

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    raycluster.connect(num_cpus=2, object_store_memory=100 * 1024**2, _temp_dir=temp_dir)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """A few simulated RF frames in the OASBUD layout (2 benign + 2 malignant)."""
    from augengine.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("phantoms")
    simulate_dataset(2, 2, out, seed=11)
    return out
