"""The README, run: every command of its ``bash`` blocks and every ``python`` snippet, read from
README.md itself, so a README change that breaks the tour breaks this test.

The commands run in order in a temporary folder that stands for the repository root (``jobs/`` is
the repository's own), as after ``make demo``: ``augengine train`` runs in a process that cannot
import NVIDIA DALI or Horovod, which ``make demo`` does not install. Where the README's sizes are
slow by nature the test runs the same command at a smaller size (:data:`SMALLER`, each change
named there and required to apply): 8 phantoms instead of 48, one epoch, 32-pixel network inputs.
Even so the tour takes minutes (three embedded Rays, NST training and inference, two torch DDP
ranks), so its tests are marked slow.
``augengine run`` and ``augengine train`` run as processes of their own, as from a shell; the
other ``augengine`` commands in this process (:func:`augengine.cli.main`). The cluster block
runs in tests/test_cluster.py, against its Ray head.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augengine import cli, store

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

#: The README's sizes and the smaller ones the test runs, per command: (the command's first two
#: words, flag, README value, test value); a flag not in the README (value None) is added.
SMALLER = [
    ("augengine simulate", "--n-benign", "24", "4"),
    ("augengine simulate", "--n-malignant", "24", "4"),
    ("python jobs/train_nst.py", "--epochs", "4", "1"),
    ("python jobs/train_nst.py", "--image-size", None, "32"),
    ("augengine train", "--image-size", "64", "32"),
    ("augengine train", "--epochs", "2", "1"),
    # 8 sources: 70/15/15 would leave no validation source.
    ("augengine train", "--fractions", None, "0.5 0.25 0.25"),
]
#: A process that cannot import these is a machine after ``make demo``.
NOT_INSTALLED = """
import sys

class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] == "horovod" or name.split(".")[:2] == ["nvidia", "dali"]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped."""
    return [words for line in block.replace("\\\n", " ").splitlines()
            if (words := shlex.split(line, comments=True))]


def _program(words: list[str]) -> str:
    """The first two words after any ``VAR=value`` prefixes: what runs."""
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)] if "=" in words[0] else words
    return " ".join(words[:2])


def smaller(words: list[str], used: set[int]) -> list[str]:
    """``words`` at the test's size (:data:`SMALLER`), marking the changes made in ``used``."""
    words = list(words)
    for number, (program, flag, value, small) in enumerate(SMALLER):
        if _program(words) != program:
            continue
        if value is None:
            assert flag not in words, f"README now gives {flag}: update SMALLER"
            words += [flag, *small.split()]
        else:
            at = words.index(flag) if flag in words else -1
            assert at >= 0 and words[at + 1] == value, \
                f"README's {program} no longer has {flag} {value}: update SMALLER"
            words[at + 1] = small
        used.add(number)
    return words


def _in_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``augengine ARGV`` run in ``cwd`` as the command line runs it; (exit status, output)."""
    output = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = cli.main(argv)
    finally:
        os.chdir(previous)
    return code, output.getvalue()


def _subprocess(argv: list[str], cwd: Path, extra_path: Path | None = None) -> tuple[int, str]:
    path = os.pathsep.join(str(p) for p in (extra_path, ROOT) if p)
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path})
    return done.returncode, done.stdout + done.stderr


def run_command(words: list[str], cwd: Path, demo_machine: Path) -> tuple[int, str]:
    """Run one README command the way a user's shell would, in ``cwd``."""
    program = _program(words)
    if program in ("augengine run", "augengine train"):
        # Processes of their own, as from a shell: `run` starts its embedded Ray in `cwd` (its
        # actors resolve the job's relative paths there), `train` launches ranks; both on a
        # machine without DALI and Horovod.
        return _subprocess([sys.executable, "-m", "augengine", *words[1:]], cwd, demo_machine)
    if words[0] == "augengine":
        return _in_process(words[1:], cwd)
    if words[0] == "python":
        return _subprocess([sys.executable, *words[1:]], cwd)
    if words[0] == "cat":
        return _subprocess(words, cwd)
    raise AssertionError(f"README command {shlex.join(words)!r}: tests/test_readme.py does not "
                         f"know how to run it")


# Commands the tour fixture does not run, and where each is covered instead.
ELSEWHERE = {
    "make demo": "test_make_demo_runs_the_demo",
    "make test": "test_make_test_runs_this_suite",
    "source .venv/bin/activate": "test_make_test_runs_this_suite (the venv the Makefile makes)",
    "ray job": "tests/test_cluster.py::test_readme_ray_job_submit_runs_as_written",
}


def _local(words: list[str]) -> bool:
    """Run by the tour fixture: not listed in ELSEWHERE and not on the cluster's /shared."""
    return _program(words) not in ELSEWHERE and not any("/shared/" in w for w in words)


@pytest.fixture(scope="module")
def demo_machine(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo-machine")
    (folder / "sitecustomize.py").write_text(NOT_INSTALLED)
    return folder


@pytest.fixture(scope="module")
def tour(tmp_path_factory, demo_machine):
    """Every local README command, in order, in a fresh folder: (folder, [(command, exit status,
    output)])."""
    folder = tmp_path_factory.mktemp("tour")
    (folder / "jobs").symlink_to(ROOT / "jobs")
    used: set[int] = set()
    results = []
    for block in blocks("bash"):
        for words in commands(block):
            if not _local(words):
                continue
            start = time.perf_counter()
            code, output = run_command(smaller(words, used), folder, demo_machine)
            results.append((shlex.join(words), code, output))
            print(f"{time.perf_counter() - start:6.1f} s  {shlex.join(words)}")
            if code:
                break  # later commands need this one's output
    return folder, results, used


def test_every_readme_command_has_a_runner():
    for block in blocks("bash"):
        for words in commands(block):
            program = _program(words)
            assert program in ELSEWHERE or words[0] in ("augengine", "python", "cat"), \
                f"README command {shlex.join(words)!r} is run by no test"


@pytest.mark.slow
def test_tour_commands_succeed(tour):
    folder, results, used = tour
    failed = [f"{command}: exit {code}\n{output[-2000:]}" for command, code, output in results
              if code != 0]
    assert failed == []
    assert used == set(range(len(SMALLER))), "SMALLER has changes the README gives no room for"
    ran = [command.split()[1] for command, _, _ in results if command.startswith("augengine")]
    for step in ("simulate", "plan", "run", "verify", "inspect", "preview", "train"):
        assert step in ran, f"the tour ran no `augengine {step}`"
    assert store.verify_store(folder / "demo-output" / "dataset.zarr") == []
    assert store.verify_store(folder / "demo-output" / "nst.zarr") == []
    for picture in ("demo-output/preview.png", "nst.png", "runs/cls/metrics.json",
                    "runs/cls/report.md", "runs/nst/checkpoint.pt"):
        assert (folder / picture).stat().st_size > 0, f"the tour did not write {picture}"


@pytest.mark.slow
def test_train_after_make_demo_says_in_one_line_what_it_uses(tour):
    _, results, _ = tour
    (output,) = [output for command, _, output in results if command.startswith("augengine train")]
    notes = [line for line in output.splitlines() if "not installed" in line]
    assert notes == ["NVIDIA DALI and Horovod are not installed: using --loader torch and "
                     "--backend ddp (install with the train extra and .ci/build-horovod.sh, "
                     "docs/install.md)"], output[-2000:]
    assert "on 2 rank(s)" in output, f"expected a 2-rank summary line: {output[-2000:]}"


@pytest.mark.slow
def test_python_snippets_run(tour):
    """Each ``python`` block, executed in the tour's folder after its commands."""
    folder, results, _ = tour
    assert all(code == 0 for _, code, _ in results), "the tour failed: see test_tour_commands"
    snippets = blocks("python")
    assert snippets, "README has no Python snippets"
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for number, snippet in enumerate(snippets):
            namespace: dict = {}
            exec(compile(snippet, f"README.md python block {number}", "exec"), namespace)
    finally:
        os.chdir(previous)


@pytest.mark.slow
def test_make_demo_runs_the_demo(ray_session, tmp_path):
    """`make demo` = the core install (no extras) + `augengine demo`; the demo at 4 phantoms."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo: (.*)\n\t(.*)$", makefile, re.M)
    assert recipe[1] == "$(VENV)/.installed-core" and recipe[2] == "$(VENV)/bin/augengine demo"
    assert re.search(r"^\t\$\(PIP\) install --quiet -e \.$", makefile, re.M), \
        "the demo's install must be the core, without extras"
    code, output = _in_process(["demo", "--out", str(tmp_path / "demo-output"),
                                "--n-benign", "2", "--n-malignant", "2"], ROOT)
    assert code == 0, output[-2000:]
    assert store.verify_store(tmp_path / "demo-output" / "dataset.zarr") == []
    assert (tmp_path / "demo-output" / "preview.png").stat().st_size > 0


def test_make_test_runs_this_suite():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^VENV \?= \.venv$", makefile, re.M), "README activates .venv"
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest -q -ra$", makefile, re.M)
