"""SRAD reference (NumPy): equations, q0 modes, stability bound, batch/series, B-mode wrapper."""
from __future__ import annotations

import math

import numpy as np
import pytest

from augengine.errors import ConfigError, InputError
from augengine.ops.despeckle import MAX_TIME_STEP, srad, srad_bmode, srad_series
from augengine.ops.reconstruction import log_compress


def literal_srad(image, iterations, time_step, q0sq_at):
    """Yu & Acton's explicit scheme written term by term (float64), as the spec states it.

    ``q0sq_at(iteration, J)`` returns q0^2 for that iteration.
    """
    J = np.asarray(image, dtype=np.float64).copy()
    for iteration in range(iterations):
        padded = np.pad(J, 1, mode="edge")
        dN = padded[:-2, 1:-1] - J
        dS = padded[2:, 1:-1] - J
        dW = padded[1:-1, :-2] - J
        dE = padded[1:-1, 2:] - J
        G2 = (dN**2 + dS**2 + dW**2 + dE**2) / J**2
        L = (dN + dS + dW + dE) / J
        q2 = (0.5 * G2 - L**2 / 16) / (1 + 0.25 * L) ** 2
        q0sq = q0sq_at(iteration, J)
        c = np.clip(1 / (1 + (q2 - q0sq) / (q0sq * (1 + q0sq))), 0, 1)
        c_pad = np.pad(c, 1, mode="edge")
        D = c * (dN + dW) + c_pad[2:, 1:-1] * dS + c_pad[1:-1, 2:] * dE
        J = J + time_step / 4 * D
    return J


def cov(region) -> float:
    return float(region.std() / region.mean())


def cov_sq(region) -> float:
    return float(region.var() / region.mean() ** 2)


@pytest.fixture
def speckle(rng):
    """Fully developed speckle intensity: exponential, coefficient of variation 1."""
    return rng.exponential(1.0, (40, 48)) + 0.05


# --- equations ---------------------------------------------------------------------------------


def test_hand_computed_3x3():
    # Centre 2, rest 1, q0 = 0.5 (a = 0.3125, b = 0.0625), dt = 0.5 (k = 1/8).
    # c: centre q^2 = 1 -> 5/17; N/W edge pixels q^2 = 0.28 -> 0.9124 (S/E ones too); corners 1.
    # centre: 2 + (5/17 * (-2) + 0.9124 * (-1) * 2) / 8 = 1.698368
    # (0,1) and (1,0): 1 + 5/17 / 8 = 1.036765;  (2,1) and (1,2): 1 + 0.912409 / 8 = 1.114051
    image = np.ones((3, 3))
    image[1, 1] = 2.0
    edge = 0.3125 / (0.28 + 0.0625)
    expected = np.array(
        [
            [1.0, 1 + 5 / 17 / 8, 1.0],
            [1 + 5 / 17 / 8, 2 + (-2 * 5 / 17 - 2 * edge) / 8, 1 + edge / 8],
            [1.0, 1 + edge / 8, 1.0],
        ]
    )
    out = srad(image, 1, time_step=0.5, q0=0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-12, err_msg="3x3 bright centre, q0=0.5")
    assert out.sum() == pytest.approx(10.0, rel=1e-12), "the scheme conserves the image sum"


@pytest.mark.parametrize("q0", [None, 0.4], ids=["q0-estimated", "q0-fixed"])
@pytest.mark.parametrize("time_step", [0.25, 1.0])
def test_matches_literal_equations(speckle, q0, time_step):
    iterations = 7
    if q0 is None:
        q0sq_at = lambda iteration, J: cov_sq(J)  # noqa: E731 - whole image, every iteration
    else:
        q0sq_at = lambda iteration, J: q0**2  # noqa: E731
    expected = literal_srad(speckle, iterations, time_step, q0sq_at)
    out = srad(speckle, iterations, time_step=time_step, q0=q0)
    np.testing.assert_allclose(
        out,
        expected,
        rtol=1e-10,
        err_msg=f"speckle 40x48, {iterations} iterations, dt={time_step}, q0={q0}",
    )


@pytest.mark.parametrize("q0", [None, 0.5])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (16, 16), (3, 5, 4)])
def test_constant_image_is_fixed_point(shape, q0):
    image = np.full(shape, 37.5, dtype=np.float32)
    out = srad(image, 12, q0=q0)
    np.testing.assert_array_equal(out, image, err_msg=f"constant 37.5 {shape}, q0={q0}")


def test_iterations_zero_returns_input(speckle):
    np.testing.assert_allclose(srad(speckle, 0), speckle, rtol=1e-15, err_msg="0 iterations")


@pytest.mark.parametrize("time_step", [0.5, MAX_TIME_STEP])
def test_maximum_principle(speckle, time_step):
    out = srad(speckle, 40, time_step=time_step, q0=2.0)
    assert out.min() >= speckle.min() and out.max() <= speckle.max(), (
        f"dt={time_step}: output range [{out.min():.4g}, {out.max():.4g}] leaves the input "
        f"range [{speckle.min():.4g}, {speckle.max():.4g}]"
    )


# --- properties --------------------------------------------------------------------------------


def test_speckle_cov_falls_monotonically(rng):
    image = rng.exponential(1.0, (64, 64)).astype(np.float32)
    series = srad_series(image, scales=6, iterations_per_scale=5)
    values = [cov(image[8:-8, 8:-8])] + [cov(s[8:-8, 8:-8]) for s in series]
    assert all(b < a for a, b in zip(values, values[1:])), (
        f"CoV of the central 48x48 region after 0, 5, ..., 30 iterations must fall strictly: "
        f"{np.round(values, 4)}"
    )
    assert values[-1] < 0.3, f"CoV after 30 iterations {values[-1]:.3f}, expected < 0.3 (from ~1)"


@pytest.mark.parametrize("dark_side", ["east", "west"])
def test_step_edge_kept(dark_side):
    """100:1 intensity step under exponential speckle, q0 from a homogeneous ROI, 100 iterations.

    Measured (seed 1): the step keeps 0.88 of its contrast when the dark side is east (the
    face flux uses c of the east pixel, which sits on the dark side where q is large) and 0.35
    when the dark side is west (the bright pixel next to the edge has q^2 <= 7/9); linear
    diffusion (c = 1) keeps 0.15. The whole-image q0 default also keeps 0.15: its q0 is
    dominated by the step itself. Speckle CoV in the bright region falls from 1.0 to <= 0.1.
    """
    size = 64
    speckle = np.random.default_rng(1).exponential(1.0, (size, size))
    clean = np.full((size, size), 100.0)
    if dark_side == "east":
        clean[:, size // 2 :] = 1.0
        bright = (slice(8, -8), slice(4, size // 2 - 6))
    else:
        clean[:, : size // 2] = 1.0
        bright = (slice(8, -8), slice(size // 2 + 6, size - 4))
    image = clean * speckle

    def contrast(out):
        inner = out[8:-8]
        left = inner[:, size // 2 - 2 : size // 2].mean()
        right = inner[:, size // 2 : size // 2 + 2].mean()
        return abs(left - right) / 99.0

    kept = contrast(srad(image, 100, roi=bright))
    linear = contrast(srad(image, 100, q0=1e3))
    minimum = 0.8 if dark_side == "east" else 0.3
    assert kept >= minimum, (
        f"dark side {dark_side}: contrast kept {kept:.3f}, expected >= {minimum}"
    )
    assert linear <= 0.2, f"linear diffusion keeps {linear:.3f} of the step, expected <= 0.2"
    smooth = srad(image, 100, roi=bright)[bright]
    assert cov(smooth) < 0.15, f"dark side {dark_side}: bright-region CoV {cov(smooth):.3f} >= 0.15"


# --- q0 modes ----------------------------------------------------------------------------------


def test_fixed_q0_is_constant(speckle):
    chained = speckle
    for _ in range(4):
        chained = srad(chained, 1, q0=0.6)
    np.testing.assert_allclose(
        srad(speckle, 4, q0=0.6), chained, rtol=1e-12, err_msg="q0=0.6: 4 steps vs 4 x 1 step"
    )


def test_roi_estimate_is_region_var_over_mean_squared(speckle):
    roi = (slice(5, 25), slice(10, 40))
    q0 = math.sqrt(cov_sq(speckle[roi]))
    np.testing.assert_allclose(
        srad(speckle, 1, roi=roi),
        srad(speckle, 1, q0=q0),
        rtol=1e-12,
        err_msg=f"roi estimate must be var/mean^2 of speckle[5:25, 10:40] (q0 = {q0:.4f})",
    )
    assert not np.allclose(srad(speckle, 1, roi=roi), srad(speckle, 1), rtol=1e-9), (
        "the ROI estimate must differ from the whole-image estimate on this image"
    )


def test_roi_estimate_is_renewed_every_iteration(speckle):
    roi = (slice(0, 20), slice(0, 24))
    chained = speckle
    for _ in range(5):
        chained = srad(chained, 1, q0=math.sqrt(cov_sq(chained[roi])))
    np.testing.assert_allclose(
        srad(speckle, 5, roi=roi), chained, rtol=1e-12, err_msg="roi q0 re-estimated each step"
    )


@pytest.mark.parametrize("q0", [0.8, None], ids=["q0-fixed", "q0-estimated"])
def test_rho_decay(speckle, q0):
    rho, dt = 0.3, 0.5
    start = q0 if q0 is not None else math.sqrt(cov_sq(speckle))
    chained = speckle
    for iteration in range(4):
        chained = srad(chained, 1, time_step=dt, q0=start * math.exp(-rho * iteration * dt))
    np.testing.assert_allclose(
        srad(speckle, 4, time_step=dt, q0=q0, rho=rho),
        chained,
        rtol=1e-12,
        err_msg=f"q0(t) = {start:.4f} exp(-{rho} t), t = iteration * {dt}",
    )


def test_rho_zero_keeps_initial_estimate(speckle):
    q0 = math.sqrt(cov_sq(speckle))
    np.testing.assert_allclose(
        srad(speckle, 6, rho=0.0), srad(speckle, 6, q0=q0), rtol=1e-12, err_msg="rho=0"
    )


# --- stability bound and parameters -------------------------------------------------------------


@pytest.mark.parametrize("time_step", [1.0001, 2.0, 0.0, -0.5, float("nan"), "fast"])
def test_time_step_outside_bound_is_rejected(speckle, time_step):
    with pytest.raises(ConfigError, match="time_step"):
        srad(speckle, 1, time_step=time_step)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"iterations": -1}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"iterations": True}, "iterations"),
        ({"q0": 0.0}, "q0"),
        ({"q0": -1.0}, "q0"),
        ({"q0": float("inf")}, "q0"),
        ({"rho": -0.1}, "rho"),
        ({"roi": slice(0, 4)}, "roi"),
        ({"roi": (slice(0, 4), 3)}, "roi"),
        ({"roi": (slice(5, 5), slice(0, 4))}, "roi rows"),
        ({"roi": (slice(0, 4), slice(0, 8, 2))}, "roi cols"),
        ({"roi": (slice(100, 200), slice(0, 4))}, "roi rows"),
    ],
)
def test_bad_parameters_raise_config_error(speckle, kwargs, key):
    kwargs = {"iterations": 3, **kwargs}
    with pytest.raises(ConfigError, match=key):
        srad(speckle, **kwargs)


def test_series_rejects_bad_counts_and_options(speckle):
    with pytest.raises(ConfigError, match="scales"):
        srad_series(speckle, scales=0)
    with pytest.raises(ConfigError, match="iterations_per_scale"):
        srad_series(speckle, iterations_per_scale=0)
    with pytest.raises(ConfigError, match="unknown SRAD option"):
        srad_series(speckle, q0_estimate="roi")


# --- input validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "image 2 of the batch contains NaN or Inf"),
        (np.inf, "image 2 of the batch contains NaN or Inf"),
        (-0.25, "image 2 of the batch has negative values \\(min -0.25\\)"),
    ],
)
def test_bad_pixels_name_the_image(rng, bad, message):
    batch = rng.exponential(1.0, (4, 8, 8))
    batch[2, 3, 5] = bad
    with pytest.raises(InputError, match=message):
        srad(batch, 2)


def test_all_zero_image_is_rejected():
    with pytest.raises(InputError, match="image is all zeros"):
        srad(np.zeros((8, 8)), 2)


@pytest.mark.parametrize(
    "image",
    [
        np.ones(5),
        np.ones((2, 2, 3, 3)),
        np.ones((0, 4)),
        np.ones((4, 4), complex),
        np.ones((4, 4), bool),
    ],
    ids=["1-D", "4-D", "empty", "complex", "bool"],
)
def test_bad_arrays_raise_input_error(image):
    with pytest.raises(InputError, match="srad: image"):
        srad(image, 1)


def test_zero_pixels_are_floored(rng):
    image = rng.exponential(1.0, (24, 24))
    image[:, :8] = 0.0  # black background
    out = srad(image, 20)
    assert np.isfinite(out).all(), "zeros must not produce NaN/Inf"
    assert out.min() >= 1e-12 * image.max() * (1 - 1e-9), (
        f"zeros are floored at 1e-12 * max = {1e-12 * image.max():.3g}, got min {out.min():.3g}"
    )


# --- dtypes, batches, series -------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, expected",
    [(np.float64, np.float64), (np.float32, np.float32), (np.float16, np.float32),
     (np.uint8, np.float32), (np.int16, np.float32)],
)
def test_dtype_and_shape(dtype, expected):
    image = (np.arange(1, 31).reshape(5, 6) % 7 + 1).astype(dtype)
    out = srad(image, 3)
    assert isinstance(out, np.ndarray) and out.dtype == expected and out.shape == (5, 6), (
        f"{np.dtype(dtype).name} in: got {type(out).__name__} {out.dtype} {out.shape}, "
        f"expected numpy {np.dtype(expected).name} (5, 6)"
    )


@pytest.mark.parametrize("options", [{}, {"q0": 0.7}, {"roi": (slice(2, 12), slice(3, 15))}])
def test_batch_equals_per_image_loop(rng, options):
    # Different brightness and speckle per image: the per-image q0 estimate must stay per image.
    batch = np.stack(
        [s * rng.exponential(1.0, (20, 24)) for s in (1.0, 50.0, 0.01)]
    ).astype(np.float32)
    out = srad(batch, 9, **options)
    for index, image in enumerate(batch):
        np.testing.assert_allclose(
            out[index], srad(image, 9, **options), rtol=2e-6,
            err_msg=f"image {index} of the batch vs alone, options {options}",
        )


@pytest.mark.parametrize("shape", [(30, 34), (2, 30, 34)])
def test_series_snapshots_equal_srad(rng, shape):
    image = rng.exponential(1.0, shape).astype(np.float32)
    series = srad_series(image, scales=3, iterations_per_scale=4, time_step=0.75, rho=0.1)
    expected_shape = shape[:-2] + (3,) + shape[-2:]
    assert series.shape == expected_shape and series.dtype == np.float32, (
        f"series of {shape}: got {series.shape} {series.dtype}, expected {expected_shape} float32"
    )
    for scale in range(3):
        np.testing.assert_array_equal(
            series[..., scale, :, :],
            srad(image, 4 * (scale + 1), time_step=0.75, rho=0.1),
            err_msg=f"snapshot {scale} vs srad with {4 * (scale + 1)} iterations",
        )


def test_series_default_is_seed_parameters(rng):
    image = rng.exponential(1.0, (12, 12))
    series = srad_series(image)
    assert series.shape == (8, 12, 12), f"default series shape {series.shape}, expected (8, 12, 12)"
    np.testing.assert_array_equal(series[-1], srad(image, 80), err_msg="scale 8 = 80 iterations")


# --- B-mode wrapper ----------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic_range_db", [40, 50, 60])
def test_bmode_zero_iterations_is_identity(dynamic_range_db):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = srad_bmode(grey, 0, dynamic_range_db)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(
        out, grey, err_msg=f"all 256 grey levels, DR {dynamic_range_db} dB"
    )


def test_bmode_reduces_speckle(rng):
    amplitude = np.sqrt(rng.exponential(1.0, (2, 48, 48)))  # Rayleigh speckle, two frames
    image = log_compress(amplitude, 50)
    out = srad_bmode(image, 30, 50)
    assert out.shape == image.shape and out.dtype == np.uint8
    for frame in range(2):
        before, after = image[frame].astype(float).std(), out[frame].astype(float).std()
        assert after < 0.5 * before, (
            f"frame {frame}: grey-level std {after:.2f} after 30 iterations, expected < half of "
            f"{before:.2f}"
        )


def test_bmode_rejects_non_uint8():
    with pytest.raises(InputError, match="uint8"):
        srad_bmode(np.ones((8, 8), np.float32), 3, 50)
    with pytest.raises(ConfigError, match="dynamic_range_db"):
        srad_bmode(np.ones((8, 8), np.uint8), 3, -3)


def test_series_pick_is_the_series_indexed(rng):
    from augengine.ops.despeckle import srad_series_bmode, srad_series_bmode_pick
    from augengine.ops.reconstruction import log_compress

    grey = log_compress(np.sqrt(rng.exponential(1.0, (2, 20, 24))), 50)
    series = srad_series_bmode(grey, 50, 3, 2)
    picked = srad_series_bmode_pick(grey, 50, [(1, 2), (0, 0), (1, 2)], 3, 2)
    for row, (image, scale) in enumerate([(1, 2), (0, 0), (1, 2)]):
        np.testing.assert_array_equal(picked[row], series[image, scale],
                                      err_msg=f"row {row}: image {image}, scale {scale}")
    with pytest.raises(ConfigError, match=r"pick \(2, 0\) is outside 2 images x 3 scales"):
        srad_series_bmode_pick(grey, 50, [(2, 0)], 3, 2)
