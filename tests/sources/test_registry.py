"""discover/load_sample: every reader by name, lazy refs that pickle, per-sample failures."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augengine.errors import ConfigError, InputError
from augengine.simulate import simulate_dataset
from augengine.sources import READERS, SampleRef, discover, load_sample
from augengine.sources.registry import reader_options


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    simulate_dataset(1, 2, out, seed=2)
    return out


def test_reader_names():
    assert sorted(READERS) == ["busi", "dicom", "oasbud", "rf_npz", "store"]


def test_unknown_reader():
    allowed = "unknown reader 'png'; allowed: oasbud, rf_npz, busi, dicom, store"
    with pytest.raises(ConfigError, match=allowed):
        discover("png", "x")
    ref = SampleRef("png", "x", "", "a", "a", 0, False)
    with pytest.raises(ConfigError, match="unknown reader 'png'"):
        load_sample(ref)


def test_unknown_option_names_the_readers_options(phantoms):
    with pytest.raises(ConfigError) as info:
        discover("oasbud", str(phantoms / "phantoms.mat"), sampling_rate=40e6)
    assert str(info.value) == ("unknown option 'sampling_rate'; "
                               "allowed: fs_hz, fc_hz, c_m_s, pitch_m")


def test_reader_options_come_from_the_discover_functions():
    assert reader_options("oasbud") == ["fs_hz", "fc_hz", "c_m_s", "pitch_m"]
    assert reader_options("dicom") == ["label"]
    assert reader_options("busi") == []


def test_oasbud_options_travel_in_refs(phantoms, tmp_path):
    refs = discover("oasbud", str(phantoms / "phantoms.mat"), c_m_s=1480.0)
    assert [r.sample_id for r in refs] == ["benign_000/rf1", "malignant_000/rf1",
                                           "malignant_000/rf2"]
    # The simulator stores c_m_s in the file, which wins; an option absent from the file is kept.
    copy = pickle.loads(pickle.dumps(refs[2]))
    sample = load_sample(copy)
    assert sample.meta["c_m_s"] == 1540.0 and sample.sample_id == "malignant_000/rf2"
    assert sample.label == 1 and sample.roi.shape == sample.rf.shape


@pytest.mark.parametrize("reader, path", [("oasbud", "phantoms.mat"), ("rf_npz", "npz")])
def test_rf_readers_agree(phantoms, reader, path):
    refs = discover(reader, str(phantoms / path))
    samples = [load_sample(r) for r in refs]
    assert [s.sample_id for s in samples] == ["benign_000/rf1", "malignant_000/rf1",
                                              "malignant_000/rf2"]
    assert all(r.has_roi for r in refs) and [r.label for r in refs] == [0, 1, 1]
    assert all(s.rf.dtype == np.int16 for s in samples)


def test_image_readers_by_name(tmp_path):
    from tests.sources.test_dicom import GREY, write_dicom

    (tmp_path / "busi" / "benign").mkdir(parents=True)
    Image.fromarray(GREY).save(tmp_path / "busi" / "benign" / "x.png")
    write_dicom(tmp_path / "dcm" / "y.dcm", GREY)
    for reader, path, options in (("busi", "busi", {}), ("dicom", "dcm", {"label": "normal"})):
        (ref,) = discover(reader, str(tmp_path / path), **options)
        sample = load_sample(pickle.loads(pickle.dumps(ref)))
        assert np.array_equal(sample.image, GREY), f"{reader}: pixels differ"
        assert sample.label == (0 if reader == "busi" else 2)


def test_bad_sample_fails_alone(phantoms, tmp_path):
    for name in ("benign_000_rf1", "malignant_000_rf1"):
        (tmp_path / f"{name}.npz").write_bytes((phantoms / "npz" / f"{name}.npz").read_bytes())
    np.savez(tmp_path / "zeros.npz", rf=np.zeros((8, 4), np.int16), fs_hz=40e6, label=0)
    refs = discover("rf_npz", str(tmp_path))
    outcomes = {}
    for ref in refs:
        try:
            outcomes[ref.sample_id] = load_sample(ref).label
        except InputError as error:
            outcomes[ref.sample_id] = str(error)
    assert outcomes["benign_000/rf1"] == 0 and outcomes["malignant_000/rf1"] == 1
    assert outcomes["zeros"] == \
        f"{tmp_path / 'zeros.npz'}: sample 'zeros': RF is all zeros (Amax = 0)"


def test_refs_carry_absolute_paths(phantoms, tmp_path, monkeypatch):
    monkeypatch.chdir(phantoms)
    refs = discover("oasbud", "phantoms.mat") + discover("rf_npz", "npz")
    assert all(Path(r.path).is_absolute() for r in refs), [r.path for r in refs]
    monkeypatch.chdir(tmp_path)  # an actor may run elsewhere
    assert [load_sample(r).sample_id for r in refs[:1] + refs[-1:]] == \
        ["benign_000/rf1", "malignant_000/rf2"]
