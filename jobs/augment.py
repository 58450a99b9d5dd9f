"""Run an augmentation job on a Ray cluster (token auth; the job server reached through an SSH
tunnel or ``kubectl port-forward``, see cluster/README.md):

    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/augment.py --config jobs/demo.yaml --output /shared/datasets/demo.zarr

Under ``ray job submit`` the driver runs inside a copy of the working directory, so the store must
be an absolute path on storage every node sees (NFS, Lustre, a mounted bucket); ``--output``
overrides the job file's ``output.path`` for that. Re-submitting the same job resumes it.
"""
from __future__ import annotations

import argparse
import sys

from augengine.config import parse_job, read_job_file
from augengine.errors import AugengineError, error_line, printable
from augengine.runner import run_job
from augengine.store import verify_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="job YAML file")
    parser.add_argument("--output", help="store path (overrides output.path; use an absolute, "
                        "shared path on a cluster)")
    parser.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, "
                        "set by `ray job submit`, else an embedded Ray)")
    parser.add_argument("--rebuild", action="store_true", help="the inputs changed since the "
                        "store was made: rebuild the shards they change")
    args = parser.parse_args(argv)
    try:
        job = read_job_file(args.config)
        if args.output and isinstance(job, dict):
            job.setdefault("output", {})["path"] = args.output
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
