"""Run an augmentation job on a Ray cluster (token auth; the job server reached through an SSH
tunnel or ``kubectl port-forward``, see cluster/README.md):

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/augment.py --config jobs/demo.yaml \
        --sources /shared/datasets/phantoms/phantoms.mat --output /shared/datasets/demo.zarr

Under ``ray job submit`` the driver runs inside a copy of the working directory, which holds only
what was uploaded (not git-ignored data or outputs), so the sources and the store must be absolute
paths on storage every node sees (NFS, Lustre, a mounted bucket): ``--sources`` overrides the job
file's ``sources[].path`` (one path per source, in order), ``--output`` its ``output.path``.
Re-submitting the same job resumes it.
"""
from __future__ import annotations

import argparse
import sys

from augengine.config import parse_job, read_job_file
from augengine.errors import AugengineError, ConfigError, error_line, printable
from augengine.runner import run_job
from augengine.store import verify_store


def override_sources(job: dict, paths: list[str], origin: str) -> None:
    """Set ``sources[i].path`` of the job data to ``paths[i]``: one path per source, in order."""
    sources = job.get("sources")
    if not isinstance(sources, list) or len(sources) != len(paths):
        count = len(sources) if isinstance(sources, list) else 0
        raise ConfigError(f"{origin}: --sources gives {len(paths)} path(s), the job has {count} "
                          f"source(s): give one path per entry of sources, in order")
    for source, path in zip(sources, paths):
        if isinstance(source, dict):
            source["path"] = path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="job YAML file")
    parser.add_argument("--output", help="store path (overrides output.path; use an absolute, "
                        "shared path on a cluster)")
    parser.add_argument("--sources", nargs="+", metavar="PATH",
                        help="source paths, one per entry of the job's sources, in order "
                        "(overrides sources[].path; use absolute, shared paths on a cluster)")
    parser.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, "
                        "set by `ray job submit`, else an embedded Ray)")
    parser.add_argument("--rebuild", action="store_true", help="the inputs changed since the "
                        "store was made: rebuild the shards they change")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = read_job_file(args.config)
        if args.output and isinstance(job, dict):
            job.setdefault("output", {})["path"] = args.output
        if args.sources and isinstance(job, dict):
            override_sources(job, args.sources, args.config)
        config = parse_job(job, origin=args.config)
        result = run_job(config, address=args.address, rebuild=args.rebuild)
        problems = verify_store(result.path)
    except (AugengineError, OSError) as error:
        print(f"jobs/augment.py: error: {error_line(error)}", file=sys.stderr)
        return 2
    print(f"{printable(result.path)}: {result.written} written, {result.quarantined} quarantined, "
          f"{result.shards_built} shards built, {result.shards_kept} kept, {result.seconds:.1f} s")
    for line in result.quarantine:
        print(f"left out: {printable(line)}", file=sys.stderr)
    for text in problems:
        print(f"verify: {printable(text)}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
