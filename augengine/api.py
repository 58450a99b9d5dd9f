"""The Python door to what ``augengine plan`` and ``augengine run`` do (docs/python.md): a job as
a :class:`Job` (built in Python, from a mapping or from a YAML file), its exact plan, and its run.

The CLI calls these same functions, so a job behaves and fails alike from both: every problem is
an :class:`augengine.errors.AugengineError` whose message is the line the CLI prints.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from augengine.config import JobConfig as Job
from augengine.config import as_job
from augengine.plan import plan_job as plan

__all__ = ["Job", "as_job", "plan", "run"]


def run(job_or_path: Job | Mapping | str | Path, *, address: str | None = None,
        progress: bool = True, rebuild: bool = False):
    """Run a job into its store (``augengine run``); re-running resumes.

    Parameters
    ----------
    job_or_path : Job, mapping or path
        A job, a mapping with a job file's keys, or a YAML job file
        (:func:`augengine.config.as_job`).
    address : str, optional
        A Ray cluster (``ray://...`` or ``auto``); default: ``RAY_ADDRESS`` if set, else an
        embedded Ray started here (and shut down after, unless one was already running).
    progress : bool
        A progress bar on stderr.
    rebuild : bool
        Accept a store whose inputs changed and rebuild the shards they change.

    Returns
    -------
    augengine.runner.RunResult
        ``path`` of the store, ``planned``, ``written`` and ``quarantined`` counts, shards built
        and kept, seconds, and the quarantine summary lines; open the store with
        ``augengine.open_store(result.path)``.
    """
    from augengine.runner import run_job

    return run_job(as_job(job_or_path), address=address, progress=progress, rebuild=rebuild)
