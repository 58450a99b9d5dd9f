"""Tests for augengine.ops.quality: Gaussian blur and JPEG re-encoding (seeds 003, 004)."""
from __future__ import annotations

import numpy as np
import pytest

from augengine.errors import ConfigError, InputError
from augengine.ops import gaussian_blur, jpeg
from tests.conftest import BACKENDS


def textured(rng, shape=(64, 72)):
    """Smooth anatomy-like gradient plus speckle, uint8."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 110 + 60 * np.sin(yy / 9.0) * np.cos(xx / 13.0)
    return np.clip(base * rng.rayleigh(1.0, shape) / 1.25, 0, 255).astype(np.uint8)


# --- gaussian_blur -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(17, 23), (16, 24)], ids=str)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.bool_],
                         ids=lambda d: np.dtype(d).name)
def test_blur_sigma_zero_is_identity(dtype, shape, rng):
    image = rng.integers(0, 2 if dtype == np.bool_ else 256, shape).astype(dtype)
    out = gaussian_blur(image, 0)
    assert out.dtype == image.dtype and out.shape == image.shape
    np.testing.assert_array_equal(out, image, err_msg=f"sigma 0 on {image.dtype} {shape}")


def test_blur_impulse_hand_values():
    impulse = np.zeros((15, 15), np.float64)
    impulse[7, 7] = 1.0
    out = gaussian_blur(impulse, 1.0)
    # 2-D Gaussian at the origin: 1 / (2 pi sigma^2) = 0.159155; one pixel over: times exp(-1/2).
    assert out[7, 7] == pytest.approx(1 / (2 * np.pi), abs=2e-4), f"centre {out[7, 7]}"
    assert out[7, 8] == pytest.approx(np.exp(-0.5) / (2 * np.pi), abs=2e-4), f"next {out[7, 8]}"
    assert out.sum() == pytest.approx(1.0, abs=1e-9), "blur must preserve the total intensity"
    grey = np.zeros((15, 15), np.uint8)
    grey[7, 7] = 255
    assert gaussian_blur(grey, 1.0)[7, 5:10].tolist() == [5, 25, 41, 25, 5], (
        "uint8 impulse 255, sigma 1: 255 * g(0) * [g(2), g(1), g(0), g(1), g(2)] rounded"
    )


@pytest.mark.parametrize("sigma", [0.5, 1.5, 4.0])
def test_blur_keeps_constant_and_lowers_variance(sigma, rng):
    flat = np.full((20, 31), 93, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, sigma), flat,
                                  err_msg=f"constant 93, sigma {sigma}")
    image = textured(rng)
    blurred = gaussian_blur(image, sigma)
    assert blurred.dtype == np.uint8
    assert blurred.std() < image.std(), (
        f"sigma {sigma}: std {blurred.std():.2f} should be below {image.std():.2f}"
    )
    assert abs(blurred.mean() - image.mean()) < 1.0, "reflecting borders keep the mean"


def test_blur_uint8_saturates_not_wraps():
    image = np.full((9, 9), 255, np.uint8)
    assert gaussian_blur(image, 2.0).min() == 255


@pytest.mark.parametrize("sigma, error", [(-1, ConfigError), (float("nan"), ConfigError),
                                          ("wide", ConfigError)])
def test_blur_bad_sigma(sigma, error):
    with pytest.raises(error) as raised:
        gaussian_blur(np.zeros((8, 8), np.uint8), sigma)
    assert "sigma" in str(raised.value) and "\n" not in str(raised.value)


def test_blur_wrong_rank():
    with pytest.raises(InputError, match="2-D"):
        gaussian_blur(np.zeros((4, 8, 8)), 1.0)


# --- jpeg ----------------------------------------------------------------------------------------


def test_jpeg_shape_dtype_and_determinism(rng):
    image = textured(rng, (33, 47))
    first, second = jpeg(image, 60), jpeg(image, 60)
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, second, err_msg="two encodes at quality 60 differ")
    assert not np.array_equal(first, image), "quality 60 should change a speckled image"


def test_jpeg_quality_ordering(rng):
    image = textured(rng)
    errors = {q: np.mean((jpeg(image, q).astype(float) - image) ** 2) for q in (5, 30, 60, 95)}
    assert errors[5] > errors[30] > errors[60] > errors[95], (
        f"mean squared error should fall as quality rises, got {errors}"
    )


def test_jpeg_flat_image_is_exact():
    image = np.full((16, 24), 128, np.uint8)
    np.testing.assert_array_equal(jpeg(image, 1), image, err_msg="flat 128 at quality 1")


@pytest.mark.parametrize("quality", [0, 96, 50.5, True, "60"])
def test_jpeg_bad_quality(quality):
    with pytest.raises(ConfigError) as raised:
        jpeg(np.zeros((8, 8), np.uint8), quality)
    assert "quality" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("image", [np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8)],
                         ids=["float32", "rgb"])
def test_jpeg_bad_image(image):
    with pytest.raises(InputError) as raised:
        jpeg(image, 50)
    assert "jpeg" in str(raised.value)


# --- backends ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xp", BACKENDS, indirect=True)
def test_backend_parity(xp, rng):
    image = textured(rng, (31, 40))
    for name, op in (("blur", lambda x: gaussian_blur(x, 1.5)), ("jpeg", lambda x: jpeg(x, 50))):
        result = op(xp.asarray(image))
        assert type(result).__module__.split(".")[0] == xp.__name__, f"{name}: module in != out"
        host = result.get() if hasattr(result, "get") else result
        assert np.abs(host.astype(int) - op(image)).max() <= 1, f"{name} on {xp.__name__}"
