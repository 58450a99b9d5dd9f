"""The Python door to what ``augengine plan`` and ``augengine run`` do (docs/python.md): a job as
a :class:`Job` (built in Python, from a mapping or from a YAML file), its exact plan, and its run.

The CLI calls these same functions, so a job behaves and fails alike from both: every problem is
an :class:`augengine.errors.AugengineError` whose message is the line the CLI prints.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from augengine.config import JobConfig as Job
from augengine.config import load_job, parse_job
from augengine.errors import ConfigError

__all__ = ["Job", "as_job", "plan", "run"]


def as_job(job_or_path: Job | Mapping | str | Path) -> Job:
    """A validated :class:`Job` from a ``Job`` (returned as it is), a mapping with a job file's
    keys, or the path of a YAML job file. ``ConfigError`` (one line) if it is not a valid job."""
    if isinstance(job_or_path, Job):
        return job_or_path
    if isinstance(job_or_path, Mapping):
        return parse_job(dict(job_or_path), origin="job")
    if isinstance(job_or_path, (str, Path)):
        return load_job(job_or_path)
    raise ConfigError(f"a job is an augengine.Job, a mapping or a YAML file path, got "
                      f"{type(job_or_path).__name__}")


def plan(job_or_path: Job | Mapping | str | Path):
    """The exact plan of a job before anything runs (``augengine plan``).

    Returns
    -------
    augengine.plan.Plan
        ``n_samples``, ``n_shards``, ``chains``, ``counts_by_label()``, ...;
        ``augengine.plan.format_plan(plan)`` is the text the CLI prints.
    """
    from augengine.plan import make_plan

    return make_plan(as_job(job_or_path))


def run(job_or_path: Job | Mapping | str | Path, *, address: str | None = None,
        progress: bool = True, rebuild: bool = False):
    """Run a job into its store (``augengine run``); re-running resumes.

    Parameters
    ----------
    job_or_path : Job, mapping or path
        See :func:`as_job`.
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
