"""Train the feed-forward style-transfer decoder on a store, alone or on several ranks:

    python jobs/train_nst.py --data out/busi.zarr --out out/nst --epochs 20 \\
        --encoder-weights resnet50-imagenet.pth --classifier-weights out/classifier.pth
    horovodrun -np 8 -H localhost:8 python jobs/train_nst.py --data ... --out ... --horovod

On small images without ImageNet weights (the 64 x 64 phantoms of docs/nst.md) align and compare
at the stride-2 stage, where a random encoder's features can still be decoded:
``--arch resnet18 --layer relu --content-layers relu --style-layers relu,layer1,layer2 --lr 1e-3``
(docs/nst.md, "Decoder quality").

Re-running with the same ``--out`` resumes from its checkpoint (``--no-resume`` starts afresh).
Without ``--encoder-weights``/``--classifier-weights`` the networks are randomly initialised
(nothing is downloaded). See :func:`augengine.nst.training.train_feedforward`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from augengine.errors import AugengineError
from augengine.nst.losses import RESNET50_LAYERS
from augengine.nst.training import train_feedforward


def _layers(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="store to train on")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt and log.jsonl")
    parser.add_argument("--epochs", type=int, default=10, help="total epochs (default 10)")
    parser.add_argument("--horovod", action="store_true", help="run under horovodrun")
    parser.add_argument("--encoder-weights",
                        help="local checkpoint of the encoder: ImageNet weights, or a classifier "
                             "trained on the store (augengine.models.fit_classifier)")
    parser.add_argument("--classifier-weights", help="local benign/malignant classifier for LRP")
    parser.add_argument("--arch", default="resnet50", help="resnet50 (default) or resnet18")
    parser.add_argument("--layer", default="layer3", help="encoder stage of AdaIN")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step and rank")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of one rank")
    parser.add_argument("--alpha", type=float, default=1.0, help="content weight (Eq. 1)")
    parser.add_argument("--beta", type=float, default=1e4, help="style weight (Eq. 1)")
    parser.add_argument("--content-layers", type=_layers, default=("layer2",),
                        help="comma-separated content layers (default layer2)")
    parser.add_argument("--style-layers", type=_layers, default=RESNET50_LAYERS,
                        help="comma-separated style layers (default: all five stages)")
    parser.add_argument("--image-size", type=int, help="train on SIZE x SIZE images")
    parser.add_argument("--pairing", default="within_class_all",
                        help="within_class_all (default) or within_class_k")
    parser.add_argument("--no-lrp", action="store_true", help="unweighted content loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--debug-rank-states", action="store_true",
                        help="every rank saves its final decoder to OUT/rank{r}.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        result = train_feedforward(
            args.data, args.out, args.encoder_weights, args.classifier_weights,
            layer=args.layer, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            lrp=not args.no_lrp, pairing=args.pairing, seed=args.seed, horovod=args.horovod,
            resume=not args.no_resume, arch=args.arch, image_size=args.image_size,
            alpha=args.alpha, beta=args.beta, content_layers=args.content_layers,
            style_layers=args.style_layers, device=args.device,
            debug_rank_states=args.debug_rank_states,
        )
    except (AugengineError, OSError) as error:
        print(f"jobs/train_nst.py: error: {error}", file=sys.stderr)
        return 2
    if result.rank != 0:
        return 0
    losses = ", ".join(f"{loss:.6g}" for loss in result.epoch_losses)
    print(f"{result.checkpoint}: {result.epochs_run} epoch(s) run after {result.start_epoch}; "
          f"loss per epoch: {losses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
