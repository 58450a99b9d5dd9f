"""The ``augengine`` command: simulate, plan, run, inspect, verify, replay, preview, demo, train,
experiment, schema.

Exit status: 0 done; 1 ``verify`` found problems, or ``replay`` regenerated other bytes; 2 a
usage, job or input error, printed as one line on stderr, never a traceback; 130 interrupted; 141
the output pipe was closed.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from pathlib import Path

from augengine.errors import AugengineError, InputError, error_line, printable


def _say(text: object) -> None:
    """Print text that holds names, paths, chains or reasons read from files, each line with its
    control characters escaped (a job name must not clear the terminal)."""
    print("\n".join(printable(line) for line in str(text).split("\n")))


def _cmd_simulate(args) -> int:
    from augengine.simulate import simulate_dataset

    summary = simulate_dataset(args.n_benign, args.n_malignant, args.out, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_plan(args) -> int:
    from augengine.api import plan
    from augengine.plan import format_plan

    _say(format_plan(plan(args.job)))
    return 0


def _cmd_run(args) -> int:
    from augengine.api import run

    result = run(args.job, address=args.address, progress=not args.quiet, rebuild=args.rebuild)
    _say(f"{result.path}: {result.written} samples written, {result.quarantined} quarantined "
         f"of {result.planned} planned ({result.shards_built} shards built, "
         f"{result.shards_kept} kept from an earlier run) in {result.seconds:.1f} s")
    if result.quarantine:
        lines = ["left out (count x reason):", *(f"  {line}" for line in result.quarantine[:10]),
                 f"  all of them: augengine inspect {result.path}"]
        print("\n".join(map(printable, lines)), file=sys.stderr)
    return 0


def _cmd_inspect(args) -> int:
    from augengine.store import inspect_store

    info = inspect_store(args.store)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("path", "job", "images", "masks", "shards", "complete"):
        _say(f"{key:<14} {info[key]}")
    print(f"{'size':<14} {info['bytes_on_disk'] / 1e6:.1f} MB on disk")
    _say(f"{'counts':<14} {info['counts']}")
    if info["quarantine"]:
        print("left out (count x reason):")
        for line in info["quarantine"]:
            _say(f"  {line}")
    if info["nst_quality_assessed"]:
        counts = info["nst_quality_assessed"]
        means = info["nst_quality_mean"] or "no sample checked"
        _say(f"{'nst quality':<14} {means} (means over {counts['assessed']} of "
             f"{counts['samples']} samples assessed)")
    print("by label:")
    for label, n in info["by_label"].items():
        _say(f"  {label:<6} {n:>10}")
    print("by op chain:")
    for chain, n in info["by_chain"].items():
        _say(f"  {n:>10}  {chain}")
    return 0


def _cmd_verify(args) -> int:
    from augengine.store import verify_store

    if not (Path(args.store) / "zarr.json").exists():
        # Nothing there is a wrong argument (exit 2, as for inspect), not a broken store (exit 1).
        raise InputError(f"{args.store}: not an augengine store (no zarr.json)")
    problems = verify_store(args.store)
    if problems:
        _say(f"{args.store}: NOT whole; first problems:")
        for text in problems:
            _say(f"  - {text}")
        return 1
    _say(f"{args.store}: whole (every planned sample present once, checksums match)")
    return 0


def _cmd_replay(args) -> int:
    import pyarrow.compute as pc

    from augengine.config import parse_job
    from augengine.regenerate import replay
    from augengine.store import image_sha256, open_store

    view = open_store(args.store)
    rows = view.manifest.filter(pc.equal(view.manifest.column("index"), args.index)).to_pylist()
    if not rows:
        planned = view.attrs.get("planned")
        raise InputError(f"{args.store}: no written sample at index {args.index} (the store plans "
                         f"{planned}; quarantined samples have none: augengine inspect)")
    row = rows[0]
    frame = replay(row, parse_job(view.attrs.get("job"), origin=f"{args.store} (its job)"))
    name = f"{args.store}: sample {row['sample_id']} (index {args.index})"
    got = image_sha256(frame.data)
    got_mask = None if frame.mask is None else image_sha256(frame.mask)
    if got != row["sha256"]:
        _say(f"{name}: regenerated image differs: stored sha256 {row['sha256']}, "
             f"regenerated {got}")
        return 1
    if got_mask != row["mask_sha256"]:
        _say(f"{name}: regenerated mask differs: stored mask_sha256 {row['mask_sha256']}, "
             f"regenerated {got_mask}")
        return 1
    _say(f"{name}: regenerated, sha256 {got} matches")
    return 0


def _cmd_preview(args) -> int:
    from augengine.errors import ConfigError
    from augengine.preview import preview_nst, preview_store

    if args.nst:
        if args.where:
            raise ConfigError("--where: filters the sample grid, not the --nst rows")
        count = 12 if args.count is None else min(args.count, 12)
        _say(preview_nst(args.store, args.out, count=count, classifier=args.classifier,
                         seed=args.seed))
    else:
        _say(preview_store(args.store, args.out, count=args.count, seed=args.seed,
                           where=args.where or None))
    return 0


def _cmd_schema(args) -> int:
    from augengine.config import JobConfig

    print(json.dumps(JobConfig.model_json_schema(), indent=2))
    return 0


def _cmd_demo(args) -> int:
    from augengine.demo import run_demo

    return run_demo(Path(args.out), n_benign=args.n_benign, n_malignant=args.n_malignant,
                    seed=args.seed, address=args.address)


def _version() -> str:
    try:
        return importlib.metadata.version("augengine")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH)
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augengine", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="simulate RF phantoms (OASBUD .mat + .npz)")
    p.add_argument("--n-benign", type=int, required=True)
    p.add_argument("--n-malignant", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("plan", help="print the exact output counts and shard layout of a job")
    p.add_argument("job", help="job YAML file")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("run", help="run a job on an embedded Ray or a cluster (resumes)")
    p.add_argument("job", help="job YAML file")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS when set, else an embedded "
                        "Ray on this machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--rebuild", action="store_true",
                   help="the inputs changed since the store was made: rebuild the shards they "
                        "change (without it such a resume is refused)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("inspect", help="counts by label and op chain, sizes")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("verify", help="check a store is whole (exit 0) or list problems (exit 1)")
    p.add_argument("store")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("replay", help="regenerate one sample from its manifest row and check "
                                      "it against the stored checksum (exit 0 same, 1 differs)")
    p.add_argument("store")
    p.add_argument("index", type=int, help="the sample's index (manifest column index)")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("preview", help="write a labelled PNG grid of samples")
    p.add_argument("store")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=None,
                   help="samples to show, at most 1024 (default: 32, or all when fewer)")
    p.add_argument("--seed", type=int, default=0,
                   help="which samples are picked (a label-balanced random pick; same seed, "
                        "same pick)")
    p.add_argument("--where", action="append", default=[], metavar="CONDITION",
                   help="show only manifest rows with COLUMN=VALUE, COLUMN~TEXT (TEXT occurs) "
                        "or OP.PARAM=VALUE; repeat to require several")
    p.add_argument("--nst", action="store_true",
                   help="style-transfer rows: content | style | result (| relevance)")
    p.add_argument("--classifier", default=None,
                   help="with --nst: a local classifier checkpoint for the LRP relevance column")
    p.set_defaults(func=_cmd_preview)

    p = sub.add_parser("demo", help="simulate phantoms, run the demo job, verify and preview")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--n-benign", type=int, default=24)
    p.add_argument("--n-malignant", type=int, default=24)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS when set, else an embedded "
                        "Ray on this machine)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("schema", help="print the JSON Schema of job files (for editors)")
    p.set_defaults(func=_cmd_schema)

    from augengine.experiments.cli import add_experiment_parser
    from augengine.train.cli import add_train_parser

    add_train_parser(sub)
    add_experiment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit where it cannot be caught
        return code
    except BrokenPipeError:
        # The reader left (`augengine plan JOB | head`): stop quietly like the standard tools,
        # with the exit status a shell gives them (128 + SIGPIPE), so `set -o pipefail` still
        # sees that the output was cut. Python flushes stdout again at exit: point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (AugengineError, OSError) as error:
        print(f"augengine {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"augengine {args.command}: interrupted; re-run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
