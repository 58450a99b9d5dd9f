"""validate_sample and parse_label: the checks every reader applies, callable by the runner."""
from __future__ import annotations

import numpy as np
import pytest

from augengine.errors import InputError
from augengine.sources import Sample, validate_sample
from augengine.sources.validate import parse_label


def rf_sample(**changes):
    fields = {"sample_id": "s1", "source_id": "s1", "label": 0,
              "rf": np.ones((8, 4), np.int16), "roi": np.zeros((8, 4), bool),
              "meta": {"fs_hz": 40e6, "path": "in.mat"}}
    fields.update(changes)
    return Sample(**fields)


def test_good_samples_pass_unchanged():
    sample = rf_sample()
    assert validate_sample(sample) is sample
    image = Sample("i", "i", 2, image=np.zeros((3, 3), np.uint8), meta={"path": "a.png"})
    assert validate_sample(image) is image


@pytest.mark.parametrize("changes, expected", [
    ({"image": np.zeros((8, 4), np.uint8)}, "exactly one of rf and image must be set"),
    ({"rf": None}, "exactly one of rf and image must be set"),
    ({"label": 5}, "label must be one of [0, 1, 2], got 5"),
    ({"meta": {"path": "in.mat"}}, "sampling frequency fs_hz must be > 0, got None"),
    ({"meta": {"path": "in.mat", "fs_hz": float("nan")}},
     "sampling frequency fs_hz must be > 0, got nan"),
    ({"roi": np.zeros((8, 4), np.uint8)}, "ROI must be a bool array"),
    ({"roi": np.zeros((4, 4), bool)}, "ROI shape (4, 4) differs from data shape (8, 4)"),
    ({"rf": np.zeros((8, 4), np.float32)}, "RF is all zeros (Amax = 0)"),
    ({"rf": np.ones((8, 4), bool)}, "RF has dtype bool"),
    ({"rf": [[1, 2]]}, "RF must be an array, got list"),
])
def test_bad_rf_samples(changes, expected):
    with pytest.raises(InputError) as info:
        validate_sample(rf_sample(**changes))
    assert str(info.value).startswith(f"in.mat: sample 's1': {expected}"), str(info.value)


def test_bad_image_sample():
    sample = Sample("i", "i", 0, image=np.zeros((3, 3), np.float32), meta={"path": "a.png"})
    with pytest.raises(InputError, match=r"a.png: sample 'i': image must be a 2-D uint8 array, "
                                         r"got float32 array of shape \(3, 3\)"):
        validate_sample(sample)


@pytest.mark.parametrize("value, code", [
    (0, 0), (1, 1), (2, 2), ("benign", 0), ("Malignant", 1), (" normal ", 2), ("1", 1),
    (np.array([[1.0]]), 1), (np.int64(0), 0), (b"benign", 0), (np.array(["malignant"]), 1),
])
def test_parse_label(value, code):
    assert parse_label(value, "x") == code, f"{value!r} should parse to {code}"


@pytest.mark.parametrize("value", [3, -1, 0.5, True, "cyst", np.array([0, 1]), None])
def test_parse_label_rejects(value):
    with pytest.raises(InputError, match=r"x: label must be one of 0 \(benign\), 1 \(malignant\)"):
        parse_label(value, "x")
