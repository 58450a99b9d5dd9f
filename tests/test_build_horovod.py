""".ci/build-horovod.sh's choice of flavour and the build settings it exports (--print-env, which
stops before downloading anything), against a fake pip NCCL and a fake CUDA toolkit."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "build-horovod.sh"
VENV = sys.prefix  # the venv running the tests: it has torch


def _fake_pip_nccl(site: Path) -> Path:
    """nvidia-nccl-cu12's layout: namespace packages (no __init__.py), only libnccl.so.2."""
    nccl = site / "nvidia" / "nccl"
    (nccl / "include").mkdir(parents=True)
    (nccl / "lib").mkdir()
    (nccl / "include" / "nccl.h").write_text("#define NCCL_MAJOR 2\n")
    (nccl / "lib" / "libnccl.so.2").write_bytes(b"")
    return nccl


def _fake_program(folder: Path, name: str, output: str = "", status: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    program.chmod(0o755)
    return program


def _run(*options, **environment) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")} | environment
    return subprocess.run(["bash", str(SCRIPT), *options, "--print-env", VENV], env=env,
                          capture_output=True, text=True, timeout=120)


def _settings(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_gpu_build_finds_the_pip_nccl_namespace_package_and_links_libnccl_so(tmp_path):
    nccl = _fake_pip_nccl(tmp_path / "site")
    cuda = _fake_program(tmp_path / "cuda" / "bin", "nvcc").parents[1]
    got = _settings(_run("--gpu=nccl", PYTHONPATH=str(tmp_path / "site"), CUDA_HOME=str(cuda)))
    wanted = {"NCCL_SOURCE": str(nccl), "NCCL_LIBRARY": str(nccl / "lib" / "libnccl.so.2"),
              "HOROVOD_NCCL_LINK": "SHARED", "HOROVOD_GPU_OPERATIONS": "NCCL",
              "HOROVOD_CUDA_HOME": str(cuda), "HOROVOD_BUILD_CUDA_CC_LIST": "80,90",
              "FLAVOUR": "nccl-sm80-90"}
    wrong = {k: (got.get(k), v) for k, v in wanted.items() if got.get(k) != v}
    assert not wrong, f"(exported, expected): {wrong}"
    assert got["HOROVOD_NCCL_HOME"] != str(nccl), "libnccl.so must be linked outside site-packages"


def test_gpu_build_without_nccl_fails_loudly(tmp_path):
    if importlib.util.find_spec("nvidia") and importlib.util.find_spec("nvidia.nccl"):
        pytest.skip("this venv has a real pip NCCL")
    cuda = _fake_program(tmp_path / "cuda" / "bin", "nvcc").parents[1]
    result = _run("--gpu=nccl", CUDA_HOME=str(cuda))
    assert result.returncode == 1 and "no NCCL was found" in result.stderr, \
        f"expected exit 1 naming the missing NCCL, got {result.returncode}: {result.stderr}"


def test_gpu_build_with_a_cuda_home_without_nvcc_fails_loudly(tmp_path):
    _fake_pip_nccl(tmp_path / "site")
    result = _run("--gpu=nccl", PYTHONPATH=str(tmp_path / "site"),
                  HOROVOD_CUDA_HOME=str(tmp_path / "no-cuda"))
    assert result.returncode == 1 and "no CUDA toolkit (bin/nvcc)" in result.stderr, \
        f"expected exit 1 naming the missing nvcc, got {result.returncode}: {result.stderr}"


@pytest.mark.parametrize("options", [("--gpu=none",), ()], ids=["none", "auto-without-gpu"])
def test_cpu_build_keeps_its_settings_and_cache_key(options, tmp_path):
    # nvidia-smi as on a machine without a GPU (or without a driver): it fails.
    _fake_program(tmp_path / "bin", "nvidia-smi", "NVIDIA-SMI has failed", status=9)
    result = _run(*options, PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    got = _settings(result)
    horovod = {k: v for k, v in got.items() if k.startswith("HOROVOD_")}
    assert horovod == {"HOROVOD_WITH_PYTORCH": "1", "HOROVOD_WITHOUT_TENSORFLOW": "1",
                       "HOROVOD_WITHOUT_MXNET": "1", "HOROVOD_WITH_GLOO": "1",
                       "HOROVOD_WITHOUT_MPI": "1", "HOROVOD_CPU_OPERATIONS": "gloo"}, horovod
    key = f"horovod-0.28.1-torch{torch.__version__}-cpu-gloo"
    assert Path(got["WHEEL_DIR"]).name == key, f"cache folder {got['WHEEL_DIR']}, expected {key}"
    if not options:
        assert "--gpu=nccl" in result.stderr, f"auto must say it builds CPU only: {result.stderr}"


def test_auto_builds_for_the_gpu_nvidia_smi_lists(tmp_path):
    _fake_pip_nccl(tmp_path / "site")
    cuda = _fake_program(tmp_path / "cuda" / "bin", "nvcc").parents[1]
    _fake_program(tmp_path / "bin", "nvidia-smi", "GPU 0: NVIDIA H100 80GB HBM3")
    got = _settings(_run(PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin", CUDA_HOME=str(cuda),
                         PYTHONPATH=str(tmp_path / "site")))
    assert got["FLAVOUR"] == "nccl-sm80-90", f"flavour {got['FLAVOUR']} with a GPU listed"


def test_unknown_gpu_choice_is_refused():
    result = _run("--gpu=rocm")
    assert result.returncode == 2 and "--gpu must be auto, nccl or none, got 'rocm'" in \
        result.stderr, f"exit {result.returncode}: {result.stderr}"
