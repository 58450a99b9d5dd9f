"""RF scans in .npz files: members, defaults, directories and every bad input."""
from __future__ import annotations

import numpy as np
import pytest

from augengine.sources import UNKNOWN_LABEL, discover, load_sample, read_oasbud, read_rf_npz
from tests.sources.helpers import one_line_error as _error

SHAPE = (32, 8)


def rf(seed=0):
    return np.random.default_rng(seed).integers(-2000, 2000, SHAPE).astype(np.int16)


def write(path, **members):
    contents = {"rf": rf(), "fs_hz": 40e6, "label": 0}
    contents.update(members)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})
    return path


def test_minimal_file_uses_documented_defaults(tmp_path):
    path = write(tmp_path / "scan7.npz")
    (sample,) = read_rf_npz(path)
    assert (sample.sample_id, sample.source_id, sample.label) == ("scan7", "scan7", 0)
    assert np.array_equal(sample.rf, rf()) and sample.rf.dtype == np.int16
    assert sample.roi is None
    assert (sample.meta["fs_hz"], sample.meta["c_m_s"], sample.meta["pitch_m"],
            sample.meta["fc_hz"]) == (40e6, 1540.0, None, None), sample.meta
    assert sample.meta["path"] == str(path)


def test_all_members(tmp_path):
    mask = np.zeros(SHAPE, bool)
    mask[4:9, 1:3] = True
    path = write(tmp_path / "x.npz", roi=mask.astype(np.uint8), c_m_s=1500.0, pitch_m=3e-4,
                 fc_hz=10e6, label="malignant", sample_id="case1/rf2", source_id="case1",
                 rf=rf().astype(np.float32))
    (sample,) = read_rf_npz(path)
    assert (sample.sample_id, sample.source_id, sample.label) == ("case1/rf2", "case1", 1)
    assert sample.roi.dtype == np.bool_ and sample.roi.sum() == 10, sample.roi.sum()
    assert (sample.meta["c_m_s"], sample.meta["pitch_m"], sample.meta["fc_hz"]) == \
        (1500.0, 3e-4, 10e6)
    assert sample.rf.dtype == np.float32


def test_directory_is_read_in_name_order(tmp_path):
    for name, label in (("b", 1), ("a", 0), ("c", 2)):
        write(tmp_path / f"{name}.npz", label=label)
    (tmp_path / "readme.txt").write_text("not a scan")
    samples = read_rf_npz(tmp_path)
    assert [(s.sample_id, s.label) for s in samples] == [("a", 0), ("b", 1), ("c", 2)]


def test_simulator_npz_matches_mat(tmp_path):
    from augengine.simulate import simulate_dataset

    simulate_dataset(1, 0, tmp_path, seed=1)
    (from_npz,) = read_rf_npz(tmp_path / "npz")
    (from_mat,) = read_oasbud(tmp_path / "phantoms.mat")
    assert from_npz.sample_id == from_mat.sample_id == "benign_000/rf1"
    assert from_npz.source_id == from_mat.source_id == "benign_000"
    assert np.array_equal(from_npz.rf, from_mat.rf) and np.array_equal(from_npz.roi, from_mat.roi)
    for key in ("fs_hz", "fc_hz", "c_m_s", "pitch_m"):
        assert from_npz.meta[key] == from_mat.meta[key], key


@pytest.mark.parametrize("members, expected", [
    ({"fs_hz": None}, "missing sampling frequency 'fs_hz'"),
    ({"label": None}, "missing 'label'"),
    ({"rf": None}, "no 'rf' array in the file (members: fs_hz, label)"),
    ({"fs_hz": np.array([1.0, 2.0])}, "fs_hz must be one finite real number"),
    ({"fs_hz": -5.0}, "sampling frequency fs_hz must be > 0, got -5.0"),
    ({"label": "cyst"}, "label must be one of 0 (benign), 1 (malignant), 2 (normal), got"),
    ({"rf": rf().astype(np.complex128)}, "RF has dtype complex128"),
    ({"rf": np.array(["a", "b"])}, "RF has dtype <U1"),
    ({"rf": np.ones(10)}, "RF must be 2-D (depth samples, lines), got shape (10,)"),
    ({"rf": np.full(SHAPE, np.inf)}, "RF contains 256 NaN/Inf values"),
    ({"rf": np.zeros(SHAPE)}, "RF is all zeros (Amax = 0)"),
    ({"roi": np.ones((3, 3))}, "ROI shape (3, 3) differs from data shape (32, 8)"),
])
def test_bad_members(tmp_path, members, expected):
    path = write(tmp_path / "bad.npz", **members)
    message = _error(lambda: read_rf_npz(path))
    assert message.startswith(f"{path}: sample 'bad': ") and expected in message, message


def test_truncated_file_is_listed_and_raises_alone(tmp_path):
    write(tmp_path / "a.npz")
    good = write(tmp_path / "c.npz").read_bytes()
    (tmp_path / "b.npz").write_bytes(good[: len(good) // 2])
    refs = discover("rf_npz", str(tmp_path))
    assert [(r.sample_id, r.label) for r in refs] == [("a", 0), ("b", UNKNOWN_LABEL), ("c", 0)]
    assert load_sample(refs[0]).sample_id == "a" and load_sample(refs[2]).sample_id == "c"
    message = _error(lambda: load_sample(refs[1]))
    assert f"{tmp_path / 'b.npz'}: cannot read as a NumPy .npz file" in message, message


def test_missing_path_and_empty_directory(tmp_path):
    assert "no such file or directory" in _error(lambda: read_rf_npz(tmp_path / "nope.npz"))
    assert "holds no .npz files" in _error(lambda: read_rf_npz(tmp_path))
