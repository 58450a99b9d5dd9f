"""The shared argument checks: what they accept, what they return, and the one line they raise."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import augengine.checks
from augengine.checks import (check_choice, check_image, check_in_range, check_int, check_number,
                              check_per_image, check_positive_ints, check_tensor, describe)
from augengine.errors import ConfigError, InputError


def test_docstring_examples():
    result = doctest.testmod(augengine.checks, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} examples failed"


@pytest.mark.parametrize("value, low, high, message", [
    (True, 0, None, "n must be an integer >= 0, got True"),
    (1.5, 1, None, "n must be an integer >= 1, got 1.5"),
    (0, 1, None, "n must be an integer >= 1, got 0"),
    (np.int64(4), 0, 4, "n must be an integer >= 0 and < 4, got 4"),
    ("3", None, None, "n must be an integer, got '3'"),
])
def test_check_int_refuses(value, low, high, message):
    with pytest.raises(ConfigError, match=message):
        check_int(value, "n", low, high)


def test_check_int_returns_python_int():
    value = check_int(np.int32(3), "n", 0)
    assert value == 3 and type(value) is int
    with pytest.raises(ConfigError, match="width must be an integer >= 1, got -2"):
        check_positive_ints(depth=2, width=-2)


@pytest.mark.parametrize("value, bound, message", [
    ("abc", {}, "x must be a finite number, got 'abc'"),
    (float("nan"), {"nonnegative": True}, "x must be a finite number >= 0, got nan"),
    (0.0, {"positive": True}, r"x must be a finite number > 0, got 0.0"),
    (np.float64(-1.0), {"positive": True, "unit": "dB"},
     r"x must be a finite number > 0 \(dB\), got -1.0"),
])
def test_check_number_refuses(value, bound, message):
    with pytest.raises(ConfigError, match=message):
        check_number(value, "x", **bound)


def test_check_number_accepts_zero_when_nonnegative_and_converts():
    assert check_number(0, "x", nonnegative=True) == 0.0
    assert check_number("2.5", "x", positive=True) == 2.5


def test_range_and_choice():
    assert check_in_range(1, "alpha", 0, 1) == 1.0
    with pytest.raises(ConfigError, match=r"alpha must be a number in \[0, 1\], got True"):
        check_in_range(True, "alpha", 0, 1)
    assert check_choice("mean", "reduction", ("mean", "none")) == "mean"
    with pytest.raises(ConfigError, match="order must be one of 0, 1, got 3"):
        check_choice(3, "order", (0, 1))


def test_arrays_and_tensors():
    assert check_image([[1, 2]], "flip").shape == (1, 2)
    with pytest.raises(InputError, match=r"flip: expected a 2-D image \(H, W\), got shape \(2,\)"):
        check_image([1, 2], "flip")
    with pytest.raises(InputError, match="flip: image must be bool, integer or float"):
        check_image(np.array([["a"]]), "flip")
    with pytest.raises(ConfigError, match="blur: 2 images but 1 values of sigmas"):
        check_per_image([1.0], 2, "sigmas", "blur")
    assert describe(torch.zeros(2, 3)) == "torch.float32 tensor of shape (2, 3)"
    assert describe(np.zeros(2)) == "ndarray"
    with pytest.raises(InputError, match=r"f: expected a non-empty floating \(N, C\) tensor, "
                                         r"got torch.int64 tensor of shape \(2, 2\)"):
        check_tensor(torch.zeros(2, 2, dtype=torch.int64), "f", (2,), "(N, C)")
