"""build_shard on the CPU, batched chains vs the per-sample path, in one process.

Two jobs: the demo job (jobs/demo.yaml's steps on simulated phantoms: its per-input head of
bmode, roi_crop, scan_convert and resize runs per input either way, only the last step is
batched) and a post-processing job shaped like the NST example (224 x 224 B-mode images, as
style transfer hands them over, read from a store, then identity | srad(10) | rotate |
translate: the whole chain is a batched tail). The per-sample path is the test oracle of
tests/test_batched_chains.py (``apply_chain`` one sample at a time). Best of ``--repeats``, the
two paths alternating, in CPU seconds of this process (``time.process_time``: on a shared
machine wall time mostly measures the neighbours). On a CPU the NumPy batch forms do about the
work of the per-sample ops (augengine.pipeline.BATCHED says which go image by image); the
batching is for the GPU's launches.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_chains.py --phantoms 8 \
        --images 128 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from augengine import store
from augengine.config import parse_job
from augengine.ops import log_compress
from augengine.plan import make_plan
from augengine.runner import _load_input, build_shard
from augengine.simulate import simulate_dataset
from tests.test_batched_chains import per_sample_shard

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def shards(config):
    plan = make_plan(config)
    return plan, [[plan.work_item(i) for i in plan.shard_indices(s)] for s in range(plan.n_shards)]


def timed(make, plan, items_per_shard, config, load_input) -> float:
    out = config.output
    started = time.process_time()
    for items in items_per_shard:
        make(items, plan.chains, config.seed, tuple(out.size), out.shard_size, "cpu", load_input)
    return time.process_time() - started


def compare(name, config, load_input, repeats):
    plan, items = shards(config)
    best = {"per-sample": np.inf, "batched": np.inf}
    for _ in range(repeats):
        for label, make in (("per-sample", per_sample_shard), ("batched", build_shard)):
            best[label] = min(best[label], timed(make, plan, items, config, load_input))
    n, alone, batched = plan.n_samples, best["per-sample"], best["batched"]
    print(f"{name}: {n} samples in {plan.n_shards} shards; per-sample {alone:.2f} CPU s "
          f"({n / alone:.0f} img/s), batched {batched:.2f} CPU s ({n / batched:.0f} img/s), "
          f"speed-up x{alone / batched:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=8, help="simulated RF frames (demo job)")
    parser.add_argument("--images", type=int, default=64, help="224x224 images (post job)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulate_dataset(args.phantoms // 2, args.phantoms - args.phantoms // 2, Path(tmp), seed=1)
        job = yaml.safe_load((JOBS / "demo.yaml").read_text())
        job["sources"] = [{"reader": "oasbud", "path": str(Path(tmp) / "phantoms.mat")}]
        job["output"]["path"] = str(Path(tmp) / "demo.zarr")
        compare("demo job", parse_job(job), _load_input, args.repeats)

        job["steps"] = [{"one_of": [
            {"op": "identity"}, {"op": "srad", "iterations": 10},
            {"op": "rotate", "angle_deg": {"uniform": [-15, 15]}},
            {"op": "translate", "dy_px": {"uniform": [-16, 16]}, "dx_px": {"uniform": [-16, 16]}}
        ]}]
        job["sources"] = [{"reader": "store", "path": speckle_store(Path(tmp) / "in.zarr",
                                                                   args.images)}]
        job["output"]["path"] = str(Path(tmp) / "post.zarr")
        compare("post-processing job (224x224: identity | srad 10 | rotate | translate)",
                parse_job(job), _load_input, args.repeats)


def speckle_store(path: Path, count: int) -> str:
    """A finished store of ``count`` 224x224 speckle images made at 50 dB, standing in for
    styled images."""
    rng = np.random.default_rng(0)
    images = np.stack([log_compress(np.sqrt(rng.exponential(1.0, (224, 224))), 50)
                       for _ in range(count)])
    labels = np.arange(count, dtype=np.int8) % 2
    store.create_store(path, count, (224, 224), count, False, "speckle", {"name": "speckle"})
    store.write_shard(path, 0, images, labels, None)
    made = json.dumps([{"op": "bmode", "dynamic_range_db": 50}])
    store.finalize(path, [
        {"index": i, "sample_id": f"s{i}:0", "input_id": f"s{i}", "source_id": f"s{i}",
         "source_path": "speckle", "reader": "bench", "label": int(labels[i]), "variant": 0,
         "chain": "bmode(50)", "ops": made, "seed": 0, "shard": 0, "has_mask": False,
         "sha256": store.image_sha256(images[i])} for i in range(count)], [], count)
    return str(path)


if __name__ == "__main__":
    main()
