"""Peak memory of ``augengine run`` on a large job: the driver (``/usr/bin/time -v``) and every
process of its embedded Ray (actors included), sampled with psutil.

The job is demo-like at a small per-image cost: ``--images`` BUSI-style PNGs (224 x 224, each
with a lesion mask) x 40 variants (20 rotation angles x 2 flips), ``--images 500`` giving 20,000
outputs in shards of 128. Run::

    python benchmarks/bench_run_memory.py [--images 500]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image


def make_inputs(folder: Path, n_images: int, size: int = 224) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size] / size
    for i in range(n_images):
        label = ("benign", "malignant")[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        image = np.clip(rng.rayleigh(60, (size, size)), 0, 255).astype(np.uint8)
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        mask = (((y - cy) ** 2 + (x - cx) ** 2) < r * r).astype(np.uint8) * 255
        Image.fromarray(image).save(folder / label / f"{label} ({i}).png")
        Image.fromarray(mask).save(folder / label / f"{label} ({i})_mask.png")


def job(inputs: Path, out: Path) -> dict:
    return {"name": "rss", "seed": 1, "sources": [{"reader": "busi", "path": str(inputs)}],
            "steps": [{"op": "rotate", "sweep": {"angle_deg": list(range(-10, 10))}},
                      {"op": "flip", "sweep": {"axis": ["horizontal", "vertical"]}}],
            "output": {"path": str(out), "size": [224, 224], "shard_size": 128}}


def sample_tree(root: psutil.Process, peaks: dict, cpu: dict, stop: threading.Event) -> None:
    """Every 0.2 s: the RSS of each process under ``root`` (peak per process, by role) and of
    all of them together, and each actor's CPU seconds so far (on a loaded machine these say
    more than wall time)."""
    while not stop.is_set():
        total = 0
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
                name = " ".join(process.cmdline())[:200]
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            role = ("actor" if "ShardWorker" in name else "driver" if "augengine run" in name
                    else "ray")
            peaks[role] = max(peaks.get(role, 0), rss)
            if role == "actor":
                cpu[process.pid] = times.user + times.system
        peaks["tree"] = max(peaks.get("tree", 0), total)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    # A folder of its own: the inputs and the store it makes are removed at the end, and
    # nothing else is.
    work = Path(tempfile.mkdtemp(prefix="augengine-rss-"))
    try:
        measure(work, args.images)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, images: int) -> None:
    """Run the job in ``work`` under ``time -v`` and print the peaks."""
    make_inputs(work / "busi", images)
    (work / "job.yaml").write_text(yaml.safe_dump(job(work / "busi", work / "out.zarr")))
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "augengine", "run", "--quiet",
               str(work / "job.yaml")]
    started = time.perf_counter()
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    peaks, cpu, stop = {}, {}, threading.Event()
    sampler = threading.Thread(target=sample_tree,
                               args=(psutil.Process(run.pid), peaks, cpu, stop))
    sampler.start()
    _, err = run.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    driver = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) * 1024
    if run.returncode:
        sys.exit(f"run failed ({run.returncode}): {err[-2000:]}")
    print(f"command: python benchmarks/bench_run_memory.py --images {images}")
    print(f"{images * 40} images in {seconds:.0f} s; actors' CPU: {sum(cpu.values()):.0f} s")
    print(f"driver max RSS (time -v): {driver / 2**20:,.0f} MiB")
    for role in ("driver", "actor", "ray", "tree"):
        what = {"driver": "driver max RSS (psutil)", "actor": "largest actor (ShardWorker)",
                "ray": "largest other Ray process",
                "tree": "all processes together (peak of the sum)"}[role]
        print(f"{what}: {peaks.get(role, 0) / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
