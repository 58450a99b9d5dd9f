"""Training-loader throughput: the DALI loader vs the PyTorch DataLoader baseline, images/s.

Same process, same store (written with ``augengine.store``), same reading order and the same
augmentation (flips, rot90, +-10 degrees, zoom 0.9-1.1, shift +-0.1 in one affine warp, then
normalisation to 3 x S x S float32), on the CPU. Each loader runs ``--epochs`` epochs; the first
includes worker start-up and is reported apart, the rest are averaged. The machines are shared,
so CPU seconds of the whole process tree are reported beside wall-clock rates. Run::

    python benchmarks/bench_loader.py [--samples 4096] [--size 224] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from augengine import store
from augengine.train.loader import make_dali_loader, make_torch_loader


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def write_store(path: Path, samples: int, size: int, shard_size: int) -> None:
    """Speckle-like images (Rayleigh grey levels) so zstd and the reads see realistic entropy."""
    rng = np.random.default_rng(0)
    store.create_store(path, samples, (size, size), shard_size, False, "bench", {"name": "bench"})
    rows = []
    for start in range(0, samples, shard_size):
        stop = min(start + shard_size, samples)
        images = np.clip(rng.rayleigh(60, (stop - start, size, size)), 0, 255).astype(np.uint8)
        labels = (np.arange(start, stop) % 2).astype(np.int8)
        store.write_shard(path, start, images, labels, None)
        rows += [{"index": i, "sample_id": f"s{i}:0", "input_id": f"s{i}",
                  "source_id": f"s{i}", "source_path": "", "reader": "bench",
                  "label": int(labels[i - start]), "variant": 0, "chain": "identity",
                  "ops": json.dumps([{"op": "identity"}]), "seed": 0, "shard": i // shard_size,
                  "has_mask": False, "sha256": store.image_sha256(images[i - start])}
                 for i in range(start, stop)]
    store.finalize(path, rows, [], samples)


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of a live process (all threads) and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime..cstime


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used by this process tree: the process, its live and its reaped children.

    Wall-clock rates on a shared machine depend on what else runs; CPU seconds per image do not
    (much), so both are reported.
    """
    pid = pid or os.getpid()
    try:
        total = _proc_cpu_seconds(pid)
        children = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            children.update(int(c) for c in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):  # the process ended meanwhile
        return 0.0
    return total + sum(tree_cpu_seconds(child) for child in children)


def time_epochs(loader, epochs: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) per epoch; every batch is touched so lazy copies are paid."""
    times = []
    for _ in range(epochs):
        start, cpu_start = time.perf_counter(), tree_cpu_seconds()
        for batch in loader:
            batch["images"].sum()
        times.append((time.perf_counter() - start, tree_cpu_seconds() - cpu_start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224, help="stored and output side, pixels")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="DALI CPU threads")
    parser.add_argument("--dali-workers", type=int, default=1, help="DALI py_num_workers")
    parser.add_argument("--torch-workers", type=int, default=2, help="DataLoader num_workers")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="augengine-bench-loader-"))
    try:
        path = root / "bench.zarr"
        write_store(path, args.samples, args.size, args.shard_size)
        common = {"batch_size": args.batch_size, "seed": 0, "output_size": args.size}
        loaders = {
            f"DALI (CPU, {args.threads} threads, {args.dali_workers} reader process)":
                lambda train: make_dali_loader(path, train=train, num_threads=args.threads,
                                               py_num_workers=args.dali_workers, **common),
            f"PyTorch DataLoader ({args.torch_workers} workers)":
                lambda train: make_torch_loader(path, train=train,
                                                num_workers=args.torch_workers, **common),
        }
        rows = []
        for train in (True, False):
            for name, build in loaders.items():
                start = time.perf_counter()
                loader = build(train)
                setup = time.perf_counter() - start
                times = np.array(time_epochs(loader, args.epochs))
                wall, cpu = times[1:].mean(axis=0) if len(times) > 1 else times[0]
                rows.append((name, "train (augmented)" if train else "eval (read + normalise)",
                             setup, args.samples / times[0, 0], args.samples / wall,
                             args.samples / cpu))
                del loader
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"hardware: {cpu_name()}, {os.cpu_count()} cores, no GPU used; 1-min load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share "
          "the cores)")
    print(f"command: python benchmarks/bench_loader.py --samples {args.samples} --size {args.size} "
          f"--shard-size {args.shard_size} --batch-size {args.batch_size} --epochs {args.epochs} "
          f"--threads {args.threads} --dali-workers {args.dali_workers} "
          f"--torch-workers {args.torch_workers}")
    print("| loader | mode | setup s | epoch 1 img/s | later epochs img/s | img per CPU-s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, mode, setup, first, steady, per_cpu in rows:
        print(f"| {name} | {mode} | {setup:.1f} | {first:,.0f} | {steady:,.0f} | "
              f"{per_cpu:,.0f} |")
    by_mode = {}
    for _, mode, _, _, steady, per_cpu in rows:
        by_mode.setdefault(mode, []).append((steady, per_cpu))
    for mode, ((dali, dali_cpu), (base, base_cpu)) in by_mode.items():
        print(f"{mode}: DALI / PyTorch = {dali / base:.2f}x img/s, "
              f"{dali_cpu / base_cpu:.2f}x img per CPU-s")


if __name__ == "__main__":
    main()
