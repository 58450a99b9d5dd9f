"""Tests for augengine.ops.reconstruction: envelope, log_compress, bmode (seed 001, Eq. 1)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from augengine.errors import ConfigError, InputError
from augengine.ops import (bmode, compress_envelope, compress_envelope_batch, envelope,
                           envelope_peaks, log_compress, peaks_error)
from tests.conftest import BACKENDS

FS_HZ = 40e6  # OASBUD sampling frequency
FC_HZ = 7.5e6


def _pulse(fs_hz=FS_HZ, fc_hz=FC_HZ, sigma_s=0.15e-6):
    """Gaussian-modulated cosine pulse (about 70 % fractional bandwidth at 7.5 MHz)."""
    t = np.arange(-4 * sigma_s, 4 * sigma_s, 1 / fs_hz)
    return np.exp(-(t**2) / (2 * sigma_s**2)) * np.cos(2 * np.pi * fc_hz * t)


def simulated_rf(rng, shape=(1024, 64), density=0.3, peak=8000):
    """Speckle-like int16 RF: sparse random scatterers convolved with a pulse along depth."""
    scatterers = rng.standard_normal(shape) * (rng.random(shape) < density)
    rf = scipy.signal.fftconvolve(scatterers, _pulse()[:, None], mode="same", axes=0)
    rf += 0.01 * rng.standard_normal(shape) * np.abs(rf).max()
    return np.round(rf / np.abs(rf).max() * peak).astype(np.int16)


def random_rf(rng, shape=(1024, 64)):
    return (rng.standard_normal(shape) * 2000).astype(np.int16)


def oracle_bmode(rf, dynamic_range_db):
    """scipy.signal.hilbert followed by Eq. 1 of seed 001, in float64, round half to even."""
    amplitude = np.abs(scipy.signal.hilbert(rf.astype(np.float64), axis=0))
    with np.errstate(divide="ignore"):
        a_log = 20 * np.log10(amplitude / amplitude.max())
    grey = (np.clip(a_log, -dynamic_range_db, 0) + dynamic_range_db) / dynamic_range_db * 255
    return np.rint(grey).astype(np.uint8)


# --- acceptance: agreement with scipy.signal.hilbert + the seed's formula ------------------------


@pytest.mark.parametrize("dynamic_range_db", [40, 50, 60])
@pytest.mark.parametrize("make_rf", [random_rf, simulated_rf], ids=["random", "simulated"])
def test_bmode_matches_scipy_hilbert_oracle(make_rf, dynamic_range_db, rng):
    rf = make_rf(rng)
    ours = bmode(rf, dynamic_range_db).astype(int)
    expected = oracle_bmode(rf, dynamic_range_db).astype(int)
    within_one = np.mean(np.abs(ours - expected) <= 1)
    exact = np.mean(ours == expected)
    assert within_one >= 0.999, (
        f"{make_rf.__name__} at {dynamic_range_db} dB: {within_one:.5%} of pixels within 1 grey "
        "level of scipy.signal.hilbert + Eq. 1, expected >= 99.9 %"
    )
    assert exact >= 0.99, f"{make_rf.__name__} at {dynamic_range_db} dB: only {exact:.4%} exact"


# --- envelope ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [256, 255], ids=["even", "odd"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_envelope_of_pure_tone_is_flat(n, dtype, tol):
    periods = 17
    line = 3.0 * np.sin(2 * np.pi * periods * np.arange(n) / n + 0.3)
    env = envelope(line.astype(dtype))
    assert np.max(np.abs(env - 3.0)) < 3.0 * tol, (
        f"sine of {periods} whole periods, n={n}, {np.dtype(dtype).name}: envelope should be 3.0 "
        f"everywhere, got range [{env.min()}, {env.max()}]"
    )


def test_envelope_of_gaussian_pulse_is_its_gaussian():
    t = np.arange(1024, dtype=np.float64)
    gaussian = np.exp(-((t - 500.0) ** 2) / (2 * 20.0**2))
    pulse = gaussian * np.cos(2 * np.pi * 0.125 * t)  # carrier 5 cycles/40 samples
    env = envelope(pulse)
    assert np.max(np.abs(env - gaussian)) < 1e-9, (
        "Gaussian-modulated pulse (sigma 20 samples, carrier 0.125 cycles/sample): envelope "
        f"deviates from the Gaussian by {np.max(np.abs(env - gaussian)):.3g}, expected < 1e-9"
    )


@pytest.mark.parametrize("shape", [(512, 16), (511, 7), (1, 5), (2, 3)], ids=str)
def test_envelope_matches_scipy_hilbert(shape, rng):
    rf = rng.standard_normal(shape)
    expected = np.abs(scipy.signal.hilbert(rf, axis=0))
    np.testing.assert_allclose(envelope(rf), expected, rtol=1e-10, atol=1e-12,
                               err_msg=f"float64 RF {shape} vs |scipy.signal.hilbert|")
    np.testing.assert_allclose(envelope(rf.astype(np.float32)), expected, rtol=0,
                               atol=2e-6 * expected.max(),
                               err_msg=f"float32 RF {shape} vs |scipy.signal.hilbert|")


@pytest.mark.parametrize(
    "dtype, expected",
    [(np.int16, np.float32), (np.uint8, np.float32), (np.float16, np.float32),
     (np.float32, np.float32), (np.float64, np.float64)],
    ids=lambda v: np.dtype(v).name,
)
def test_envelope_dtype(dtype, expected, rng):
    rf = rng.integers(0, 100, (64, 4)).astype(dtype)
    env = envelope(rf)
    assert env.dtype == expected, (
        f"{np.dtype(dtype).name} RF: envelope dtype {env.dtype}, expected {np.dtype(expected).name}"
    )
    assert env.shape == rf.shape


def test_envelope_int16_equals_float_envelope(rng):
    rf = simulated_rf(rng, shape=(512, 8))
    np.testing.assert_allclose(envelope(rf), envelope(rf.astype(np.float64)),
                               rtol=0, atol=1e-5 * 8000,
                               err_msg="int16 RF vs the same RF as float64")


def test_envelope_batched_equals_per_frame(rng):
    frames = rng.standard_normal((3, 2, 128, 9))
    batched = envelope(frames)
    for index in np.ndindex(3, 2):
        np.testing.assert_array_equal(batched[index], envelope(frames[index]),
                                      err_msg=f"frame {index} of a (3, 2, 128, 9) stack")


def test_envelope_axis_1_is_the_transpose(rng):
    frames = rng.standard_normal((2, 100, 7))
    lines_first = np.swapaxes(frames, -1, -2)
    np.testing.assert_allclose(envelope(lines_first, axis=1), np.swapaxes(envelope(frames), -1, -2),
                               rtol=1e-12, err_msg="axis=1 on (lines, depth) frames")
    np.testing.assert_array_equal(envelope(frames, axis=-2), envelope(frames))


def test_envelope_leaves_input_unchanged(rng):
    rf = rng.standard_normal((64, 3)).astype(np.float32)
    copy = rf.copy()
    envelope(rf)
    np.testing.assert_array_equal(rf, copy, err_msg="envelope modified its input")


# --- log_compress --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "amplitudes, dynamic_range_db, expected",
    [
        # A/Amax = 1, 0.1 (-20 dB), 0.01 (-40 dB), 0 (-inf dB); 255 * (DR - 20) / DR = 127.5 -> 128
        ([10.0, 1.0, 0.1, 0.0], 40, [255, 128, 0, 0]),
        # 255 * 4 / 24 = 42.5 -> 42: round half to even (floor(x + 0.5) would give 43)
        ([10.0, 1.0], 24, [255, 42]),
        # -40 dB at 60 dB: 255 * 20 / 60 = 85 exactly; -60 dB and below: 0
        ([100.0, 1.0, 0.1, 0.01], 60, [255, 85, 0, 0]),
        # -20 dB at 50 dB: 255 * 30 / 50 = 153
        ([10.0, 1.0], 50, [255, 153]),
    ],
)
def test_log_compress_hand_values(amplitudes, dynamic_range_db, expected, dtype):
    # Tiled into a 3 x 64n frame so that NumPy's vectorised (SIMD) loops are the ones exercised.
    grey = log_compress(np.tile(np.array(amplitudes, dtype=dtype), (3, 64)), dynamic_range_db)
    assert grey.dtype == np.uint8 and grey.shape == (3, 64 * len(amplitudes))
    assert grey.reshape(-1, len(amplitudes)).tolist() == [expected] * (3 * 64), (
        f"A={amplitudes} ({np.dtype(dtype).name}) at {dynamic_range_db} dB: expected {expected}, "
        f"got {grey[0, :len(amplitudes)].tolist()}"
    )


def test_log_compress_reference():
    grey = log_compress(np.array([[20.0, 10.0, 1.0, 0.0]]), 40, reference=10.0)
    assert grey[0].tolist() == [255, 255, 128, 0], (
        "reference=10: 20 saturates at 255, 10 -> 255, 1 (-20 dB) -> 128, 0 -> 0; "
        f"got {grey[0].tolist()}"
    )


def test_log_compress_per_frame_maximum():
    frames = np.array([[[1.0, 0.1]], [[100.0, 10.0]]])  # each frame: 0 dB and -20 dB
    grey = log_compress(frames, 40)
    assert grey.tolist() == [[[255, 128]], [[255, 128]]], f"per-frame Amax, got {grey.tolist()}"


def test_log_compress_integer_envelope():
    assert log_compress(np.array([[10, 1]], dtype=np.int32), 24)[0].tolist() == [255, 42]


def test_bmode_batched_equals_per_frame(rng):
    frames = np.stack([random_rf(rng, (256, 8)) * s for s in (1, 3)]).astype(np.int16)
    batched = bmode(frames, 50)
    for i in range(2):
        np.testing.assert_array_equal(batched[i], bmode(frames[i], 50),
                                      err_msg=f"frame {i}: batched bmode differs from per-frame")


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_shared_envelope_is_bmode_byte_for_byte(rng, dtype):
    """One envelope for several dynamic ranges (the demo job's 40/50/60 dB) gives each of them
    exactly bmode's bytes, frame by frame."""
    frames = np.stack([random_rf(rng, (256, 8)) * s for s in (1, 3)]).astype(dtype)
    env, peaks = envelope_peaks(frames)
    assert peaks.shape == (2, 1, 1), f"one peak per frame, got shape {peaks.shape}"
    for dynamic_range_db in (40, 50, 60):
        np.testing.assert_array_equal(
            compress_envelope(env, peaks, dynamic_range_db), bmode(frames, dynamic_range_db),
            err_msg=f"{dtype.__name__} DR {dynamic_range_db}: shared envelope differs from bmode")


def test_shared_envelope_checks_as_bmode():
    frames = np.ones((3, 8, 4), np.int16)
    frames[2] = 0
    with pytest.raises(InputError) as error:
        envelope_peaks(frames)
    assert _one_line(error) == "envelope is all zeros (Amax = 0) in frame 2"
    values = np.ones((8, 4))
    values[3, 2] = np.nan
    with pytest.raises(InputError) as error:
        envelope_peaks(values)
    assert _one_line(error) == "RF contains NaN or Inf samples"


# (frame, dynamic range) pairs of the demo job's shape: every frame at 40/50/60 dB, out of order,
# a frame repeated and a non-paper range; the NumPy and emulated-CuPy batch tests share them.
BATCH_FRAMES = [0, 0, 0, 2, 1, 2, 1, 2, 1, 0]
BATCH_RANGES = [40, 50, 60, 60, 40, 40, 50, 50, 60, 24.5]


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_compress_envelope_batch_is_compress_envelope(rng, dtype):
    frames = np.stack([random_rf(rng, (128, 8)) * s for s in (1, 3, 7)]).astype(dtype)
    env, peaks = envelope_peaks(frames)
    out = compress_envelope_batch(env, peaks, BATCH_FRAMES, BATCH_RANGES)
    assert out.shape == (10, 128, 8) and out.dtype == np.uint8, f"got {out.dtype}{out.shape}"
    for p, (frame, dr) in enumerate(zip(BATCH_FRAMES, BATCH_RANGES)):
        np.testing.assert_array_equal(
            out[p], compress_envelope(env[frame], peaks[frame], dr),
            err_msg=f"output {p} (frame {frame}, {dr} dB) differs from compress_envelope")


def test_compress_envelope_batch_empty():
    env, peaks = envelope_peaks(np.ones((2, 8, 4), np.int16))
    assert compress_envelope_batch(env, peaks, [], []).shape == (0, 8, 4)


@pytest.mark.parametrize(
    "case, error, message",
    [("2-D envelope", InputError, "envelope must be (frames, depth, lines) float32 or float64, "
      "got float32(8, 4)"),
     ("peaks of another stack", InputError, "peaks must be (2, 1, 1) for an envelope of 2 frames,"
      " got (3, 1, 1)"),
     ("lengths differ", InputError, "frames and dynamic_ranges must be 1-D of one length, got "
      "shapes (2,) and (1,)"),
     ("frame out of range", ConfigError, "frames[1] = 2 is outside [0, 2) for an envelope of 2 "
      "frames"),
     ("float frames", ConfigError, "frames must be integers, got float64"),
     ("zero dB", ConfigError, "dynamic_range_db must be a finite number > 0 (dB), got 0")],
)
def test_compress_envelope_batch_errors(case, error, message):
    env, peaks = envelope_peaks(np.ones((2, 8, 4), np.int16))
    args = {"2-D envelope": (env[0], peaks, [0], [40]),
            "peaks of another stack": (env, np.ones((3, 1, 1), np.float32), [0], [40]),
            "lengths differ": (env, peaks, [0, 1], [40]),
            "frame out of range": (env, peaks, [0, 2], [40, 50]),
            "float frames": (env, peaks, [0.0], [40]),
            "zero dB": (env, peaks, [0, 1], [40, 0])}[case]
    with pytest.raises(error) as raised:
        compress_envelope_batch(*args)
    assert _one_line(raised).endswith(message), f"{case}: {_one_line(raised)!r}"


def test_envelope_peaks_unchecked_returns_the_same():
    """check=False returns what check=True returns and leaves a bad frame to peaks_error."""
    frames = np.ones((3, 8, 4), np.int16)
    frames[1] = 0
    env, peaks = envelope_peaks(frames, check=False)
    assert peaks_error(peaks) == "envelope is all zeros (Amax = 0) in frame 1"
    good_env, good_peaks = envelope_peaks(frames[::2])
    np.testing.assert_array_equal(env[::2], good_env, err_msg="check=False envelope differs")
    np.testing.assert_array_equal(peaks[::2], good_peaks, err_msg="check=False peaks differ")
    values = np.ones((8, 4))
    values[3, 2] = np.nan
    with pytest.raises(InputError) as error:  # NaN RF still raises on NumPy, from envelope()
        envelope_peaks(values, check=False)
    assert _one_line(error) == "RF contains NaN or Inf samples"


@pytest.mark.parametrize(
    "peaks, expected",
    [(np.array([[3.0]]), None),
     (np.array([[0.0]]), "envelope is all zeros (Amax = 0)"),
     (np.array([np.nan]), "RF contains NaN or Inf samples"),
     (np.array([[[1.0]], [[np.inf]], [[0.0]]]), "RF contains NaN or Inf samples in frame 1"),
     (np.array([[[1.0]], [[2.0]], [[0.0]]]), "envelope is all zeros (Amax = 0) in frame 2"),
     (np.ones((2, 3, 1, 1)) * np.array([1, 1, 1, 1, 0, 1]).reshape(2, 3, 1, 1),
      "envelope is all zeros (Amax = 0) in frame (1, 1)")],
    ids=["fine", "zero", "nan-line", "inf-stack", "zero-stack", "zero-2-lead-axes"],
)
def test_peaks_error(peaks, expected):
    assert peaks_error(peaks) == expected


def test_peaks_error_is_the_numpy_zero_raise():
    frame = np.zeros((8, 4), np.int16)
    with pytest.raises(InputError) as error:
        envelope_peaks(frame)
    assert _one_line(error) == peaks_error(envelope_peaks(frame, check=False)[1])


def test_peaks_error_overflow_on_numpy_says_envelope():
    """Finite float32 RF whose square overflows: NumPy names the envelope, not the RF."""
    rf = np.full((8, 4), 3e19, np.float32)  # (3e19)**2 = 9e38 > float32's 3.4e38
    with pytest.raises(InputError) as error, np.errstate(over="ignore"):
        envelope_peaks(rf)
    assert _one_line(error) == "envelope contains NaN or Inf"


def test_bmode_int16(rng):
    rf = simulated_rf(rng, shape=(512, 16))
    image = bmode(rf, 50)
    assert image.dtype == np.uint8 and image.shape == rf.shape
    assert image.max() == 255, f"brightest pixel should be 255 (0 dB), got {image.max()}"


# --- errors --------------------------------------------------------------------------------------


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, f"error message spans several lines: {text!r}"
    return text


@pytest.mark.parametrize("bad", [0, -3, float("nan"), float("inf"), "forty", None])
def test_bad_dynamic_range(bad):
    for call in (lambda: log_compress(np.ones((4, 4)), bad), lambda: bmode(np.ones((4, 4)), bad)):
        with pytest.raises(ConfigError) as error:
            call()
        assert "dynamic_range_db" in _one_line(error)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "x"])
def test_bad_reference(bad):
    with pytest.raises(ConfigError) as error:
        log_compress(np.ones((4, 4)), 40, reference=bad)
    assert "reference" in _one_line(error)


def test_all_zero_envelope():
    with pytest.raises(InputError) as error:
        log_compress(np.zeros((8, 4)), 40)
    assert _one_line(error).startswith("envelope is all zeros (Amax = 0)")
    with pytest.raises(InputError) as error:
        bmode(np.zeros((8, 4), np.int16), 40)
    assert "envelope is all zeros (Amax = 0)" in _one_line(error)


def test_all_zero_frame_is_named():
    frames = np.ones((3, 8, 4))
    frames[1] = 0
    with pytest.raises(InputError) as error:
        log_compress(frames, 40)
    assert _one_line(error) == "envelope is all zeros (Amax = 0) in frame 1"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    values = np.ones((8, 4))
    values[3, 2] = bad
    with pytest.raises(InputError) as error:
        log_compress(values, 40)
    assert "NaN or Inf" in _one_line(error)
    with pytest.raises(InputError) as error:
        envelope(values)
    assert "NaN or Inf" in _one_line(error)


def test_negative_envelope():
    with pytest.raises(InputError) as error:
        log_compress(np.array([[1.0, -0.5]]), 40)
    assert "negative" in _one_line(error)


@pytest.mark.parametrize(
    "rf", [np.ones((4, 4), complex), np.ones((4, 4), bool), np.zeros((0, 4)), np.float64(1.0)],
    ids=["complex", "bool", "empty", "scalar"],
)
def test_bad_rf(rf):
    for call in (envelope, lambda x: bmode(x, 40)):
        with pytest.raises(InputError) as error:
            call(rf)
        assert "RF" in _one_line(error)


@pytest.mark.parametrize("axis", [2, -3, 1.0, True])
def test_bad_axis(axis):
    with pytest.raises(ConfigError) as error:
        envelope(np.ones((3, 8, 4)), axis=axis)
    assert "axis" in _one_line(error)
    with pytest.raises(ConfigError):
        envelope(np.ones(8), axis=1)


# --- backends ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xp", BACKENDS, indirect=True)
def test_bmode_backend_parity(xp, rng):
    rf = simulated_rf(rng, shape=(512, 32))
    expected = bmode(rf, 50)
    result = bmode(xp.asarray(rf), 50)
    assert type(result).__module__.split(".")[0] == xp.__name__, "array module in != out"
    host = result.get() if hasattr(result, "get") else result
    assert np.mean(np.abs(host.astype(int) - expected) <= 1) >= 0.999
