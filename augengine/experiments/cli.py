"""``augengine experiment dynamic-range|augmentation``: the seeds' experiments from the command
line, on the user's data or on simulated phantoms.

    augengine experiment dynamic-range --data OASBUD.mat --out runs/dr
    augengine experiment augmentation --data OASBUD.mat --out runs/aug --repeats 5

:func:`add_experiment_parser` registers ``experiment`` on the ``augengine`` parser; :func:`main`
is the same command without the ``experiment`` word (``python -m augengine.experiments``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from augengine.errors import AugengineError, ConfigError

__all__ = ["add_experiment_parser", "main", "run_experiment"]

_HELP = {"dynamic-range": "seed 001 Table I: train at 40/50/60 dB or all, test at each",
         "augmentation": "seed 002 Table 2: none vs geometric vs style transfer vs both"}


def _pair(text: str) -> tuple[str, object]:
    """``FIELD=VALUE``, the value parsed as JSON where it parses (numbers, true/false, lists)."""
    name, equals, value = text.partition("=")
    if not (equals and name):
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from augengine.experiments.augmentation import DECODER_SETTINGS
    from augengine.experiments.common import EXPERIMENT_SETTINGS

    parser.add_argument("experiment", choices=sorted(_HELP),
                        help="; ".join(f"{k}: {v}" for k, v in _HELP.items()))
    parser.add_argument("--out", required=True, help="working folder (stores and runs re-used)")
    parser.add_argument("--data", help="your data: an OASBUD-layout .mat, an .npz file or "
                        "folder, a BUSI folder, DICOM, or an augengine store of originals "
                        "(default: simulated phantoms)")
    parser.add_argument("--reader", choices=("oasbud", "rf_npz", "busi", "dicom", "store"),
                        help="how to read --data (default: told from the path)")
    parser.add_argument("--option", action="append", type=_pair, default=[],
                        metavar="KEY=VALUE", help="a reader option, as in a job's sources "
                        "options (e.g. pitch_m=2e-4, label=malignant)")
    parser.add_argument("--n-benign", type=int, default=24,
                        help="without --data: simulated benign scans (2 per lesion)")
    parser.add_argument("--n-malignant", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats, each with a new lesion split and training seed "
                             "(default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap replicates of the test lesions per repeat (default 1000)")
    parser.add_argument("--fractions", type=json.loads, default=[0.7, 0.15, 0.15],
                        help="train/val/test fractions of the lesions, JSON (default "
                             "[0.7,0.15,0.15])")
    parser.add_argument("--loader", choices=("dali", "torch"), default="torch",
                        help="the training loader (default torch; dali needs the train extra)")
    parser.add_argument("--set", action="append", type=_pair, default=[], metavar="FIELD=VALUE",
                        help="a classifier setting, e.g. --set epochs=30 --set image_size=224 "
                             f"--set arch=resnet50 (defaults {EXPERIMENT_SETTINGS})")
    parser.add_argument("--margins", type=float, nargs="+", default=[5.0], metavar="MM",
                        help="dynamic-range: ROI margins of the crops, mm (default 5; seed 001: "
                             "--margins 2 5 10, three times the images)")
    style = parser.add_argument_group("augmentation: style transfer")
    style.add_argument("--nst-checkpoint", help="a trained decoder (checkpoint.pt) instead of "
                       "training one per repeat on the training split")
    style.add_argument("--nst-encoder-weights", help="local encoder weights (e.g. ImageNet) "
                       "the decoder trains with, or the ones --nst-checkpoint was trained with")
    style.add_argument("--style-pairs", choices=("k", "all"), default="k",
                       help="k: --style-refs references per original (default); all: every "
                            "within-class pair (seed 002)")
    style.add_argument("--style-refs", type=int, default=4,
                       help="references per original with --style-pairs k (default 4, as the "
                            "four geometric variants)")
    style.add_argument("--srad-iterations", type=int, default=10,
                       help="SRAD after style transfer (default 10; 0: none)")
    style.add_argument("--dynamic-range-db", type=float, default=50,
                       help="RF reconstruction, and SRAD's assumption (default 50)")
    style.add_argument("--nst-set", action="append", type=_pair, default=[],
                       metavar="FIELD=VALUE", help="a decoder-training setting "
                       "(train_feedforward), e.g. --nst-set epochs=40 --nst-set arch=resnet50 "
                       f"(defaults {DECODER_SETTINGS})")


def add_experiment_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``experiment`` on the ``augengine`` parser's subparsers (``func`` =
    :func:`run_experiment`).

    Example
    -------
    >>> parser = argparse.ArgumentParser(prog="augengine")
    >>> _ = add_experiment_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["experiment", "augmentation", "--out", "runs/aug"])
    >>> args.experiment, args.repeats, args.style_refs
    ('augmentation', 3, 4)
    """
    parser = subparsers.add_parser("experiment", help="the seeds' experiments on your data: "
                                   "dynamic range (seed 001), augmentation (seed 002)",
                                   description=__doc__.splitlines()[0])
    _add_arguments(parser)
    parser.set_defaults(func=run_experiment)
    return parser


def run_experiment(args: argparse.Namespace) -> int:
    """Run the experiment the parsed flags ask for and print its table."""
    from augengine.experiments.augmentation import StyleConfig, augmentation_experiment
    from augengine.experiments.common import ExperimentConfig, validated
    from augengine.experiments.dynamic_range import dynamic_range_experiment

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    config = validated(ExperimentConfig, out=args.out, data=args.data, reader=args.reader,
                       options=_unique(args.option, "--option"), n_benign=args.n_benign,
                       n_malignant=args.n_malignant, repeats=args.repeats, seed=args.seed,
                       bootstrap=args.bootstrap, fractions=args.fractions, loader=args.loader,
                       train=_unique(args.set, "--set"))
    if args.experiment == "dynamic-range":
        dynamic_range_experiment(config, tuple(args.margins))
    else:
        style = validated(StyleConfig, checkpoint=args.nst_checkpoint,
                          encoder_weights=args.nst_encoder_weights, style_pairs=args.style_pairs,
                          references=args.style_refs, srad_iterations=args.srad_iterations,
                          dynamic_range_db=args.dynamic_range_db,
                          decoder=_unique(args.nst_set, "--nst-set"))
        augmentation_experiment(config, style)
    print((Path(args.out) / "table.md").read_text(encoding="utf-8"))
    return 0


def _unique(pairs: Sequence[tuple[str, object]], flag: str) -> dict:
    out = {}
    for name, value in pairs:
        if name in out:
            raise ConfigError(f"{flag} {name}: given twice")
        out[name] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m augengine.experiments {dynamic-range,augmentation} --out DIR ...``."""
    parser = argparse.ArgumentParser(prog="python -m augengine.experiments",
                                     description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_experiment(args)
    except (AugengineError, OSError) as error:
        print(f"experiment {args.experiment}: error: {error}", file=sys.stderr)
        return 2
