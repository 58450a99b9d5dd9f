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
(nothing is downloaded). The defaults are those of
:class:`augengine.train.nst_decoder.DecoderTrainConfig`; see
:func:`augengine.train.nst_decoder.train_decoder`.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from augengine.errors import AugengineError
from augengine.train.nst_decoder import DecoderTrainConfig, train_decoder

#: The training defaults, written once (in the config).
DEFAULTS = {field.name: field.default for field in dataclasses.fields(DecoderTrainConfig)}


def _layers(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="store to train on")
    parser.add_argument("--out", required=True, help="folder for checkpoint.pt and log.jsonl")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                        help="total epochs (default %(default)s)")
    parser.add_argument("--horovod", action="store_true", help="run under horovodrun")
    parser.add_argument("--encoder-weights",
                        help="local checkpoint of the encoder: ImageNet weights, or a classifier "
                             "trained on the store (augengine train classifier)")
    parser.add_argument("--classifier-weights", help="local benign/malignant classifier for LRP")
    parser.add_argument("--arch", default=DEFAULTS["arch"],
                        help="resnet50 or resnet18 (default %(default)s)")
    parser.add_argument("--layer", default=DEFAULTS["layer"],
                        help="encoder stage of AdaIN (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                        help="pairs per step and rank (default %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                        help="learning rate of one rank (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=DEFAULTS["alpha"],
                        help="content weight (Eq. 1, default %(default)s)")
    parser.add_argument("--beta", type=float, default=DEFAULTS["beta"],
                        help="style weight (Eq. 1, default %(default)s)")
    parser.add_argument("--content-layers", type=_layers, default=DEFAULTS["content_layers"],
                        help="comma-separated content layers (default "
                             f"{','.join(DEFAULTS['content_layers'])})")
    parser.add_argument("--style-layers", type=_layers, default=DEFAULTS["style_layers"],
                        help="comma-separated style layers (default "
                             f"{','.join(DEFAULTS['style_layers'])})")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"],
                        help="train on SIZE x SIZE images")
    parser.add_argument("--pairing", default=DEFAULTS["pairing"],
                        help="within_class_all or within_class_k (default %(default)s)")
    parser.add_argument("--no-lrp", action="store_true", help="unweighted content loss")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--debug-rank-states", action="store_true",
                        help="every rank saves its final decoder to OUT/rank{r}.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        result = train_decoder(DecoderTrainConfig(
            args.data, args.out, args.encoder_weights, args.classifier_weights,
            layer=args.layer, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            lrp=not args.no_lrp, pairing=args.pairing, seed=args.seed, horovod=args.horovod,
            resume=not args.no_resume, arch=args.arch, image_size=args.image_size,
            alpha=args.alpha, beta=args.beta, content_layers=args.content_layers,
            style_layers=args.style_layers, device=args.device,
            debug_rank_states=args.debug_rank_states,
        ))
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
