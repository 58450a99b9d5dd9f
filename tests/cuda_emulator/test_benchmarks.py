"""The GPU sections of the benchmarks run end to end on the CPU emulation at toy sizes, so their
first run on a real GPU measures instead of crashing. The figures printed here mean nothing."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.cuda_emulator import emulated_cupy

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, argv, expected",
    [("bench_bmode_gpu", ["--repeats", "1", "--frames", "2", "--depth", "256", "--lines", "32"],
      ["frames/s", "max grey-level difference"]),
     ("bench_srad", ["--gpu-only", "--repeats", "1", "--batch", "2", "--size", "40",
                     "--iterations", "3", "--copy-mib", "1"],
      ["q0 estimated", "fixed q0", "of device copy"])],
)
def test_gpu_benchmark_runs(capsys, name, argv, expected):
    with emulated_cupy():
        load(name).main(argv)
    out = capsys.readouterr().out
    assert "no CUDA device" not in out
    for text in expected:
        assert text in out, f"{name} printed no {text!r}:\n{out}"
