"""The full-float32 scope: TF32 off for cuDNN and cuBLAS inside, the caller's settings back after
(the flags exist, and are checked, on CPU builds too)."""
from __future__ import annotations

import doctest
from types import SimpleNamespace

import pytest
import torch

from augengine import precision
from augengine.precision import full_float32, tf32_switches

CONV, MATMUL = torch.backends.cudnn.conv, torch.backends.cuda.matmul


@pytest.fixture
def tf32_on():
    """The GPU default for convolutions plus TF32 matmuls, as a training script may set them."""
    saved = CONV.fp32_precision, MATMUL.fp32_precision
    CONV.fp32_precision, MATMUL.fp32_precision = "tf32", "tf32"
    yield
    CONV.fp32_precision, MATMUL.fp32_precision = saved


def test_scope_turns_tf32_off_for_convolutions_and_matmuls(tf32_on):
    with full_float32():
        inside = CONV.fp32_precision, MATMUL.fp32_precision
    assert inside == ("ieee", "ieee"), \
        f"inside the scope (conv, matmul): {inside}, expected ('ieee', 'ieee')"


def test_scope_restores_the_callers_settings_also_after_an_exception(tf32_on):
    with pytest.raises(ZeroDivisionError), full_float32():
        1 / 0
    after = CONV.fp32_precision, MATMUL.fp32_precision
    assert after == ("tf32", "tf32"), f"after the scope: {after}, expected ('tf32', 'tf32')"


def test_a_program_using_the_legacy_flags_reads_them_back_unchanged():
    saved = torch.backends.cudnn.allow_tf32, MATMUL.allow_tf32
    torch.backends.cudnn.allow_tf32, MATMUL.allow_tf32 = True, True
    try:
        with full_float32():
            pass
        after = torch.backends.cudnn.allow_tf32, MATMUL.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, MATMUL.allow_tf32 = saved
    assert after == (True, True), f"legacy (cudnn, matmul) allow_tf32 after the scope: {after}"


def test_torch_without_fp32_precision_gets_the_allow_tf32_flags():
    # torch < 2.9: only the legacy booleans exist.
    old = SimpleNamespace(cudnn=SimpleNamespace(allow_tf32=True),
                          cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)))
    got = [(owner, name, value) for owner, name, value in tf32_switches(old)]
    assert got == [(old.cudnn, "allow_tf32", False), (old.cuda.matmul, "allow_tf32", False)], got


def test_docstring_examples():
    result = doctest.testmod(precision)
    assert result.attempted > 0 and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed"
