"""docs/ says what users get: docs/jobs.md's sample errors are the lines `augengine plan` prints
for the mistakes the page names."""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from augengine import cli

ROOT = Path(__file__).resolve().parents[1]

JOB = """name: demo
seed: 1
sources:
  - reader: oasbud
    path: phantoms.mat
steps:
{steps}output:
  path: out.zarr
  size: [64, 64]
"""
#: The mistakes docs/jobs.md names, in the order of its sample lines.
MISTAKES = [
    "  - op: bmode\n    dynamic_range: 50\n",
    "  - op: bmode\n    dynamic_range_db: 50\n  - op: roi_crop\n    margin_mm: 2\n"
    "  - op: scan_convert\n  - one_of:\n      - op: identity\n      - op: rotate90\n        k: 4\n",
    "  - op: bmode\n   dynamic_range_db: 50\n",  # line 8, one space too far
]


def test_the_sample_errors_in_docs_jobs_are_what_users_get(tmp_path):
    page = (ROOT / "docs" / "jobs.md").read_text()
    (block,) = re.findall(r"^```text\n(augengine plan: error: .*?)^```", page, re.S | re.M)
    documented = block.splitlines()
    assert len(documented) == len(MISTAKES)
    previous = Path.cwd()
    os.chdir(tmp_path)  # the page's file is `job.yaml` in the working directory
    try:
        for steps, expected in zip(MISTAKES, documented):
            Path("job.yaml").write_text(JOB.format(steps=steps))
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["plan", "job.yaml"])
            assert (code, stderr.getvalue()) == (2, expected + "\n"), f"docs/jobs.md: {expected}"
    finally:
        os.chdir(previous)


def test_run_help_says_where_it_runs(monkeypatch):
    """`augengine run --help`: $RAY_ADDRESS, when set, wins over the embedded Ray, as
    raycluster.connect does."""
    import ray

    from augengine import raycluster

    parser = cli.build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    (address,) = [a for a in run._actions if "--address" in a.option_strings]
    assert address.help == ("Ray cluster address (default: $RAY_ADDRESS when set, else an "
                            "embedded Ray on this machine)")
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **options: calls.append(options))
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.1:10001")
    assert raycluster.connect() is True
    assert calls[0]["address"] == "ray://10.0.0.1:10001"
