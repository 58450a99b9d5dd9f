"""Style-transfer decoder throughput at fp32 and bf16, as achieved TFLOP/s against a bf16 matmul
measured in the same run.

The decoder (``StyleNet.decode``, ResNet-50 ``layer3`` by default as the runner's default
checkpoint) runs on random features of a ``--size`` image, ``--batch`` at a time, in
inference mode: fp32 NCHW with TF32 off (what ``nst.deterministic`` runs) and bf16 autocast in
channels-last (issue 9 item 2's proposal). FLOPs per image are counted once by
``torch.utils.flop_counter`` (a multiply-add is 2). The baseline is an ``--matmul`` square bf16
matmul, the most a GPU's tensor cores give: the ratio says how much of it the decoder reaches.
Each rate is the number of calls that fit in ``--seconds`` after one warm-up call, with the
device synchronised around the clock. Weights are random: speed, not quality.

Usage: ``python benchmarks/bench_decoder.py --device cuda`` (defaults: 224x224, batch 256,
8192^3 matmul); ``--device cpu --size 32 --batch 2 --matmul 256 --seconds 0.2`` checks it on a
CPU in seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: this tree's augengine, benchmarks and tests
from benchmarks._bare import hardware, store_or_floor  # noqa: E402

TARGET_IMAGES = 325_408  # the within-class all-pairs set of 800 images (seed 002)


def _rate(run, device, seconds: float) -> float:
    """Calls per second of ``run``."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    sync()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        run()
        calls += 1
        if calls % 8 == 0 or device.type != "cuda":
            sync()
    sync()
    return calls / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--arch", default="resnet50", choices=("resnet18", "resnet50"))
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--matmul", type=int, default=8192, help="side of the bf16 matmul")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--out", type=Path, help="write the summary here (JSON)")
    args = parser.parse_args(argv)
    store_or_floor()  # augengine.nst imports the store
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from augengine.models import ARCHITECTURES
    from augengine.nst.feedforward import StyleNet

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: GPU figures not measured")
        return {}
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = StyleNet(ARCHITECTURES[args.arch](), layer=args.layer).to(device).eval()
    side = args.size // net.stride
    features = torch.randn(args.batch, net.channels, side, side, device=device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net.decode(features[:1])
    flops = counter.get_total_flops()

    a, b = (torch.randn(args.matmul, args.matmul, device=device, dtype=torch.bfloat16)
            for _ in range(2))
    matmul = 2 * args.matmul**3 * _rate(lambda: a @ b, device, args.seconds) / 1e12
    summary = {"hardware": hardware(args.device), "decoder": f"{args.arch}/{args.layer}",
               "size": args.size, "batch": args.batch, "gflop_per_image": flops / 1e9,
               "matmul_bf16_tflops": matmul, "matmul_side": args.matmul, "variants": {}}
    print(f"{summary['hardware']}: decoder {summary['decoder']} at {args.size}x{args.size}, "
          f"{flops / 1e9:.2f} GFLOP/image, batch {args.batch}; bf16 matmul {args.matmul}^3: "
          f"{matmul:.3g} TFLOP/s (baseline, same run)")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        for label, dtype, channels_last in (("fp32 NCHW, TF32 off", None, False),
                                            ("bf16 autocast, channels-last", torch.bfloat16,
                                             True)):
            memory = torch.channels_last if channels_last else torch.contiguous_format
            net = net.to(memory_format=memory)
            batch = features.contiguous(memory_format=memory)

            def decode():
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                            enabled=dtype is not None):
                    return net.decode(batch)

            images = args.batch * _rate(decode, device, args.seconds)
            tflops = images * flops / 1e12
            summary["variants"][label] = {"images_per_s": images, "tflops": tflops,
                                          "of_matmul": tflops / matmul}
            print(f"  {label:30s} {images:12,.1f} images/s  {tflops:9.3g} TFLOP/s = "
                  f"{tflops / matmul:6.1%} of the matmul; 325,408 images in "
                  f"{TARGET_IMAGES / images:,.1f} s")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
