"""OASBUD-layout .mat files: simulator round trip, acquisition metadata, every bad input."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from augengine.errors import ConfigError, InputError
from augengine.simulate import simulate_dataset
from augengine.sources import UNKNOWN_LABEL, discover, load_sample, read_oasbud
from augengine.sources.oasbud import _read_mat
from tests.sources.helpers import one_line_error as _error

SHAPE = (32, 8)


def rf(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).integers(-2000, 2000, shape).astype(np.int16)


def roi(shape=SHAPE):
    mask = np.zeros(shape, np.uint8)
    mask[8:20, 2:6] = 1
    return mask


def lesion(lesion_id, label=0, **fields):
    """One struct entry with two good scans; ``fields`` replace or add fields."""
    entry = {"id": lesion_id, "rf1": rf(1), "rf2": rf(2), "roi1": roi(), "roi2": roi(),
             "birads": "4a", "class": label}
    entry.update(fields)
    return entry


def write_mat(path, lesions, **variables):
    """Write an OASBUD-layout file; fields missing from a lesion are stored empty."""
    names = list(dict.fromkeys(name for entry in lesions for name in entry))
    data = np.empty((1, len(lesions)), dtype=[(name, object) for name in names])
    for i, entry in enumerate(lesions):
        data[0, i] = tuple(entry.get(name, np.zeros((0, 0))) for name in names)
    scipy.io.savemat(path, {"data": data, **variables})
    return path


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    simulate_dataset(2, 1, out, seed=5)
    return out


def test_round_trip_from_simulator(phantoms):
    samples = read_oasbud(phantoms / "phantoms.mat")
    ids = [s.sample_id for s in samples]
    assert ids == ["benign_000/rf1", "benign_000/rf2", "malignant_000/rf1"], ids
    assert [s.label for s in samples] == [0, 0, 1]
    assert [s.source_id for s in samples] == ["benign_000", "benign_000", "malignant_000"]
    for sample in samples:
        stored = np.load(phantoms / "npz" / (sample.sample_id.replace("/", "_") + ".npz"))
        assert sample.rf.dtype == np.int16 and np.array_equal(sample.rf, stored["rf"]), \
            f"{sample.sample_id}: RF differs from the simulator's npz"
        assert sample.roi.dtype == np.bool_ and np.array_equal(sample.roi, stored["roi"]), \
            f"{sample.sample_id}: ROI differs from the simulator's npz"
        # The file's values win over the keyword defaults (pitch default 0.3 mm, file 0.2 mm).
        assert sample.meta["pitch_m"] == 2e-4 and sample.meta["fc_hz"] == 7.5e6, sample.meta
        assert sample.meta["fs_hz"] == 40e6 and sample.meta["c_m_s"] == 1540.0
        assert sample.rf.flags["C_CONTIGUOUS"], f"{sample.sample_id}: RF not C-contiguous"
    assert samples[1].meta["scan"] == 2 and samples[2].meta["entry"] == 1
    assert samples[2].meta["birads"] in ("4c", "5"), samples[2].meta["birads"]


def test_keyword_defaults_when_file_has_no_acquisition(tmp_path):
    path = write_mat(tmp_path / "x.mat", [lesion("a")])
    sample = read_oasbud(path)[0]
    assert (sample.meta["fs_hz"], sample.meta["fc_hz"], sample.meta["c_m_s"],
            sample.meta["pitch_m"]) == (40e6, None, 1540.0, 3e-4), sample.meta
    assert read_oasbud(path, fs_hz=20e6, pitch_m=1e-4)[0].meta["fs_hz"] == 20e6


@pytest.mark.parametrize("option, value", [("fs_hz", -3.0), ("pitch_m", "0.3 mm"),
                                           ("c_m_s", None), ("fc_hz", float("inf"))])
def test_bad_acquisition_option_is_a_config_error(tmp_path, option, value):
    path = write_mat(tmp_path / "x.mat", [lesion("a")])
    with pytest.raises(ConfigError, match=f"oasbud option {option} must be a number > 0, got"):
        discover("oasbud", str(path), **{option: value})


def test_struct_field_wins_over_top_level_variable(tmp_path):
    path = write_mat(tmp_path / "x.mat", [lesion("a", fs_hz=30e6), lesion("b")], fs_hz=50e6)
    samples = read_oasbud(path)
    assert [s.meta["fs_hz"] for s in samples] == [30e6, 30e6, 50e6, 50e6]


def test_empty_rf2_means_single_scan_and_numeric_ids(tmp_path):
    path = write_mat(tmp_path / "x.mat", [lesion(7, rf2=np.zeros((0, 0), np.int16))])
    samples = read_oasbud(path)
    assert [s.sample_id for s in samples] == ["7/rf1"], [s.sample_id for s in samples]


def test_truncated_file(tmp_path, phantoms):
    data = (phantoms / "phantoms.mat").read_bytes()
    path = tmp_path / "cut.mat"
    path.write_bytes(data[: len(data) // 2])
    message = _error(lambda: read_oasbud(path))
    assert str(path) in message and "cannot read as a MATLAB .mat file" in message, message


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("hello, this is text")
    assert "cannot read as a MATLAB .mat file" in _error(lambda: read_oasbud(path))


def test_matlab_v73_file(tmp_path):
    path = tmp_path / "v73.mat"
    header = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM"
    path.write_bytes(header + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert "v7.3 (HDF5) files are not supported" in _error(lambda: read_oasbud(path))


def test_missing_file(tmp_path):
    assert "cannot open" in _error(lambda: read_oasbud(tmp_path / "absent.mat"))


def test_no_data_struct(tmp_path):
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"rf": rf()})
    message = _error(lambda: read_oasbud(path))
    assert "no struct array 'data'" in message and "variables: rf" in message, message


def test_missing_struct_fields(tmp_path):
    entry = lesion("a")
    del entry["rf2"], entry["roi2"]
    path = write_mat(tmp_path / "x.mat", [entry])
    message = _error(lambda: read_oasbud(path))
    assert "lacks field(s) rf2, roi2" in message, message


def test_duplicate_lesion_ids(tmp_path):
    path = write_mat(tmp_path / "x.mat", [lesion("a"), lesion("a")])
    assert "'a' appears at struct entries 0 and 1" in _error(lambda: read_oasbud(path))


@pytest.mark.parametrize("bad, expected", [
    ({"rf1": "abc"}, "RF has dtype <U3; expected real integers or floats"),
    ({"rf1": rf().astype(np.complex64)}, "RF has dtype complex64"),
    ({"rf1": np.ones((4, 4, 2), np.int16)},
     "RF must be 2-D (depth samples, lines), got shape (4, 4, 2)"),
    ({"rf1": np.where(roi() > 0, np.nan, 1.0)}, "RF contains 48 NaN/Inf values"),
    ({"rf1": np.zeros(SHAPE, np.int16)}, "RF is all zeros (Amax = 0)"),
    ({"roi1": np.ones((8, 8), np.uint8)}, "ROI shape (8, 8) differs from data shape (32, 8)"),
    ({"roi1": "x"}, "ROI has type <U1"),
    ({"class": "maybe"}, "label must be one of"),
    ({"rf1": np.zeros((0, 0), np.int16)}, "RF is empty"),
])
def test_bad_lesion_names_sample_and_others_still_load(tmp_path, bad, expected):
    path = write_mat(tmp_path / "x.mat", [lesion("good0"), lesion("bad", **bad),
                                          lesion("good2", label=1)])
    message = _error(lambda: read_oasbud(path))
    assert f"{path}: sample 'bad/rf1': {expected}" in message, message
    refs = discover("oasbud", str(path))
    assert [r.sample_id for r in refs] == ["good0/rf1", "good0/rf2", "bad/rf1", "bad/rf2",
                                           "good2/rf1", "good2/rf2"]
    loaded = {}
    for ref in refs:
        try:
            loaded[ref.sample_id] = load_sample(ref)
        except InputError:
            loaded[ref.sample_id] = None
    assert loaded["bad/rf1"] is None, "the bad scan loaded"
    for good in ("good0/rf1", "good0/rf2", "good2/rf1", "good2/rf2"):
        assert loaded[good] is not None, f"{good} did not load next to a bad lesion"
    assert loaded["good2/rf1"].label == 1


def test_unreadable_class_is_listed_with_unknown_label(tmp_path):
    path = write_mat(tmp_path / "x.mat", [lesion("a", **{"class": 7})])
    refs = discover("oasbud", str(path))
    assert {r.label for r in refs} == {UNKNOWN_LABEL}
    assert "label must be one of 0 (benign), 1 (malignant), 2 (normal), got" in \
        _error(lambda: load_sample(refs[0]))


def test_second_scan_of_a_file_is_served_from_cache(phantoms):
    path = str(phantoms / "phantoms.mat")
    _read_mat.cache_clear()
    refs = discover("oasbud", path)
    for ref in refs:
        load_sample(ref)
    info = _read_mat.cache_info()
    assert info.misses == 1 and info.hits == len(refs), \
        f"{path}: read {info.misses} times for {len(refs)} scans, expected once"
