"""B-mode on the GPU: augengine's fused pipeline against cupyx.scipy.signal.hilbert + CuPy ops.

Batch of 256 int16 RF frames of 2048 samples x 256 lines (depth-major, time on axis 1 of the
array), 50 dB dynamic range. Both produce uint8 frames; figures are frames per second, best of
``--repeats`` timed runs after a warm-up (kernel compilation, cuFFT plans), measured with CUDA
events. Without a CUDA device it prints a note and exits 0.

Usage: ``python benchmarks/bench_bmode_gpu.py [--repeats 5] [--frames 256 --depth 2048 --lines 256]``
(the defaults are the issue's figure; smaller sizes are for smoke runs).
"""
from __future__ import annotations

import argparse
import sys

from augengine.ops.reconstruction import bmode

DYNAMIC_RANGE_DB = 50.0


def _cuda_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver or no device
        return False


def baseline_bmode(rf, dynamic_range_db: float):
    """The straightforward CuPy version: SciPy-style Hilbert transform, then elementwise ops."""
    import cupy
    import cupyx.scipy.signal

    env = cupy.abs(cupyx.scipy.signal.hilbert(rf.astype(cupy.float32), axis=-2))
    a_max = env.max(axis=(-2, -1), keepdims=True)
    db = cupy.clip(20.0 * cupy.log10(env / a_max), -dynamic_range_db, 0.0)
    return cupy.rint((db + dynamic_range_db) * (255.0 / dynamic_range_db)).astype(cupy.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2048)
    parser.add_argument("--lines", type=int, default=256)
    args = parser.parse_args(argv)
    frames, depth, lines = args.frames, args.depth, args.lines
    if not _cuda_device():
        print("no CUDA device: GPU figures not measured")
        return 0
    import cupy

    rng = cupy.random.default_rng(0)
    rf = (rng.standard_normal((frames, depth, lines), dtype=cupy.float32) * 3000).astype(cupy.int16)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()

    def frames_per_second(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return frames / best

    ours = frames_per_second(lambda: bmode(rf, DYNAMIC_RANGE_DB, axis=0))
    baseline = frames_per_second(lambda: baseline_bmode(rf, DYNAMIC_RANGE_DB))
    agree = cupy.abs(
        bmode(rf, DYNAMIC_RANGE_DB, axis=0).astype(cupy.int16)
        - baseline_bmode(rf, DYNAMIC_RANGE_DB).astype(cupy.int16)
    ).max()
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU {name}, {frames} frames {depth}x{lines} int16, {DYNAMIC_RANGE_DB:g} dB:")
    print(f"  augengine bmode (fused kernels + cuFFT)  {ours:9.0f} frames/s")
    print(f"  cupyx hilbert + CuPy elementwise ops     {baseline:9.0f} frames/s")
    print(f"  speed-up x{ours / baseline:.2f}; max grey-level difference {int(agree)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
