"""SRAD benchmark: CPU per-iteration time against the ``srad`` PyPI package, GPU bandwidth.

CPU: one 512x512 float32 speckle image. Per-iteration time is the slope between two iteration
counts, ``(T(n2) - T(n1)) / (n2 - n1)`` with each ``T`` the best of ``--repeats`` runs, which
cancels set-up costs (the ``srad`` package also copies its result pixel by pixel in Python at the
end). Ours and the package are interleaved, so both see the same machine load. Two modes of
ours: the default (q0 re-estimated over the whole image every iteration) and fixed q0 with
exponential decay (the package's own mode).

GPU (only where CuPy sees a device): batch 64x512x512 float32, 100 iterations, effective
bandwidth at 8 bytes/pixel/iteration (one read and one write of J) as a fraction of a
device-to-device copy's bandwidth measured in the same run.

Usage: ``python benchmarks/bench_srad.py [--repeats 5] [--gpu-only] [--batch 64 --size 512
--iterations 100 --copy-mib 1024]`` (the defaults are the issue's figure; smaller GPU sizes are
for smoke runs).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from augengine.ops.despeckle import srad


def _timed(run, iterations: int) -> float:
    start = time.perf_counter()
    run(iterations)
    return time.perf_counter() - start


def bench_cpu(repeats: int) -> None:
    import srad as srad_package  # PyPI srad 0.1.1 (test extra)

    rng = np.random.default_rng(0)
    image = (100.0 * rng.exponential(1.0, (512, 512)) + 1.0).astype(np.float32)
    runs = {
        "srad package 0.1.1": lambda n: srad_package.SRAD(image, n, 0.05, 1.0),
        "ours, q0 estimated (default)": lambda n: srad(image, n),
        "ours, fixed q0 + decay": lambda n: srad(image, n, q0=1.0, rho=1.0),
    }
    counts = (5, 45)
    best = {(name, n): float("inf") for name in runs for n in counts}
    for _ in range(repeats):  # interleaved, so every method sees the same machine load
        for name, run in runs.items():
            for n in counts:
                best[name, n] = min(best[name, n], _timed(run, n))
    per_iteration = {
        name: (best[name, counts[1]] - best[name, counts[0]]) / (counts[1] - counts[0])
        for name in runs
    }
    reference = per_iteration["srad package 0.1.1"]
    print(f"CPU, 512x512 float32, per iteration (slope {counts[0]}->{counts[1]} iterations, "
          f"best of {repeats}):")
    for name, seconds in per_iteration.items():
        print(f"  {name:30s} {seconds * 1e3:7.2f} ms   speed-up x{reference / seconds:.1f}")


def bench_gpu(n: int = 64, size: int = 512, iterations: int = 100, copy_mib: int = 1024) -> None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() == 0:
            raise RuntimeError
    except Exception:
        print("no CUDA device: GPU figures not measured")
        return

    def timed(fn, repeats=3):
        fn()  # warm-up: compilation, plans, allocations
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        best = float("inf")
        for _ in range(repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return best

    rng = cupy.random.default_rng(0)
    # CuPy's Generator.exponential has no dtype (it draws float64): cast afterwards.
    batch = rng.exponential(1.0, (n, size, size)).astype(cupy.float32) + 0.01
    pixels = batch.size

    big = cupy.empty(copy_mib << 18, dtype=cupy.float32)
    copy_target = cupy.empty_like(big)
    copy_seconds = timed(lambda: cupy.copyto(copy_target, big))
    copy_bandwidth = 2 * big.nbytes / copy_seconds
    del big, copy_target

    for label, options in (("q0 estimated", {}), ("fixed q0", {"q0": 1.0})):
        seconds = timed(lambda: srad(batch, iterations, **options))
        bandwidth = 8.0 * pixels * iterations / seconds
        print(
            f"GPU {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, "
            f"{n}x{size}x{size} float32, {iterations} iterations, {label}: {seconds * 1e3:.1f} ms, "
            f"{seconds / iterations * 1e6:.0f} us/iteration, "
            f"effective {bandwidth / 1e9:.0f} GB/s = "
            f"{bandwidth / copy_bandwidth:.0%} of device copy ({copy_bandwidth / 1e9:.0f} GB/s)"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU comparison")
    parser.add_argument("--batch", type=int, default=64, help="GPU: images per batch")
    parser.add_argument("--size", type=int, default=512, help="GPU: image height and width")
    parser.add_argument("--iterations", type=int, default=100, help="GPU: SRAD iterations")
    parser.add_argument("--copy-mib", type=int, default=1024,
                        help="GPU: size of the device-to-device copy that gives the bandwidth")
    args = parser.parse_args(argv)
    if not args.gpu_only:
        bench_cpu(args.repeats)
    bench_gpu(args.batch, args.size, args.iterations, args.copy_mib)


if __name__ == "__main__":
    main()
