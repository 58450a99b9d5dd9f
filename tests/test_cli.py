"""The ``augengine`` command: every verb, exit codes, and one-line errors for bad input."""
from __future__ import annotations

import errno
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import numpy as np
from PIL import Image

from augengine.cli import main
from tests.test_runner import small_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_file(phantom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(small_job(phantom_dir, root / "ds.zarr")))
    return path


@pytest.fixture(scope="module")
def store_path(ray_session, job_file):
    assert main(["run", str(job_file), "--quiet"]) == 0
    return job_file.parent / "ds.zarr"


def test_plan(job_file, capsys):
    assert main(["plan", str(job_file)]) == 0
    out = capsys.readouterr().out
    assert "x 6 variants" in out and "per label:" in out and "shards of up to 5" in out


def test_inspect_verify_preview(store_path, tmp_path, capsys):
    assert main(["inspect", str(store_path)]) == 0
    assert "by op chain:" in capsys.readouterr().out
    assert main(["verify", str(store_path)]) == 0
    assert "whole" in capsys.readouterr().out
    png = tmp_path / "grid.png"
    assert main(["preview", str(store_path), "--out", str(png), "--count", "8"]) == 0
    with Image.open(png) as image:
        assert image.size[0] >= 8 * 100 and image.mode == "RGB"


def test_verify_exits_1_on_a_broken_store(store_path, tmp_path, capsys):
    import shutil

    import zarr

    broken = tmp_path / "broken.zarr"
    shutil.copytree(store_path, broken)
    zarr.open_group(broken, mode="r+")["images"][0:5] = 1
    assert main(["verify", str(broken)]) == 1
    assert "NOT whole" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["plan", "missing.yaml"], "job file not found"),
    (["verify", "no-such-store"], "not an augengine store"),
    (["inspect", "no-such-store"], "not an augengine store"),
    (["plan", "no\x1b[2Jsuch.yaml"], "no\\x1b[2Jsuch.yaml: job file not found"),
    (["plan", "."], ".: cannot read the job file (Is a directory)"),
    (["simulate", "--n-benign", "1", "--n-malignant", "1", "--out", "x" * 5000],
     ": File name too long"),
])
def test_errors_are_one_line(argv, needle, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    assert needle in captured.err and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err


def test_missing_source_names_the_key(tmp_path, capsys):
    job = small_job(Path("/nonexistent"), tmp_path / "x.zarr")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["plan", str(path)]) == 2
    assert "sources[0].path: /nonexistent/phantoms.mat does not exist" in capsys.readouterr().err


def test_simulate(tmp_path, capsys):
    assert main(["simulate", "--n-benign", "1", "--n-malignant", "1", "--out",
                 str(tmp_path / "p"), "--seed", "3"]) == 0
    assert (tmp_path / "p" / "phantoms.mat").exists()
    assert len(list((tmp_path / "p" / "npz").glob("*.npz"))) == 2


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")])
def test_os_errors_are_one_line_naming_the_path(monkeypatch, code, reason, capsys):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/data/phantoms/phantoms.mat")

    monkeypatch.setattr("augengine.simulate.simulate_dataset", fail)
    assert main(["simulate", "--n-benign", "1", "--n-malignant", "1", "--out", "p"]) == 2
    assert capsys.readouterr().err == ("augengine simulate: error: /data/phantoms/phantoms.mat: "
                                       f"{reason}\n")


def test_plan_escapes_control_characters_from_the_job(phantom_dir, tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "\x1b]0;owned\x07.zarr")))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07.zarr: images" in out and "\x1b" not in out and "\x07" not in out


def test_inspect_escapes_the_job_name(store_path, tmp_path, capsys):
    import shutil

    import zarr

    store = tmp_path / "named.zarr"
    shutil.copytree(store_path, store)
    group = zarr.open_group(store, mode="r+")
    group.attrs["job"] = dict(group.attrs["job"], name="\x1b[2Jhello")
    assert main(["inspect", str(store)]) == 0
    out = capsys.readouterr().out
    assert "job            \\x1b[2Jhello\n" in out and "\x1b" not in out


def test_preview_count_below_one_is_one_line(store_path, tmp_path, capsys):
    assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png"), "--count", "0"]) == 2
    assert capsys.readouterr().err == ("augengine preview: error: count: must be >= 1 (samples to "
                                       "show), got 0\n")


@pytest.fixture
def drawn(monkeypatch):
    """Every text the preview draws, in order."""
    from PIL import ImageDraw

    texts = []
    draw_text = ImageDraw.ImageDraw.text
    monkeypatch.setattr(ImageDraw.ImageDraw, "text",
                        lambda self, xy, text, *a, **k: (texts.append(text),
                                                         draw_text(self, xy, text, *a, **k))[1])
    return texts


def _tiles(texts: list[str]) -> list[tuple[str, str]]:
    """Each tile's caption lines: (``LABEL #INDEX``, chain)."""
    first = [k for k, t in enumerate(texts) if re.fullmatch(r"\w+ #\d+", t)]
    return [(texts[k], texts[k + 1]) for k in first]


def test_preview_has_a_title_and_a_legend(store_path, tmp_path, drawn):
    from augengine.preview import render_grid

    png = tmp_path / "p.png"
    assert main(["preview", str(store_path), "--out", str(png), "--count", "8"]) == 0
    assert drawn[0].startswith(f"small: {store_path} - 8 shown of 24 samples")
    legend = " ".join(drawn[1:drawn.index(_tiles(drawn)[0][0])])
    assert "line 1 = label #index" in legend and "malignant red" in legend
    assert "NNdB = B-mode dynamic range" in legend and "JPEG" not in legend
    bare = render_grid([np.zeros((48, 48), np.uint8)] * 8, None, ["a\nb"] * 8, [(0, 0, 0)] * 8)
    with Image.open(png) as image:
        assert image.width == bare.width and image.height >= bare.height + 3 * 17


def test_preview_seed_picks_reproducibly(store_path, tmp_path, drawn):
    def pick(*seed):
        drawn.clear()
        assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png"),
                     "--count", "6", *seed]) == 0
        return _tiles(drawn)

    default = pick()
    assert len(default) == 6 and default == pick("--seed", "0") == pick("--seed", "0")
    assert pick("--seed", "1") != default

    # Without --count and --seed: the pick every preview made before --seed existed.
    from augengine.preview import pick_indices
    from augengine.store import open_store

    before = pick_indices(open_store(store_path).manifest.to_pylist(), 32, seed=0)
    drawn.clear()
    assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png")]) == 0
    assert [int(first.split("#")[1]) for first, _ in _tiles(drawn)] == before


def test_preview_where_filters(store_path, tmp_path, drawn):
    assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png"),
                 "--where", "label=1", "--where", "chain~rotate"]) == 0
    shown = _tiles(drawn)
    assert len(shown) == 4 and all(s.startswith("malignant #") and "rot" in chain
                                   for s, chain in shown), shown
    assert "4 match --where" in drawn[0]
    drawn.clear()
    assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png"),
                 "--where", "bmode.dynamic_range_db=40"]) == 0
    shown = _tiles(drawn)
    assert len(shown) == 12 and all(chain.startswith("40dB") for _, chain in shown), shown


@pytest.mark.parametrize("args, error", [
    (["--count", "2000"], "count: at most 1024 samples in one preview, got 2000"),
    (["--count", "25"], "count: 25 is more than the 24 samples that the store holds"),
    (["--count", "13", "--where", "label=1"],
     "count: 13 is more than the 12 samples that match --where"),
    (["--where", "lable=1"], "--where: unknown manifest column 'lable'; did you mean 'label'? "
                             "(or give op.param to match an op's parameter)"),
    (["--where", "label"], "--where: expected COLUMN=VALUE, COLUMN~TEXT or OP.PARAM=VALUE, "),
    (["--nst", "--where", "label=1"], "--where: filters the sample grid, not the --nst rows"),
])
def test_preview_refuses_absurd_requests_in_one_line(store_path, tmp_path, capsys, args, error):
    assert main(["preview", str(store_path), "--out", str(tmp_path / "p.png"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"augengine preview: error: {error}") and err.count("\n") == 1, err


def test_over_long_output_path_is_one_line(store_path, tmp_path, capsys):
    out = tmp_path / ("p" * 5000 + ".png")
    assert main(["preview", str(store_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"augengine preview: error: {out}: File name too long\n"


def test_plan_into_a_closed_pipe_exits_quietly(phantom_dir, tmp_path):
    """`augengine plan JOB | head -1`: the reader is gone before the plan is printed."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(small_job(phantom_dir, tmp_path / "ds.zarr")))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "augengine", "plan", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert err.decode() == "" and proc.returncode == 141, err.decode()[-2000:]


def test_jobs_augment_reports_yaml_errors_with_line_and_column(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "jobs_augment", Path(__file__).resolve().parents[1] / "jobs" / "augment.py")
    augment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(augment)
    path = tmp_path / "job.yaml"
    path.write_text("name: t\nsources:\n  - {reader: oasbud, path: x.mat}\nsteps: [op: bmode]]\n")
    assert augment.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jobs/augment.py: error: {path} line 4 column 19: not valid YAML: ")
    assert err.count("\n") == 1, err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"augengine {importlib.metadata.version('augengine')}\n"


def test_schema_lets_an_editor_check_job_files(capsys):
    import jsonschema  # the test extra installs it: a missing one must fail, not skip
    assert main(["schema"]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    for name in ("demo.yaml", "nst_example.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load((jobs / name).read_text())))
    job = yaml.safe_load((jobs / "demo.yaml").read_text())
    for bad in ({"op": "bmode", "dynamic_range": 50}, {"op": "srad_seris"}):
        assert not validator.is_valid(dict(job, steps=[bad]))
    assert not validator.is_valid(dict(job, ouput=job["output"]))
