"""Production job on one device: feed-forward style transfer of the within-class pairs of N
source images, an SRAD post-step, the shard write; images/s, time per stage and, on the CUDA
emulator, the chain's kernel launches and host syncs per output image.

The job is built and run by the runner's own pieces, so the figures follow whatever they do:
``make_plan`` on a BUSI-layout folder of N synthetic speckle images (half benign, half
malignant, each with a lesion mask), ``StyleTransferInputs`` (setup: load, encoder statistics;
``prepare``: style a shard's pairs), ``build_shard`` (the chain; its device->host copy, the
runner's ``_queue_to_host`` and its wait, timed apart) and the actor's writer (``runner.write_checksummed_shard``:
checksums, then ``store.write_shard``) into a temporary store (without zarr: the floor of the
same work, labelled, see ``_bare.py``). Stages are timed shard by shard after
``--warmup`` untimed shards (NVRTC compiles, cuDNN heuristics). On ``cuda`` each stage ends
with a device synchronisation, so queued work is billed to the stage that queued it.

Two chains: the job's ``srad_series`` post-step (10 SRAD iterations: 2 snapshots of 5), and
``jobs/demo.yaml``'s steps on ``--demo-frames`` simulated RF frames (all 36 variants of each),
built shard by shard as the runner builds them (``--demo-shard-size``, default the job's 128).
Counters (``--device emulated`` only; tests/cuda_emulator ``counting``): launches = RawKernel
launches plus CuPy calls on device arrays, syncs = host waits (``get``, ``float()``, device or
event or stream synchronize), h2d = host-to-device copies, each per output image (queued
device-to-host copies are the one stream wait's, not syncs of their own); targets from issue 9:
<= 0.5 launches per image, <= 1 sync per batch (a shard is the chain's batch).

Without ``--checkpoint`` the decoder is randomly initialised in-process (ResNet-50 ``layer3`` by
default, as the runner's default): the figures measure speed, not style-transfer quality.
Quality checks are off unless ``--quality-checks`` (issue 9 item 3 changes their cost).

Usage: ``python benchmarks/bench_production.py --n 800 --size 224 --device cuda --batch-size 256
--out summary.json`` (the issue's target: 325,408 outputs in 60 s on one H100-class GPU);
``--n 4 --size 32 --device emulated --demo-frames 1`` counts on a CPU in about a minute.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this tree's augengine, benchmarks and tests
from benchmarks._bare import hardware, store_or_floor  # noqa: E402

TARGET_IMAGES = 325_408  # the within-class all-pairs set of 800 images (seed 002)
TARGET_SECONDS = 60.0
TARGET_LAUNCHES_PER_IMAGE = 0.5
TARGET_SYNCS_PER_BATCH = 1
SRAD_POST_STEP = {"op": "srad_series", "scale": 1, "scales": 2, "iterations_per_scale": 5,
                  "dynamic_range_db": 50}
STAGES = ("style", "chain", "device_to_host", "write")


def write_sources(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` speckle images with an elliptic brighter lesion and its mask, BUSI layout, classes
    alternating (``n // 2`` benign, the rest malignant)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        label = ("benign", "malignant")[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.1, 0.25)
        lesion = ((yy - cy) ** 2 + ((xx - cx) / 1.5) ** 2) < r**2
        echo = rng.exponential(1.0, (size, size)) * np.where(lesion, 0.5 + (i % 2), 1.0)
        image = np.clip(60 * echo, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / label / f"s{i:04d}.png")
        Image.fromarray((lesion * 255).astype(np.uint8)).save(folder / label / f"s{i:04d}_mask.png")
    return folder


def random_checkpoint(path: Path, arch: str, layer: str) -> Path:
    """A checkpoint ``load_style_net`` accepts, of a randomly initialised decoder (speed only)."""
    import torch

    from augengine.models import ARCHITECTURES
    from augengine.nst.feedforward import StyleNet
    from augengine.nst.losses import RESNET50_LAYERS
    from augengine.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    decoder = StyleNet(ARCHITECTURES[arch](), layer=layer).decoder.state_dict()
    config = {"arch": arch, "layer": layer, "seed": 0, "alpha": 1.0, "beta": 1e4,
              "content_layers": ["layer2"], "style_layers": list(RESNET50_LAYERS), "lrp": False,
              "c": 0.0, "encoder_sha256": None, "classifier_sha256": None}
    save_checkpoint(path, {"decoder": decoder, "optimizer": {}, "epoch": 0, "config": config,
                           "epoch_losses": []}, weights="decoder")
    return path


def _synchronize(device: str) -> None:
    if device == "cuda":
        import cupy
        import torch

        torch.cuda.synchronize()
        cupy.cuda.Device().synchronize()


@contextlib.contextmanager
def _timed_copies(device: str, seconds: dict):
    """Time the runner's device->host copy (``runner._queue_to_host`` and its wait) into
    ``seconds``; on a GPU after a synchronisation, so the chain's queued kernels are not billed
    to the copy."""
    from augengine import runner

    original = runner._queue_to_host

    def copy_back(arrays, extras=()):
        _synchronize(device)
        start = time.perf_counter()
        queued = original(arrays, extras)
        queued.wait()
        seconds["device_to_host"] += time.perf_counter() - start
        return queued

    runner._queue_to_host = copy_back
    try:
        yield
    finally:
        runner._queue_to_host = original


def _counted(device: str):
    """The emulator's counters on ``emulated``; nothing to count elsewhere."""
    if device != "emulated":
        return contextlib.nullcontext(None)
    from tests import cuda_emulator

    return cuda_emulator.counting()


def _per_image(counts, images: int, batches: int) -> dict | None:
    if counts is None:
        return None
    return {
        "launches_per_image": counts.n_launches / images,
        "syncs_per_image": counts.n_syncs / images,
        "syncs_per_batch": counts.n_syncs / batches,
        "h2d_per_image": counts.n_h2d / images,
        "batches": batches,
        "images": images,
        "launches_by_name": dict(counts.launches.most_common()),
        "syncs_by_name": dict(counts.syncs.most_common()),
        "meets_targets": (counts.n_launches / images <= TARGET_LAUNCHES_PER_IMAGE
                          and counts.n_syncs / batches <= TARGET_SYNCS_PER_BATCH),
    }


def production(args, work: Path, chain_device: str) -> dict:
    """Style, chain, copy back and write every shard of the NST + ``srad_series`` job."""
    from augengine import runner, store
    from augengine.config import parse_job
    from augengine.nst.stage import StyleTransferInputs
    from augengine.plan import make_plan

    checkpoint = args.checkpoint or random_checkpoint(work / "random.pt", args.arch, args.layer)
    config = parse_job({
        "name": "production-bench", "seed": 0,
        "sources": [{"reader": "busi", "path": str(write_sources(work / "sources", args.n,
                                                                   args.size))}],
        "nst": {"checkpoint": str(checkpoint), "batch_size": args.batch_size,
                "pairing": "within_class_all", "quality_checks": args.quality_checks},
        "steps": [SRAD_POST_STEP],
        "output": {"path": str(work / "out.zarr"), "size": [args.size, args.size],
                   "shard_size": args.shard_size},
    })
    plan = make_plan(config)
    out = config.output
    if hasattr(store, "create_store"):  # the real store; the floor needs no arrays
        store.create_store(out.path, plan.n_samples, out.size, out.shard_size, plan.has_masks,
                           plan.job_hash(), config.model_dump(mode="json"), plan.inputs())
    seconds = collections.Counter()
    start = time.perf_counter()
    inputs = StyleTransferInputs(plan.refs, config.nst, chain_device, config.seed)
    _synchronize(args.device)
    seconds["setup"] = time.perf_counter() - start
    shards = list(range(plan.n_shards))
    timed = shards[args.warmup:] or shards

    def run_shard(shard: int) -> collections.Counter:
        indices = plan.shard_indices(shard)
        items = [plan.work_item(i) for i in indices]
        lap, copies = collections.Counter(), seconds["device_to_host"]
        clock = time.perf_counter()
        inputs.prepare(items)
        _synchronize(args.device)
        lap["style"] = time.perf_counter() - clock
        clock = time.perf_counter()
        built = runner.build_shard(items, plan.chains, config.seed, out.size, out.shard_size,
                                   chain_device, inputs.load, checksums=False)
        _synchronize(args.device)
        lap["chain"] = time.perf_counter() - clock - (seconds["device_to_host"] - copies)
        if built[4]:
            raise RuntimeError(f"shard {shard}: samples quarantined: {built[4][:2]}")
        clock = time.perf_counter()
        runner.write_checksummed_shard(out.path, indices.start, built[0], built[2], built[1],
                                       built[3])
        lap["write"] = time.perf_counter() - clock
        return lap

    with _timed_copies(args.device, seconds):
        for shard in shards[:args.warmup]:
            run_shard(shard)
        seconds["device_to_host"] = 0.0  # the warm-up's copies are not measured
        with _counted(args.device) as counts:
            for shard in timed:
                seconds.update(run_shard(shard))
    images = sum(len(plan.shard_indices(s)) for s in timed)
    total = sum(seconds[stage] for stage in STAGES)
    return {
        "n_sources": args.n, "pairs": int(len(plan.pairs)), "images": images,
        "shards_timed": len(timed), "shard_size": args.shard_size,
        "batch_size": args.batch_size, "quality_checks": args.quality_checks,
        "decoder": (f"{args.checkpoint}" if args.checkpoint else
                    f"random {args.arch}/{args.layer} (speed, not quality)"),
        "chain": json.dumps([SRAD_POST_STEP]),
        "setup_s": seconds["setup"],
        "stages_s": {stage: seconds[stage] for stage in STAGES},
        "stage_share": {stage: seconds[stage] / total for stage in STAGES},
        "images_per_s": images / total,
        "counters": _per_image(counts, images, len(timed)),
    }


def demo_chain(args, work: Path, chain_device: str) -> dict:
    """``jobs/demo.yaml``'s steps on ``--demo-frames`` simulated frames, in shards of
    ``--demo-shard-size`` (default: the job's own)."""
    import yaml

    from augengine import runner
    from augengine.config import parse_job
    from augengine.plan import make_plan
    from augengine.simulate import simulate_dataset

    simulate_dataset(args.demo_frames, 0, work / "phantoms", seed=11)
    job = yaml.safe_load((ROOT / "jobs" / "demo.yaml").read_text())
    job["sources"] = [{"reader": "oasbud", "path": str(work / "phantoms" / "phantoms.mat")}]
    job["output"].update(path=str(work / "demo.zarr"), size=[args.size, args.size])
    if args.demo_shard_size:
        job["output"]["shard_size"] = args.demo_shard_size
    config = parse_job(job)
    plan = make_plan(config)
    with _counted(args.device) as counts:
        start = time.perf_counter()
        for shard in range(plan.n_shards):
            items = [plan.work_item(i) for i in plan.shard_indices(shard)]
            built = runner.build_shard(items, plan.chains, config.seed,
                                       tuple(config.output.size), config.output.shard_size,
                                       chain_device)
            if built[4]:
                raise RuntimeError(f"demo chain: samples quarantined: {built[4][:2]}")
        _synchronize(args.device)
        seconds = time.perf_counter() - start
    return {"frames": args.demo_frames, "images": plan.n_samples,
            "shard_size": config.output.shard_size, "chain_s": seconds,
            "images_per_s": plan.n_samples / seconds,
            "counters": _per_image(counts, plan.n_samples, plan.n_shards)}


def _report(summary: dict) -> None:
    job = summary["production"]
    print(f"{summary['hardware']}; device {summary['device']}; write: {summary['write']}")
    print(f"decoder: {job['decoder']}; quality checks {'on' if job['quality_checks'] else 'off'}")
    print(f"{job['n_sources']} sources at {summary['size']}x{summary['size']} -> {job['pairs']} "
          f"within-class pairs; {job['images']} images timed over {job['shards_timed']} shards "
          f"(setup {job['setup_s']:.2f} s, not counted)")
    for stage in STAGES:
        print(f"  {stage:15s} {job['stages_s'][stage]:9.3f} s  {job['stage_share'][stage]:6.1%}")
    rate = job["images_per_s"]
    target = TARGET_IMAGES / TARGET_SECONDS
    print(f"  {'overall':15s} {rate:9.1f} images/s = {rate / target:.2%} of the target "
          f"{target:,.0f} images/s (325,408 in 60 s): the set in {TARGET_IMAGES / rate:,.0f} s")
    for name, part in (("NST + srad_series", job), ("demo chain", summary.get("demo"))):
        if part is None:
            continue
        counters = part["counters"]
        if counters is None:
            print(f"{name}: counters only on --device emulated")
            continue
        batch = part["images"] // counters["batches"]
        print(f"{name}: {counters['launches_per_image']:.2f} launches/image (target <= "
              f"{TARGET_LAUNCHES_PER_IMAGE}), {counters['syncs_per_image']:.2f} syncs/image = "
              f"{counters['syncs_per_batch']:.1f} per batch ({counters['batches']} of {batch} "
              f"images on average; target <= "
              f"{TARGET_SYNCS_PER_BATCH}), {counters['h2d_per_image']:.2f} host->device "
              f"copies/image; {'meets' if counters['meets_targets'] else 'misses'} the targets")
        top = list(counters["launches_by_name"].items())[:6]
        print("   most launched: " + ", ".join(f"{k} {v / part['images']:.2f}" for k, v in top))
        print("   syncs: " + ", ".join(f"{k} {v / part['images']:.2f}"
                                       for k, v in counters["syncs_by_name"].items()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="source images (>= 4, half per class)")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--device", choices=("cpu", "cuda", "emulated"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=64, help="style-transfer batch")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=0, help="untimed shards first")
    parser.add_argument("--checkpoint", help="a trained NST checkpoint (default: random weights)")
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet50"))
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--quality-checks", action="store_true")
    parser.add_argument("--demo-frames", type=int, default=0,
                        help="also run jobs/demo.yaml's chain on this many simulated frames")
    parser.add_argument("--demo-shard-size", type=int, default=0,
                        help="shard size of the demo chain's run (default: jobs/demo.yaml's)")
    parser.add_argument("--out", type=Path, help="write the summary here (JSON)")
    args = parser.parse_args(argv)
    write = store_or_floor()
    if args.device == "cuda":
        from augengine.determinism import fix_cublas_workspace

        fix_cublas_workspace()  # as an actor's StyleTransferStage does, before CUDA starts
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise SystemExit("no CUDA device")
    summary = {"hardware": hardware(args.device), "device": args.device, "size": args.size,
               "write": write, "targets": {"launches_per_image": TARGET_LAUNCHES_PER_IMAGE,
                                           "syncs_per_batch": TARGET_SYNCS_PER_BATCH,
                                           "images_per_s": TARGET_IMAGES / TARGET_SECONDS}}
    emulation = contextlib.nullcontext()
    if args.device == "emulated":
        from tests.cuda_emulator import emulated_cupy

        emulation = emulated_cupy()
    chain_device = "cpu" if args.device == "cpu" else "cuda"
    with tempfile.TemporaryDirectory(prefix="bench-production-") as folder, emulation:
        summary["production"] = production(args, Path(folder), chain_device)
        if args.demo_frames:
            summary["demo"] = demo_chain(args, Path(folder), chain_device)
    _report(summary)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
