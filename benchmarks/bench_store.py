"""Store write throughput: samples/s and MB/s for whole-shard writes of 224x224 uint8 images.

Baseline, same process and data: the same bytes written as one ``.npy`` file per sample (the
naive layout a user would otherwise reach for). Run::

    python benchmarks/bench_store.py [--samples 2048] [--shard-size 256] [--size 224]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from augengine import store


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def bench_store(images: np.ndarray, shard_size: int, root: Path) -> float:
    path = root / "bench.zarr"
    n, h, w = images.shape
    store.create_store(path, n, (h, w), shard_size, False, "bench", {})
    labels = np.zeros(n, np.int8)
    start = time.perf_counter()
    for begin in range(0, n, shard_size):
        store.write_shard(path, begin, images[begin:begin + shard_size],
                          labels[begin:begin + shard_size], None)
    return time.perf_counter() - start


def bench_npy(images: np.ndarray, root: Path) -> float:
    folder = root / "npy"
    folder.mkdir()
    start = time.perf_counter()
    for i, image in enumerate(images):
        np.save(folder / f"{i:07d}.npy", image)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    # Speckle-like content (Rayleigh grey levels), so zstd sees realistic entropy.
    rng = np.random.default_rng(0)
    images = np.clip(rng.rayleigh(60, (args.samples, args.size, args.size)), 0, 255).astype(np.uint8)
    megabytes = images.nbytes / 1e6
    root = Path(tempfile.mkdtemp(prefix="augengine-bench-"))
    try:
        t_store = bench_store(images, args.shard_size, root)
        t_npy = bench_npy(images, root)
        on_disk = sum(f.stat().st_size for f in (root / "bench.zarr").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"hardware: {cpu_name()}, {__import__('os').cpu_count()} cores")
    print(f"command: python benchmarks/bench_store.py --samples {args.samples} "
          f"--shard-size {args.shard_size} --size {args.size}")
    print("| writer | samples/s | MB/s (raw) | ratio vs .npy per sample |")
    print("|---|---:|---:|---:|")
    print(f"| zarr v3 sharded, zstd (store.write_shard) | {args.samples / t_store:,.0f} | "
          f"{megabytes / t_store:,.0f} | {t_npy / t_store:.2f}x |")
    print(f"| baseline: one .npy per sample | {args.samples / t_npy:,.0f} | "
          f"{megabytes / t_npy:,.0f} | 1.00x |")
    print(f"compression: {megabytes:.0f} MB raw -> {on_disk / 1e6:.0f} MB on disk")


if __name__ == "__main__":
    main()
