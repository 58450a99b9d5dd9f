"""Simulator throughput: frames per second for single frames and for a demo-sized dataset.

Run from the repository root: ``python benchmarks/bench_simulate.py [n_frames]``.
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np

from augengine.simulate import AcquisitionParams, simulate_dataset, simulate_frame


def main(n_frames: int = 20) -> None:
    params = AcquisitionParams()
    simulate_frame(0, np.random.default_rng(0), params)  # imports, FFT plans
    times = []
    for i in range(n_frames):
        start = time.perf_counter()
        simulate_frame(i % 2, np.random.default_rng(i), params)
        times.append(time.perf_counter() - start)
    times = np.array(times)
    print(f"frame {params.n_samples}x{params.n_lines}: median {np.median(times) * 1e3:.0f} ms, "
          f"max {times.max() * 1e3:.0f} ms, {1 / np.median(times):.1f} frames/s")
    with tempfile.TemporaryDirectory() as out:
        summary = simulate_dataset(24, 24, out, seed=7, params=params)
    print(f"simulate_dataset(24, 24): {summary['seconds']:.1f} s, "
          f"{summary['frames_per_s']:.1f} frames/s (including .mat and .npz writing)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
