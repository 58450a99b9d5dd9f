"""Cost of the style-transfer quality checks against the cost of generating, per output image.

What ``nst.quality_checks`` trades (``augengine.config.NstConfig``): assessing one output
(:func:`augengine.nst.quality.assess_quality`: SSIM to the content, the extractor on the style
image, the content and the result at the decoder's training style layers) against generating it
in production (:meth:`StyleNet.decode` of aligned features; each image's encoding is shared by
the hundreds of pairs it takes part in, so it is left out, which makes the ratio an upper
bound). Both on the default feed-forward network, ResNet-50 ``layer3`` with the style layers
training uses by default (all five stages), in float32, in one process, timed on the same
batch of ``--batch`` images, best of ``--repeats`` taken in turn after a warm-up.

The ratio barely depends on the image size (both sides are convolutions over the whole image),
so a small ``--size`` measures it on a CPU; the default of ``quality_checks`` is chosen from it
so that checking costs at most 10 % of generating.

Usage: ``python benchmarks/bench_quality.py [--size 112] [--batch 4] [--repeats 3] [--threads N]``
"""
from __future__ import annotations

import argparse
import time

import torch

from augengine.models import feature_extractor, resnet50
from augengine.nst import StyleNet
from augengine.nst.losses import RESNET50_LAYERS
from augengine.nst.quality import assess_quality


def _best_seconds(runs, repeats: int) -> list[float]:
    """Best time of each of ``runs``, timed in turn ``repeats`` times after a warm-up of each,
    so that on a shared machine both sides see the same load."""
    for run in runs:
        run()  # warm-up: allocator and kernel selection
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def measure(size: int, batch: int, repeats: int) -> dict:
    """Seconds per output image of generating (decoder) and of assessing, and their ratio."""
    torch.manual_seed(0)
    net = StyleNet(resnet50(), layer="layer3").eval()
    extractor = feature_extractor(net.encoder, RESNET50_LAYERS)
    images = torch.rand(3, batch, 1, size, size)
    features = torch.randn(batch, net.channels, size // net.stride, size // net.stride)

    def generate():
        with torch.inference_mode():
            net.decode(features)

    def assess():
        with torch.inference_mode():
            assess_quality(images[0], images[1], images[2], extractor)

    generating, assessing = (seconds / batch for seconds in _best_seconds([generate, assess],
                                                                        repeats))
    return {"size": size, "batch": batch, "generate_s": generating, "assess_s": assessing,
            "ratio": assessing / generating}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.size, args.batch, args.repeats)
    print(f"{args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} CPU threads: "
          f"generate {result['generate_s'] * 1e3:.1f} ms/image, assess "
          f"{result['assess_s'] * 1e3:.1f} ms/image, assess/generate = {result['ratio']:.2f}; "
          f"checking <= 10 % of generating needs quality_checks <= {0.1 / result['ratio']:.3f}")


if __name__ == "__main__":
    main()
