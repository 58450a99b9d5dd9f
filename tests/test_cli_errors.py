"""Issue 12's job errors, end to end: each ends the command with one line naming the key or file
(exit 2), never a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from augengine.cli import main
from tests.test_plan import paper_store  # noqa: F401 - a small store for preview

JOBS = Path(__file__).resolve().parents[1] / "jobs"


BMODE = [{"op": "bmode", "dynamic_range_db": 50}]


def job(mat: Path, source: dict | None = None, **changes) -> dict:
    """A valid job on the phantoms' .mat file, with these changes (None drops a key)."""
    data = {"sources": [{"reader": "oasbud", "path": str(mat), **(source or {})}],
            "steps": BMODE, "output": {"path": "out.zarr"}}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


# (case, the job file's data or YAML text, else the command line; what the error line says)
CASES = [
    ("misspelt op parameter", lambda mat: job(mat, steps=[{"op": "bmode", "dynamic_range": 50}]),
     None, "steps[0] (bmode): unknown parameter 'dynamic_range'; did you mean 'dynamic_range_db'?"),
    ("misspelt top-level key", lambda mat: job(mat, step=BMODE, steps=None),
     None, "unknown key 'step'; did you mean 'steps'?"),
    ("misspelt section", lambda mat: job(mat, ouput={"path": "o"}, output=None),
     None, "unknown key 'ouput'; did you mean 'output'?"),
    ("misspelt reader", lambda mat: job(mat, source={"reader": "bussi"}),
     None, "sources[0].reader: unknown reader 'bussi'; did you mean 'busi'?"),
    ("misspelt op", lambda mat: job(mat, steps=[*BMODE, {"op": "srad_seris"}]),
     None, "steps[1].op: unknown op 'srad_seris'; did you mean 'srad_series'?"),
    ("YAML syntax", lambda mat: "name: t\nsources:\n  - {reader: oasbud, path: x.mat}\n"
                                "steps: [op: bmode]]\n",
     None, "line 4 column 19: not valid YAML"),
    ("reader option typo", lambda mat: job(mat, source={"options": {"fs_Hz": 4e7}}),
     None, "sources[0] (oasbud): unknown option 'fs_Hz'; did you mean 'fs_hz'?"),
    (".mat read as BUSI", lambda mat: job(mat, source={"reader": "busi"}, steps=[]),
     None, "sources[0] (busi): {mat}: not a directory"),
    (".mat read as BUSI, then bmode", lambda mat: job(mat, source={"reader": "busi"}),
     None, "steps[0] (bmode): takes rf input but sources[0] (busi) reads images"),
    ("plan a folder", None, ["plan", str(JOBS)], f"{JOBS}: cannot read the job file"),
    ("preview --count 0", None, ["preview", "{store}", "--out", "x.png", "--count", "0"],
     "count: must be >= 1"),
    ("verify no store", None, ["verify", "/no/such/path"],
     "/no/such/path: not an augengine store"),
    ("inspect no store", None, ["inspect", "/no/such/path"],
     "/no/such/path: not an augengine store"),
]


@pytest.mark.parametrize("make_job, argv, needle", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_error_is_one_line_naming_its_cause(make_job, argv, needle, phantom_dir,
                                                 paper_store, tmp_path, monkeypatch,  # noqa: F811
                                                 capsys):
    monkeypatch.chdir(tmp_path)
    mat = (phantom_dir / "phantoms.mat").resolve()
    if make_job is not None:
        data = make_job(mat)
        path = tmp_path / "job.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        argv = ["plan", str(path)]
    argv = [arg.format(store=paper_store) for arg in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"augengine {argv[0]}: error: ") and err.count("\n") == 1, err
    assert needle.format(mat=mat) in err, err
