"""Style-transfer benchmark: feed-forward generation images/s and iterative NST iterations/s.

Both on the paper's feature network, ResNet-50 (randomly initialised: speed does not depend on
the weights), at 224 x 224 grey images.

* Feed-forward: :func:`augengine.nst.generate.generate` with a ``StyleNet`` on ``layer3``, all
  within-class pairs of ``--images`` images of one class (``--images``^2 pairs), end to end
  (each image encoded once, then AdaIN + decoder per pair, uint8 out). Rate = pairs / seconds,
  best of ``--repeats``, after a warm-up run.
* Iterative: :func:`augengine.nst.iterative.stylize` with the default ``StyleTransferLoss``
  (content on layer2, style on all five stages), Adam, ``--batch`` pairs per call. Rate =
  optimiser iterations per second, from the median time between consecutive steps (excludes
  the set-up and first-step kernel selection, robust to load spikes on a shared machine).

GPU section (only with CUDA): the same with bf16 autocast and channels-last, larger batches;
otherwise it prints that GPU figures are not measured.

Usage: ``python benchmarks/bench_nst.py [--images 4] [--batch 1] [--iterations 8] [--repeats 2]
[--threads N]``
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from augengine.models import resnet50
from augengine.nst import StyleNet, StyleTransferLoss, generate, stylize

SIZE = 224
PAPER_PAIRS = 325_408  # 348^2 + 452^2 (seed 002)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generation_rate(device, n_images, batch_size, repeats, **options) -> float:
    torch.manual_seed(0)
    net = StyleNet(resnet50(), layer="layer3").to(device)
    images = np.random.default_rng(0).integers(0, 256, (n_images, SIZE, SIZE), dtype=np.uint8)
    pairs = np.stack(np.meshgrid(np.arange(n_images), np.arange(n_images)), -1).reshape(-1, 2)

    def run():
        for _ in generate(net, images, pairs, batch_size=batch_size, device=device, **options):
            pass

    run()  # warm-up: kernel selection, allocator
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return len(pairs) / best


def _iteration_rate(device, batch, iterations) -> float:
    torch.manual_seed(0)
    network = resnet50().eval().to(device)
    loss = StyleTransferLoss(beta=1e3)
    content = torch.rand(batch, 1, SIZE, SIZE, device=device)
    style = torch.rand_like(content)
    stamps = []

    def stamp(step, images, losses):
        _sync(device)
        stamps.append(time.perf_counter())

    stylize(content, style, loss, network, iterations=iterations, callback=stamp)
    # Median time between consecutive steps: excludes set-up and the first step's kernel
    # selection, and shrugs off load spikes from other processes.
    return 1.0 / float(np.median(np.diff(stamps[1:])))


def bench_cpu(args) -> None:
    cpu = torch.device("cpu")
    print(f"CPU ({torch.get_num_threads()} threads), ResNet-50, {SIZE} x {SIZE} grey:")
    rate = _generation_rate(cpu, args.images, batch_size=8, repeats=args.repeats)
    print(f"  feed-forward generation (layer3, {args.images ** 2} pairs): {rate:8.2f} images/s"
          f"  -> {PAPER_PAIRS:,} pairs in {PAPER_PAIRS / rate / 3600:.1f} h")
    rate = _iteration_rate(cpu, args.batch, args.iterations)
    print(f"  iterative NST (batch {args.batch}, median of {args.iterations - 2} steps): "
          f"{rate:8.3f} iterations/s -> one 1000-iteration batch in {1000 / rate:.0f} s")


def bench_gpu(args) -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: GPU figures not measured")
        return
    gpu = torch.device("cuda")
    print(f"GPU ({torch.cuda.get_device_name(gpu)}), ResNet-50, {SIZE} x {SIZE} grey:")
    for dtype, channels_last in ((None, False), (torch.bfloat16, True)):
        label = "bf16 + channels_last" if dtype else "float32"
        rate = _generation_rate(gpu, 32, batch_size=128, repeats=args.repeats, dtype=dtype,
                                channels_last=channels_last)
        print(f"  feed-forward generation, {label} (1024 pairs): {rate:9.1f} images/s"
              f"  -> {PAPER_PAIRS:,} pairs in {PAPER_PAIRS / rate / 60:.1f} min")
    rate = _iteration_rate(gpu, 16, 25)
    print(f"  iterative NST, float32 (batch 16): {rate:8.2f} iterations/s "
          f"= {16 * rate / 1000:.3f} images/s at 1000 iterations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="CPU: images (pairs = square)")
    parser.add_argument("--batch", type=int, default=1, help="CPU: pairs per iterative call")
    parser.add_argument("--iterations", type=int, default=8,
                        help="CPU: iterative steps timed (the first two are not counted)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_cpu(args)
    bench_gpu(args)


if __name__ == "__main__":
    main()
