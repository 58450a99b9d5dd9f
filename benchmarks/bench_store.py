"""Store write throughput: samples/s for whole-shard writes of 224x224 uint8 images and masks.

Baselines, same process and data:

- the zstd floor (issue 9): each image and mask compressed alone with zstd level 3 (the codec
  the store uses), a shard's compressed bytes written to one file per array; what any chunked,
  compressed layout must at least pay;
- one ``.npy`` file per sample (the naive layout a user would otherwise reach for).

Run::

    python benchmarks/bench_store.py [--samples 2048] [--shard-size 256] [--size 224] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from numcodecs import Zstd

from augengine import store


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def bench_store(images: np.ndarray, masks: np.ndarray, shard_size: int, root: Path) -> float:
    path = root / "bench.zarr"
    n, h, w = images.shape
    store.create_store(path, n, (h, w), shard_size, True, "bench", {})
    labels = np.zeros(n, np.int8)
    start = time.perf_counter()
    for begin in range(0, n, shard_size):
        end = begin + shard_size
        store.write_shard(path, begin, images[begin:end], labels[begin:end], masks[begin:end])
    return time.perf_counter() - start


def bench_floor(images: np.ndarray, masks: np.ndarray, shard_size: int, root: Path) -> float:
    folder = root / "floor"
    folder.mkdir()
    codec = Zstd(level=3)
    start = time.perf_counter()
    for begin in range(0, len(images), shard_size):
        for name, data in (("images", images), ("masks", masks)):
            parts = [codec.encode(sample) for sample in data[begin:begin + shard_size]]
            (folder / f"{name}-{begin}").write_bytes(b"".join(parts))
    return time.perf_counter() - start


def bench_npy(images: np.ndarray, masks: np.ndarray, root: Path) -> float:
    folder = root / "npy"
    folder.mkdir()
    start = time.perf_counter()
    for i, (image, mask) in enumerate(zip(images, masks)):
        np.save(folder / f"{i:07d}.npy", image)
        np.save(folder / f"{i:07d}-mask.npy", mask)
    return time.perf_counter() - start


def make_data(samples: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Speckle-like images (Rayleigh grey levels, so zstd sees realistic entropy) and an
    elliptic lesion mask per sample."""
    rng = np.random.default_rng(0)
    images = np.clip(rng.rayleigh(60, (samples, size, size)), 0, 255).astype(np.uint8)
    y, x = np.mgrid[:size, :size] / size
    centres = rng.uniform(0.3, 0.7, (samples, 2, 1, 1))
    radii = rng.uniform(0.1, 0.25, (samples, 2, 1, 1))
    masks = (((y - centres[:, 0]) / radii[:, 0]) ** 2
             + ((x - centres[:, 1]) / radii[:, 1]) ** 2 < 1).astype(np.uint8)
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    images, masks = make_data(args.samples, args.size)
    megabytes = (images.nbytes + masks.nbytes) / 1e6
    rates = {"store": [], "floor": [], "npy": []}
    for _ in range(args.repeat):  # interleaved, so load on a shared machine hits all three
        root = Path(tempfile.mkdtemp(prefix="augengine-bench-"))
        try:
            rates["store"].append(args.samples / bench_store(images, masks, args.shard_size, root))
            rates["floor"].append(args.samples / bench_floor(images, masks, args.shard_size, root))
            rates["npy"].append(args.samples / bench_npy(images, masks, root))
            on_disk = sum(f.stat().st_size for f in (root / "bench.zarr").rglob("*")
                          if f.is_file())
        finally:
            shutil.rmtree(root, ignore_errors=True)
    ratios = [s / f for s, f in zip(rates["store"], rates["floor"])]

    def span(values, fmt="{:,.0f}"):
        low, high = min(values), max(values)
        return fmt.format(low) if fmt.format(low) == fmt.format(high) else \
            f"{fmt.format(low)}-{fmt.format(high)}"

    print(f"hardware: {cpu_name()}, {os.cpu_count()} cores; {args.repeat} runs (ranges)")
    print(f"command: python benchmarks/bench_store.py --samples {args.samples} "
          f"--shard-size {args.shard_size} --size {args.size} --repeat {args.repeat}")
    print("| writer (images + masks) | samples/s | ratio vs zstd floor (same run) |")
    print("|---|---:|---:|")
    print(f"| store.write_shard (Zarr v3 sharded, zstd 3) | {span(rates['store'])} | "
          f"{span(ratios, '{:.2f}')} |")
    print(f"| floor: each sample zstd 3 alone, one file per shard and array | "
          f"{span(rates['floor'])} | 1.00 |")
    print(f"| one .npy per sample and mask | {span(rates['npy'])} | "
          f"{span([n / f for n, f in zip(rates['npy'], rates['floor'])], '{:.2f}')} |")
    print(f"data: {megabytes:.0f} MB raw -> {on_disk / 1e6:.0f} MB in the store")


if __name__ == "__main__":
    main()
