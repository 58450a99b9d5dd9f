"""``augengine train classifier|segmenter|quality|superres``: the training jobs from the command
line.

    augengine train classifier --data out/dataset.zarr --out runs/cls --epochs 20 \\
        --processes 2 --backend horovod

``--processes N`` (N > 1) starts N ranks on this machine: ``horovodrun --gloo`` for
``--backend horovod``, torchrun for ``--backend ddp``; each rank re-runs this command as
``python -m augengine.train.cli <task> ...`` and trains its share. ``--backend ray`` runs N
workers of Ray Train's ``TorchTrainer`` on the Ray cluster of ``$RAY_ADDRESS`` (or an embedded
Ray) instead (:mod:`augengine.train.ray_backend`). A command started by a
launcher (``horovodrun -np 8 ... python jobs/train.py classifier ...``) is a rank already and
trains directly. Recipe defaults come from the seeds (:mod:`augengine.train.tasks`).

:func:`add_train_parser` registers ``train`` on the ``augengine`` parser; :func:`main` is the same
command without the ``train`` word (``python -m augengine.train.cli``, ``jobs/train.py``).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from augengine.errors import AugengineError, ConfigError

__all__ = ["add_train_parser", "build_parser", "config_argv", "config_from_args", "main",
           "ray_rank", "ray_train_worker", "run_train"]

_TASK_HELP = {
    "classifier": "benign/malignant lesion classifier (seed 002: ResNet-50, SGD, early stopping)",
    "segmenter": "lesion segmentation (U-Net, SegNet, seed 004; DSA-U++, seed 000), Dice + BCE "
                 "loss",
    "quality": "image-quality score regressor (seed 003: ResNet-18, JPEG/blur pseudo-labels)",
    "superres": "super-resolution (seed 004: EDSR or RDN, L1 loss), PSNR/SSIM vs bicubic",
}


@dataclass(frozen=True)
class _Option:
    """One flag, declared once: it builds the parser and re-creates a rank's command line."""

    flag: str
    kind: str  # "value", "bool" (--x / --no-x), "switch" (store_true), "list" (repeated k=v)
    kwargs: dict = field(default_factory=dict)
    tasks: tuple[str, ...] = ("classifier", "segmenter", "quality", "superres")

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def _where(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not (equals and key and value):
        raise argparse.ArgumentTypeError(f"expected op.param=value, got {text!r}")
    return key, value


_OPTIONS = (
    _Option("--data", "value", {"required": True, "help": "the store to train on"}),
    _Option("--out", "value", {"required": True, "help": "run directory (created)"}),
    _Option("--epochs", "value", {"type": int, "help": "most epochs (recipe default)"}),
    _Option("--processes", "value", {"type": int, "default": 1,
                                     "help": "ranks on this machine, or Ray Train workers with "
                                             "--backend ray (default 1: one process)"}),
    _Option("--backend", "value", {"choices": ("horovod", "ddp", "ray"),
                                   "help": "horovod (horovodrun --gloo), ddp (torchrun) or ray "
                                           "(Ray Train's TorchTrainer, $RAY_ADDRESS or an "
                                           "embedded Ray); default horovod when installed, "
                                           "else ddp"}),
    _Option("--arch", "value", {"choices": ("resnet50", "resnet18"),
                                "help": "backbone (classifier resnet50, quality resnet18)"},
            ("classifier", "quality")),
    _Option("--model", "value", {"choices": ("unet", "dsa_unetpp", "segnet"),
                                 "help": "default unet"},
            ("segmenter",)),
    _Option("--image-size", "value", {"type": int, "help": "network input side, pixels "
                                                           "(default 224)"}),
    _Option("--batch-size", "value", {"type": int, "help": "samples per step and rank"}),
    _Option("--optimizer", "value", {"choices": ("sgd", "adam", "adadelta")}),
    _Option("--lr", "value", {"type": float, "help": "learning rate of one rank"}),
    _Option("--momentum", "value", {"type": float, "help": "SGD momentum"}),
    _Option("--patience", "value", {"type": int, "help": "early stopping after N epochs "
                                                         "without val-loss improvement; 0 off"}),
    _Option("--lr-schedule", "bool", {"help": "ReduceLROnPlateau on the val loss"}),
    _Option("--lr-factor", "value", {"type": float, "default": 0.1}),
    _Option("--lr-patience", "value", {"type": int, "default": 3}),
    _Option("--model", "value", {"choices": ("edsr", "rdn", "edsr_small", "rdn_small"),
                                 "help": "default edsr (seed 004); *_small are CPU-sized"},
            ("superres",)),
    _Option("--scale", "value", {"type": int, "choices": (2, 3, 4), "default": 3,
                                 "help": "upscaling factor (default 3, seed 004's EDSR)"},
            ("superres",)),
    _Option("--max-blur-sigma", "value", {"type": float, "default": 0.0,
                                          "help": "largest Gaussian blur drawn per sample, "
                                                  "high-resolution pixels (default 0: none)"},
            ("superres",)),
    _Option("--max-noise-std", "value", {"type": float, "default": 0.0,
                                         "help": "largest noise std drawn per sample, grey "
                                                 "levels (default 0: none)"},
            ("superres",)),
    _Option("--dropout", "value", {"type": float, "default": 0.5}, ("classifier",)),
    _Option("--base-channels", "value", {"type": int, "default": 64,
                                          "help": "U-Net/SegNet width"},
            ("segmenter",)),
    _Option("--depth", "value", {"type": int, "default": 4,
                                  "help": "U-Net/SegNet poolings"},
            ("segmenter",)),
    _Option("--jpeg-quality", "value", {"type": int, "default": 20,
                                        "help": "JPEG quality of the score-60 version"},
            ("quality",)),
    _Option("--blur-sigma", "value", {"type": float, "default": 3.0,
                                      "help": "Gaussian sigma (pixels) of the score-30 version"},
            ("quality",)),
    _Option("--init-weights", "value", {"help": "local backbone/encoder checkpoint"}),
    _Option("--fractions", "value", {"type": float, "nargs": 3, "default": (0.70, 0.15, 0.15),
                                     "metavar": ("TRAIN", "VAL", "TEST"),
                                     "help": "split fractions of the sources"}),
    _Option("--splits", "value", {"help": "use this splits.json instead of splitting"}),
    _Option("--seed", "value", {"type": int, "default": 0}),
    _Option("--loader", "value", {"choices": ("dali", "torch"),
                                  "help": "default dali when installed, else torch"}),
    _Option("--loader-workers", "value", {"type": int, "default": 0,
                                          "help": "reader processes per rank"}),
    _Option("--loader-threads", "value", {"type": int, "help": "DALI threads per rank"}),
    _Option("--augment", "bool", {"help": "random flips/rot90/affine in the loader (default: "
                                          "on for segmenter and quality, off for classifier)"}),
    _Option("--train-originals-only", "switch", {"help": "train on original rows only"}),
    _Option("--eval-all-variants", "switch", {"help": "validate/test on variants too"}),
    _Option("--train-where", "list", {"help": "train/val row filter op.param=value "
                                              "(repeatable), e.g. bmode.dynamic_range_db=40"}),
    _Option("--test-where", "list", {"help": "test row filter op.param=value (repeatable)"}),
    _Option("--resume", "switch", {"help": "continue from OUT/checkpoint.pt"}),
    _Option("--debug-rank-hashes", "switch", {"help": "each rank writes OUT/rank<r>.json with "
                                                      "the sha256 of its weights"}),
    _Option("--device", "value", {"help": "cpu or cuda (default cuda when available)"}),
)
_RAY_OPTIONS = (
    _Option("--ray", "switch", {"help": "run Horovod ranks as Ray actors "
                                        "(horovod.ray.RayExecutor); --backend ray is Ray Train"}),
    _Option("--ray-address", "value", {"help": "Ray cluster (default $RAY_ADDRESS or embedded)"}),
)


def _add_option(parser: argparse.ArgumentParser, option: _Option) -> None:
    kwargs = dict(option.kwargs)
    if option.kind == "bool":
        kwargs.setdefault("default", None)
        parser.add_argument(option.flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif option.kind == "switch":
        parser.add_argument(option.flag, action="store_true", **kwargs)
    elif option.kind == "list":
        parser.add_argument(option.flag, action="append", type=_where, default=[],
                            metavar="OP.PARAM=VALUE", **kwargs)
    else:
        parser.add_argument(option.flag, **kwargs)


def _add_tasks(parser: argparse.ArgumentParser, ray: bool = False) -> None:
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, text in _TASK_HELP.items():
        sub = tasks.add_parser(name, help=text, description=text)
        for option in _OPTIONS + (_RAY_OPTIONS if ray else ()):
            if name in option.tasks:
                _add_option(sub, option)
        sub.set_defaults(func=run_train)


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` (with its ``classifier``/``segmenter``/``quality`` commands) on the
    ``augengine`` parser's subparsers; each sets ``func=run_train``.

    Example
    -------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="augengine")
    >>> _ = add_train_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "quality", "--data", "ds.zarr", "--out", "run"])
    >>> args.task, args.arch, args.processes
    ('quality', None, 1)
    """
    parser = subparsers.add_parser("train", help="train a classifier, segmenter or quality "
                                                 "regressor on a store (Horovod / DDP / Ray Train)")
    _add_tasks(parser)
    return parser


def build_parser(prog: str = "python -m augengine.train.cli",
                 ray: bool = False) -> argparse.ArgumentParser:
    """The ``train`` command as a parser of its own; ``ray`` adds ``--ray``/``--ray-address``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    _add_tasks(parser, ray=ray)
    return parser


def config_from_args(args: argparse.Namespace):
    """The :class:`~augengine.train.loop.TrainConfig` of parsed arguments."""
    from augengine.train.loop import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
              if f.name != "task" and hasattr(args, f.name)}
    for name in ("train_where", "test_where"):
        values[name] = tuple(tuple(pair) for pair in values.get(name, ()))
    values["fractions"] = tuple(values["fractions"])
    return TrainConfig(task=args.task, **values)


def config_argv(args: argparse.Namespace) -> list[str]:
    """The command-line tokens (after the task) that parse back to ``args``.

    Example
    -------
    >>> args = build_parser().parse_args(["segmenter", "--data", "d", "--out", "o",
    ...                                   "--no-augment", "--train-where", "bmode.x=4"])
    >>> tokens = config_argv(args)
    >>> tokens[:4], "--no-augment" in tokens, tokens[-2:]
    (['--data', 'd', '--out', 'o'], True, ['--train-where', 'bmode.x=4'])
    """
    tokens: list[str] = []
    for option in _OPTIONS + _RAY_OPTIONS:
        if args.task not in option.tasks or not hasattr(args, option.dest):
            continue
        value = getattr(args, option.dest)
        if value is None or (option.kind == "switch" and not value):
            continue
        if option.kind == "bool":
            tokens.append(option.flag if value else "--no-" + option.flag.removeprefix("--"))
        elif option.kind == "switch":
            tokens.append(option.flag)
        elif option.kind == "list":
            for key, item in value:
                tokens += [option.flag, f"{key}={item}"]
        elif isinstance(value, (list, tuple)):
            tokens += [option.flag, *(repr(v) if isinstance(v, float) else str(v)
                                      for v in value)]
        else:
            tokens += [option.flag, repr(value) if isinstance(value, float) else str(value)]
    return tokens


def _summary(result) -> str:
    shown = {key: value for key, value in result.metrics.items()
             if isinstance(value, float) and key in ("accuracy", "auc", "f1", "dice", "iou",
                                                     "mse", "lcc", "psnr", "ssim",
                                                     "psnr_bicubic", "ssim_bicubic")}
    text = ", ".join(f"{key} {value:.4f}" for key, value in shown.items())
    return (f"{result.run_dir}: {result.epochs_run} epoch(s) run after {result.start_epoch} on "
            f"{result.size} rank(s); best epoch {result.best_epoch}; test {text}")


def _show_progress() -> None:
    """Print augengine's progress lines (epochs) on stdout; other libraries' logs untouched."""
    logger = logging.getLogger("augengine")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def ray_rank(config, backend: str = "horovod"):
    """One Ray actor's rank (:func:`augengine.train.distributed.run_on_ray`): progress on
    stdout (Ray forwards it), then :func:`augengine.train.loop.train`."""
    from augengine.train.loop import train

    _show_progress()
    return train(config, backend=backend)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


def _choose_defaults(args: argparse.Namespace, ray: bool) -> None:
    """Fill in ``--loader`` and ``--backend`` when left out: DALI and Horovod where installed,
    else the PyTorch loader and torch DDP (``make demo`` installs neither), said in one line."""
    fallbacks = []
    if args.loader is None:
        args.loader = "dali" if _installed("nvidia.dali") else "torch"
        if args.loader == "torch":
            fallbacks.append(("NVIDIA DALI", "--loader torch", "the train extra"))
    if args.backend is None:
        args.backend = "horovod" if ray or _installed("horovod.torch") else "ddp"
        if args.backend == "ddp" and args.processes > 1:
            fallbacks.append(("Horovod", "--backend ddp", ".ci/build-horovod.sh"))
    if fallbacks:
        names, flags, installs = (" and ".join(parts) for parts in zip(*fallbacks))
        verb = "are" if len(fallbacks) > 1 else "is"
        print(f"{names} {verb} not installed: using {flags} (install with {installs}, "
              f"docs/install.md)", file=sys.stderr, flush=True)


def ray_train_worker(loop_config: dict) -> str:
    """One worker of Ray Train's ``TorchTrainer`` (``train_loop_per_worker`` of
    :func:`augengine.train.ray_backend.fit_on_ray`): train as a ``"ray"`` rank; the summary line
    it returns reaches the driver from rank 0."""
    from augengine.train.loop import train

    _show_progress()
    # Ray Train's worker logging would print each progress line a second time.
    logging.getLogger("augengine").propagate = False
    return _summary(train(loop_config["config"], backend="ray"))


def run_train(args: argparse.Namespace) -> int:
    """The handler of every ``train`` command: launch the ranks, or be one and train."""
    from augengine.train.distributed import launch, launched_backend, run_on_ray
    from augengine.train.loop import train

    _show_progress()
    _choose_defaults(args, ray=getattr(args, "ray", False))
    config = config_from_args(args)
    if args.processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {args.processes}")
    if args.backend == "ray":
        from augengine.train.ray_backend import fit_on_ray

        print(fit_on_ray(ray_train_worker, config, args.processes,
                         address=getattr(args, "ray_address", None)), flush=True)
        return 0
    if getattr(args, "ray", False):
        if args.backend != "horovod":
            raise ConfigError("--ray runs Horovod ranks (horovod.ray.RayExecutor); use "
                              "--backend horovod, or --backend ray for Ray Train")
        results = run_on_ray(ray_rank, {"config": config}, args.processes,
                             address=args.ray_address, device=config.device)
        print(_summary(results[0]))
        return 0
    if args.processes > 1 and launched_backend() is None:
        command = [sys.executable, "-m", "augengine.train.cli", args.task, *config_argv(args)]
        return launch(args.backend, args.processes, command)
    result = train(config, backend=args.backend if launched_backend() else None)
    if result.rank == 0:
        print(_summary(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m augengine.train.cli",
         ray: bool = False) -> int:
    """Parse ``argv`` (``<task> [options]``) and run it; errors end as one line (exit 2)."""
    args = build_parser(prog, ray=ray).parse_args(argv)
    try:
        return args.func(args)
    except AugengineError as error:
        print(f"{prog} {args.task}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
