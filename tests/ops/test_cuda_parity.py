"""GPU code paths (cuda/*.cu launched through CuPy) against the NumPy references.

Each test runs twice: ``cuda`` on a real GPU (skipped cleanly without one) and ``emulated`` on the
CPU through tests/cuda_emulator, which compiles the same kernels with g++ and runs them with CUDA's
barrier and warp semantics behind a NumPy-backed CuPy. The emulated runs check the kernels' logic
and the Python launch code everywhere (CI included); only the ``cuda`` runs check the GPU itself
(cuFFT, the hardware). The largest cases (512x512 batches) run on a GPU only: emulating them takes
minutes.

Tolerances, float32:
- SRAD with a fixed q0: bitwise equal (kernels compiled with --fmad=false, same operation order).
- SRAD with an estimated q0: the GPU sums the ROI in double, NumPy in float32 (two passes), so
  q0 differs in the ~7th digit; max |GPU - CPU| <= 1e-4 * max(image) after 20 iterations.
- envelope: cuFFT vs pocketfft rounding, max |GPU - CPU| <= 1e-5 * max(envelope) (float64: 1e-12).
- log_compress / bmode: log10f vs NumPy's log10 can flip a value sitting on a .5 boundary:
  at most 1 grey level apart, on at most 0.1 % of the pixels.
- resize (band-sparse sums in tap order vs NumPy's BLAS matrix products): at most 1 grey level
  apart, on at most 1 % of the pixels (tests/ops/test_batch.py checks floats and every shape).
"""
from __future__ import annotations

import numpy as np
import pytest

from augengine.errors import InputError
from augengine.ops.despeckle import (srad, srad_bmode, srad_series, srad_series_bmode,
                                     srad_series_bmode_pick)
from augengine.ops.reconstruction import (bmode, compress_envelope, compress_envelope_batch,
                                          envelope, envelope_peaks, log_compress, peaks_error)
from tests.conftest import CUDA, requires_gpu
from tests.cuda_emulator import counting, emulated_cupy


@pytest.fixture(params=[pytest.param("cuda", marks=requires_gpu), "emulated"])
def cp(request):
    """CuPy on the GPU, or the CPU emulation of it."""
    if request.param == "cuda":
        import cupy

        yield cupy
    else:
        with emulated_cupy() as cupy:
            yield cupy


@pytest.fixture
def gpu():
    """Real CuPy only, for cases too large to emulate."""
    if not CUDA:
        pytest.skip("needs a CUDA device (none found)")
    import cupy

    return cupy


def speckle_batch(rng, batch, shape, dtype=np.float32):
    """Exponential speckle on a smooth per-image ramp, so images differ in mean and CoV."""
    ramp = np.linspace(1.0, 20.0, shape[1])[None, None, :]
    gains = rng.uniform(0.5, 50.0, (batch, 1, 1))
    return (gains * ramp * rng.exponential(1.0, (batch,) + shape)).astype(dtype)


def simulated_rf(rng, frames, depth, lines, dtype=np.int16):
    """RF-like lines: random scatterers convolved with a 7 MHz Gaussian pulse sampled at 40 MHz,
    with a lesion-like dark ellipse, scaled to the int16 range."""
    t = np.arange(-24, 25) / 40e6
    pulse = np.exp(-((t / 0.12e-6) ** 2)) * np.cos(2 * np.pi * 7e6 * t)
    scatterers = rng.standard_normal((frames, depth, lines))
    z, x = np.mgrid[0:depth, 0:lines]
    lesion = ((z - depth / 2) / (depth / 5)) ** 2 + ((x - lines / 2) / (lines / 5)) ** 2 < 1
    scatterers[:, lesion] *= 0.1
    rf = np.apply_along_axis(lambda line: np.convolve(line, pulse, mode="same"), 1, scatterers)
    rf *= 20000 / np.abs(rf).max()
    return rf.astype(dtype)


def assert_grey_close(gpu, cpu, what):
    diff = np.abs(gpu.astype(np.int16) - cpu.astype(np.int16))
    assert diff.max() <= 1, f"{what}: grey levels differ by up to {diff.max()}, expected <= 1"
    fraction = np.count_nonzero(diff) / diff.size
    assert fraction <= 1e-3, f"{what}: {fraction:.4%} of pixels differ, expected <= 0.1%"


# --- SRAD --------------------------------------------------------------------------------------

SIZES = [(64, 64), (127, 131)]


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("shape", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_srad_fixed_q0_is_bitwise_equal(cp, rng, shape, batch):
    images = speckle_batch(rng, batch, shape)
    cpu = srad(images, 20, q0=0.8, rho=0.05)
    gpu = srad(cp.asarray(images), 20, q0=0.8, rho=0.05)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == np.float32 and gpu.shape == images.shape
    np.testing.assert_array_equal(gpu.get(), cpu, err_msg=f"SRAD {batch}x{shape}, q0=0.8, rho=0.05")


@pytest.mark.parametrize(
    "options",
    [{}, {"roi": (slice(10, 50), slice(5, 40))}, {"rho": 0.2}, {"time_step": 1.0}],
    ids=["whole-image", "roi", "rho", "dt=1"],
)
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("shape", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_srad_estimated_q0_matches(cp, rng, shape, batch, options):
    images = speckle_batch(rng, batch, shape)
    cpu = srad(images, 20, **options)
    gpu = srad(cp.asarray(images), 20, **options).get()
    error = np.abs(gpu - cpu).max(axis=(1, 2)) / cpu.max(axis=(1, 2))
    worst = int(np.argmax(error))
    assert error[worst] <= 1e-4, (
        f"SRAD {batch}x{shape} {options}: image {worst} differs by {error[worst]:.2e} of its max, "
        "expected <= 1e-4"
    )


@pytest.mark.parametrize("options", [{"q0": 0.8, "rho": 0.05}, {}], ids=["q0-fixed", "q0-estimated"])
def test_srad_large_batch_matches(gpu, rng, options):
    images = speckle_batch(rng, 16, (512, 512))
    cpu = srad(images, 20, **options)
    out = srad(gpu.asarray(images), 20, **options).get()
    error = np.abs(out - cpu).max(axis=(1, 2)) / cpu.max(axis=(1, 2))
    worst = int(np.argmax(error))
    limit = 0.0 if options else 1e-4
    assert error[worst] <= limit, (
        f"SRAD 16x512x512 {options}: image {worst} differs by {error[worst]:.2e} of its max, "
        f"expected <= {limit}"
    )


def test_srad_float64_and_single_image(cp, rng):
    image = rng.exponential(1.0, (127, 131)) + 0.1
    cpu = srad(image, 15, q0=0.6)
    gpu = srad(cp.asarray(image), 15, q0=0.6)
    assert gpu.dtype == np.float64 and gpu.shape == image.shape
    np.testing.assert_array_equal(gpu.get(), cpu, err_msg="float64 127x131, q0=0.6")


@pytest.mark.parametrize("options", [{"q0": 0.8}, {}], ids=["q0-fixed", "q0-estimated"])
def test_srad_series_matches(cp, rng, options):
    images = speckle_batch(rng, 3, (64, 80))
    cpu = srad_series(images, scales=4, iterations_per_scale=5, **options)
    gpu = srad_series(cp.asarray(images), scales=4, iterations_per_scale=5, **options).get()
    assert gpu.shape == (3, 4, 64, 80)
    error = np.abs(gpu - cpu).max() / cpu.max()
    limit = 0.0 if options else 1e-4
    assert error <= limit, f"series {options}: max error {error:.2e} of max, expected <= {limit}"


def test_srad_errors_match(cp):
    batch = np.ones((3, 8, 8), np.float32)
    batch[1, 2, 2] = np.nan
    with pytest.raises(InputError, match="image 1 of the batch contains NaN or Inf"):
        srad(cp.asarray(batch), 2)


def test_srad_bmode_matches(cp, rng):
    grey = log_compress(np.sqrt(rng.exponential(1.0, (2, 96, 64))), 50)
    cpu = srad_bmode(grey, 25, 50)
    gpu = srad_bmode(cp.asarray(grey), 25, 50)
    assert gpu.dtype == np.uint8
    assert_grey_close(gpu.get(), cpu, "srad_bmode 2x96x64, 25 iterations, 50 dB")


SERIES_PICKS = [(0, 2), (2, 0), (1, 1), (0, 2), (2, 2)]  # image 0's last scale twice


@pytest.mark.parametrize(
    "options",
    [{}, {"q0": 0.8}, {"rho": 0.2}, {"roi": (slice(5, 30), slice(3, 20))},
     {"q0": 0.7, "rho": 0.1, "time_step": 1.0}],
    ids=["estimated", "q0-fixed", "rho", "roi", "q0-rho-dt1"],
)
def test_srad_series_pick_matches(cp, rng, options):
    """The one-launch series kernel (srad_series_u8) against the NumPy series, picked rows."""
    grey = log_compress(np.sqrt(rng.exponential(1.0, (3, 40, 37))), 50)
    cpu = srad_series_bmode(grey, 50, 3, 4, **options)
    gpu = srad_series_bmode_pick(cp.asarray(grey), 50, SERIES_PICKS, 3, 4, **options)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == np.uint8 and gpu.shape == (5, 40, 37)
    expected = np.stack([cpu[image, scale] for image, scale in SERIES_PICKS])
    assert_grey_close(gpu.get(), expected, f"srad_series_u8 3x40x37, 3 scales of 4, {options}")


def test_srad_series_pick_is_one_launch_without_sync(rng):
    """The whole series of a batch is one kernel launch and never waits for the device."""
    grey = log_compress(np.sqrt(rng.exponential(1.0, (4, 24, 24))), 60)
    with emulated_cupy() as cp:
        images = cp.asarray(grey)
        with counting() as counts:
            srad_series_bmode_pick(images, 60, [(b, b % 2) for b in range(4)], 2, 3)
    assert dict(counts.launches) == {"srad_series_u8<float>": 1}, counts.launches
    assert counts.n_syncs == 0, f"expected no host sync, got {dict(counts.syncs)}"


def test_srad_bmode_makes_no_range_check_sync(rng):
    """uint8 input cannot fail SRAD's range checks: the tiled path copies nothing back."""
    grey = log_compress(np.sqrt(rng.exponential(1.0, (2, 24, 24))), 50)
    with emulated_cupy() as cp:
        images = cp.asarray(grey)
        with counting() as counts:
            srad_bmode(images, 3, 50)
    assert counts.n_syncs == 0, f"expected no host sync, got {dict(counts.syncs)}"


# --- envelope, log compression, B-mode --------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((2048,), 0),
        ((1001,), 0),
        ((512, 64), 0),
        ((64, 512), 1),
        ((3, 513, 40), 0),
        ((3, 40, 513), 1),
        ((512, 1), 0),
    ],
    ids=["line", "odd-line", "depth-major", "line-major", "frames-odd", "frames-line-major",
         "one-line"],
)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64, np.int32])
def test_envelope_matches(cp, rng, shape, axis, dtype):
    rf = (rng.standard_normal(shape) * 3000).astype(dtype)
    cpu = envelope(rf, axis)
    gpu = envelope(cp.asarray(rf), axis)
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape, (
        f"GPU {gpu.dtype}{gpu.shape} vs CPU {cpu.dtype}{cpu.shape}"
    )
    tolerance = 1e-12 if cpu.dtype == np.float64 else 1e-5
    error = np.abs(gpu.get() - cpu).max() / cpu.max()
    assert error <= tolerance, (
        f"envelope {dtype.__name__}{shape} axis {axis}: error {error:.2e} of max > {tolerance}"
    )


def test_envelope_of_simulated_rf(cp, rng):
    rf = simulated_rf(rng, 4, 1024, 96)
    cpu = envelope(rf, 0)
    error = np.abs(envelope(cp.asarray(rf), 0).get() - cpu).max() / cpu.max()
    assert error <= 1e-5, f"simulated RF 4x1024x96: envelope error {error:.2e} of max > 1e-5"


@pytest.mark.parametrize("reference", [None, 0.5])
@pytest.mark.parametrize("dynamic_range_db", [40, 50, 60])
def test_log_compress_matches(cp, rng, dynamic_range_db, reference):
    env = rng.rayleigh(0.2, (3, 256, 128)).astype(np.float32)
    env[0, :4] = 0.0  # -inf dB -> 0
    cpu = log_compress(env, dynamic_range_db, reference)
    gpu = log_compress(cp.asarray(env), dynamic_range_db, reference)
    assert gpu.dtype == np.uint8 and gpu.shape == env.shape
    assert_grey_close(gpu.get(), cpu, f"log_compress DR {dynamic_range_db} reference {reference}")


def test_log_compress_half_to_even(cp):
    # 20 log10(0.1) = -20 dB: DR 24 -> g = 42.5 -> 42, DR 40 -> 127.5 -> 128 (see log_compress).
    env = cp.asarray(np.array([[1.0, 0.1]], np.float64))
    assert log_compress(env, 24).get().tolist() == [[255, 42]]
    assert log_compress(env, 40).get().tolist() == [[255, 128]]


@pytest.mark.parametrize(
    "values, message",
    [(0.0, "envelope is all zeros \\(Amax = 0\\) in frame 1"),
     (-1.0, "envelope has negative values \\(min -1 in frame 1\\)"),
     (np.nan, "envelope contains NaN or Inf in frame 1")],
)
def test_log_compress_errors_match(cp, values, message):
    env = np.ones((3, 4, 4), np.float32)
    env[1] = values
    with pytest.raises(InputError, match=message):
        log_compress(env, 50)
    with pytest.raises(InputError, match=message):
        log_compress(cp.asarray(env), 50)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dynamic_range_db", [40, 60])
def test_bmode_matches_on_simulated_rf(cp, rng, axis, dynamic_range_db):
    rf = simulated_rf(rng, 3, 1024, 64)
    if axis == 1:
        rf = np.ascontiguousarray(rf.transpose(0, 2, 1))
    cpu = bmode(rf, dynamic_range_db, axis)
    gpu = bmode(cp.asarray(rf), dynamic_range_db, axis)
    assert gpu.dtype == np.uint8 and gpu.shape == rf.shape
    assert_grey_close(gpu.get(), cpu, f"bmode simulated RF axis {axis} DR {dynamic_range_db}")


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_bmode_matches_on_random_rf(cp, rng, dtype):
    rf = (rng.standard_normal((5, 512, 48)) * 4000).astype(dtype)
    gpu = bmode(cp.asarray(rf), 50).get()
    assert_grey_close(gpu, bmode(rf, 50), f"bmode random {dtype.__name__} 5x512x48")


def test_shared_envelope_is_bmode(cp, rng):
    """Three dynamic ranges from one envelope: each is the device's own bmode bit for bit."""
    rf = cp.asarray(simulated_rf(rng, 2, 256, 16))
    env, peaks = envelope_peaks(rf)
    for dr in (40, 50, 60):
        image = compress_envelope(env, peaks, dr)
        assert bool((image == bmode(rf, dr)).all()), f"DR {dr}: shared envelope differs from bmode"


def test_shared_envelope_costs_one_sync(rng):
    """The three dynamic ranges of one frame cost one FFT pair and one host sync (the peaks'
    check); each range then only its mapping launch, log10 of the peak taken inside it."""
    rf = simulated_rf(rng, 1, 128, 8)
    with emulated_cupy() as cp:
        device_rf = cp.asarray(rf)
        with counting() as counts:
            env, peaks = envelope_peaks(device_rf)
            for dr in (40, 50, 60):
                compress_envelope(env, peaks, dr)
    assert counts.n_syncs == 1, f"expected 1 host sync, got {dict(counts.syncs)}"
    launches = dict(counts.launches)
    assert (launches.get("cupy.rfft") == 1 and launches.get("compress_envelope_u8<float>") == 3
            and "cupy.log10" not in launches), (
        f"expected one rfft, three compress_envelope_u8 launches and no log10, got {launches}")


# (frame, dynamic range) pairs: every frame at 40/50/60 dB, out of order, a frame repeated and a
# non-paper range (as in tests/ops/test_reconstruction.py).
BATCH_FRAMES = [0, 0, 0, 2, 1, 2, 1, 2, 1, 0]
BATCH_RANGES = [40, 50, 60, 60, 40, 40, 50, 50, 60, 24.5]


@pytest.mark.parametrize("dtype", [np.int16, np.float64])
def test_compress_envelope_batch_is_compress_envelope(cp, rng, dtype):
    """Each output of the one-launch batch is the device's single compress_envelope of its
    frame bit for bit, and NumPy's within the bmode tolerance."""
    rf = simulated_rf(rng, 3, 128, 16, dtype)
    env, peaks = envelope_peaks(cp.asarray(rf))
    out = compress_envelope_batch(env, peaks, BATCH_FRAMES, BATCH_RANGES)
    assert isinstance(out, cp.ndarray) and out.dtype == np.uint8 and out.shape == (10, 128, 16)
    host = out.get()
    cpu = compress_envelope_batch(*envelope_peaks(rf), BATCH_FRAMES, BATCH_RANGES)
    for p, (frame, dr) in enumerate(zip(BATCH_FRAMES, BATCH_RANGES)):
        single = compress_envelope(env[frame], peaks[frame], dr).get()
        np.testing.assert_array_equal(
            host[p], single, err_msg=f"{dtype.__name__} output {p} (frame {frame}, {dr} dB): "
                                     "batch differs from single compress_envelope")
        assert_grey_close(host[p], cpu[p], f"{dtype.__name__} output {p} (frame {frame}, {dr} dB)"
                                           " against NumPy")
    strided = compress_envelope_batch(env[::2], peaks[::2], [1, 0], [60, 40]).get()
    np.testing.assert_array_equal(strided, host[[3, 0]],
                                  err_msg=f"{dtype.__name__}: frames 2 and 0 of a strided view")


def test_compress_envelope_batch_is_one_launch(rng):
    """All P outputs of a shard: one kernel launch, one small table copied, no host sync."""
    rf = simulated_rf(rng, 3, 64, 8)
    with emulated_cupy() as cp:
        env, peaks = envelope_peaks(cp.asarray(rf))
        with counting() as counts:
            compress_envelope_batch(env, peaks, BATCH_FRAMES, BATCH_RANGES)
    assert dict(counts.launches) == {"compress_envelope_u8<float>": 1}, counts.launches
    assert counts.n_syncs == 0, f"expected no host sync, got {dict(counts.syncs)}"
    assert counts.n_h2d == 1, f"expected one table copy, got {dict(counts.h2d)}"


def test_unchecked_envelope_peaks_makes_no_sync(rng):
    """check=False: the envelope and its peaks without any device-to-host copy."""
    rf = simulated_rf(rng, 3, 64, 8)
    with emulated_cupy() as cp:
        device_rf = cp.asarray(rf)
        with counting() as counts:
            envelope_peaks(device_rf, check=False)
        with counting() as checked:
            envelope_peaks(device_rf)
    assert counts.n_syncs == 0 and not counts.d2h_async, (
        f"expected no host sync, got {dict(counts.syncs)} {dict(counts.d2h_async)}")
    assert checked.n_syncs == 1, f"check=True: expected 1 sync, got {dict(checked.syncs)}"


@pytest.mark.parametrize("bad", ["zero", "nan"])
def test_peaks_error_is_the_raise(cp, rng, bad):
    """peaks_error of the unchecked peaks is the text the checked call raises."""
    rf = (rng.standard_normal((64, 8)) * 100).astype(np.float32)
    if bad == "zero":
        rf[:] = 0
    else:
        rf[5, 3] = np.nan
    device_rf = cp.asarray(rf)
    with pytest.raises(InputError) as error:
        envelope_peaks(device_rf)
    _, peaks = envelope_peaks(device_rf, check=False)
    expected = {"zero": "envelope is all zeros (Amax = 0)",
                "nan": "RF contains NaN or Inf samples"}[bad]
    assert str(error.value) == peaks_error(peaks.get()) == expected, (
        f"{bad}: raised {str(error.value)!r}, peaks_error {peaks_error(peaks.get())!r}, "
        f"expected {expected!r}")


def test_deferred_check_per_frame_is_each_frame_alone(cp, rng):
    """A stack's unchecked peaks, checked frame by frame, give each frame's own raise (no label)
    or None; the whole stack's peaks name the first bad frame."""
    rf = (rng.standard_normal((4, 64, 8)) * 100).astype(np.float32)
    rf[1] = 0
    rf[3, 7, 2] = np.inf
    _, peaks = envelope_peaks(cp.asarray(rf), check=False)
    host = peaks.get()
    for frame in range(4):
        try:
            envelope_peaks(cp.asarray(rf[frame]))
            alone = None
        except InputError as error:
            alone = str(error)
        assert peaks_error(host[frame]) == alone, (
            f"frame {frame}: peaks_error {peaks_error(host[frame])!r}, alone raised {alone!r}")
    assert peaks_error(host) == "RF contains NaN or Inf samples in frame 3"


def test_bmode_errors_match(cp, rng):
    rf = (rng.standard_normal((3, 64, 8)) * 100).astype(np.int16)
    rf[2] = 0
    with pytest.raises(InputError, match="envelope is all zeros \\(Amax = 0\\) in frame 2"):
        bmode(cp.asarray(rf), 50)
    bad = rng.standard_normal((2, 64, 8)).astype(np.float32)
    bad[0, 3, 3] = np.inf
    with pytest.raises(InputError, match="RF contains NaN or Inf samples"):
        bmode(cp.asarray(bad), 50)


# --- affine warps --------------------------------------------------------------------------------
# cuda/resample.cu's warp_affine replicates scipy.ndimage's 'constant' mode arithmetic for orders
# 0 and 1 (position, floor, weights, the order of the products and sums), so CuPy gives NumPy's
# bytes: bitwise equal, on the emulator and on a GPU (double products and sums compiled with
# --fmad=false round as the CPU's do).

WARP_CASES = [
    ("rotate", 90.0), ("rotate", 180.0), ("rotate", -90.0), ("rotate", 33.3), ("rotate", -171.0),
    ("translate", (2.0, -3.0)), ("translate", (0.5, -0.5)), ("translate", (-1.5, 7.25)),
    ("translate", (40.0, 0.0)), ("translate", (0.0, -25.5)), ("translate", (-0.0, 0.0)),
    ("scale", 0.5), ("scale", 1.7), ("scale", (0.8, 1.3)), ("scale", 3.0),
]


def warp_images(rng, dtype, shape=(3, 17, 24)):
    """A stack of ``dtype`` with its range's extremes and, for floats, negative values."""
    if dtype == np.uint8:
        images = rng.integers(0, 256, shape).astype(np.uint8)
        images[0, 0, :3] = [0, 255, 255]
    elif dtype == bool:
        images = rng.random(shape) < 0.4
    else:
        images = rng.uniform(-50.0, 300.0, shape).astype(dtype)
    return images


def assert_same_bytes(gpu, cpu, what):
    """Bitwise equal arrays, else the image (first axis), the count and the first pixel named."""
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape, (
        f"{what}: {gpu.dtype} {gpu.shape}, expected {cpu.dtype} {cpu.shape}")
    bits = f"u{gpu.dtype.itemsize}"
    differ = np.argwhere(gpu.view(bits) != cpu.view(bits))
    first = tuple(int(i) for i in differ[0]) if len(differ) else None
    assert differ.size == 0, (
        f"{what}: {len(differ)} of {gpu.size} pixels differ, first at {first}: "
        f"{gpu[first]!r} instead of {cpu[first]!r} (expected bitwise equal)")


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, bool])
@pytest.mark.parametrize("order", [1, 0])
def test_warp_of_one_image_is_bitwise_scipy(cp, rng, dtype, order):
    """rotate, translate and scale of one image on CuPy (warp_affine, a stack of one) against
    scipy.ndimage: right angles, whole and half pixel shifts, shifts beyond the edge, fills."""
    from augengine import ops

    images = warp_images(rng, dtype)
    for (name, value), fill in zip(WARP_CASES, [0, 17.25, 300, -2.5, 255] * 3):
        op = getattr(ops, name)
        for b, image in enumerate(images):
            gpu = op(cp.asarray(image), value, order=order, fill=fill).get()
            assert_same_bytes(gpu, op(image, value, order=order, fill=fill),
                              f"{name} {value} order {order} fill {fill} "
                              f"{np.dtype(dtype).name} image {b} 17x24")


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("mask_dtype", [bool, np.uint8])
def test_warp_batch_with_masks_is_bitwise_scipy(cp, rng, dtype, mask_dtype):
    """rotate_batch, translate_batch and scale_batch with masks on CuPy against the NumPy
    per-image ops (the image linear, its mask nearest with fill 0), image by image."""
    from augengine import ops

    images = warp_images(rng, dtype, (4, 19, 23))
    masks = (rng.random(images.shape) < 0.5).astype(mask_dtype)
    for name in ("rotate", "translate", "scale"):
        values = [value for op_name, value in WARP_CASES if op_name == name][:4]
        op = getattr(ops, name)
        out, masks_out = getattr(ops, f"{name}_batch")(
            cp.asarray(images), values, fill=7.5, masks=cp.asarray(masks))
        for b, value in enumerate(values):
            what = f"{name}_batch {value} {np.dtype(dtype).name} image {b}"
            assert_same_bytes(out[b].get(), op(images[b], value, fill=7.5), what)
            assert_same_bytes(masks_out[b].get(), op(masks[b], value, order=0),
                              f"{what}: its {np.dtype(mask_dtype).name} mask")


@pytest.mark.parametrize("order", [1, 0])
def test_warp_alone_equals_in_batch_on_the_device(cp, rng, order):
    """One image warped alone on CuPy gives the bytes it gets inside a batch (a sample's
    replay relies on it), on the GPU too: both are warp_affine, the alone one on a stack of 1."""
    from augengine import ops

    images = warp_images(rng, np.uint8, (4, 19, 23))
    for name in ("rotate", "translate", "scale"):
        values = [value for op_name, value in WARP_CASES if op_name == name][:4]
        batch = getattr(ops, f"{name}_batch")(cp.asarray(images), values, order=order).get()
        for b, value in enumerate(values):
            alone = getattr(ops, name)(cp.asarray(images[b]), value, order=order).get()
            assert_same_bytes(batch[b], alone, f"{name}_batch {value} order {order}: image {b} "
                              "of 4 against the image alone")


def test_warp_of_a_view_and_of_int16_match_scipy(cp, rng):
    """A non-contiguous stack (copied first) and an int16 one (through a float32 copy)."""
    from augengine import ops

    images = rng.integers(-3000, 3000, (3, 16, 21)).astype(np.int16)
    angles = [10.0, -35.0, 90.0]
    gpu = ops.rotate_batch(cp.asarray(images), angles).get()
    assert_same_bytes(gpu, np.stack([ops.rotate(i, a) for i, a in zip(images, angles)]),
                      "rotate_batch int16 3x16x21")
    flipped = cp.asarray(images.astype(np.uint8))[:, ::-1]
    gpu = ops.rotate_batch(flipped, angles).get()
    assert_same_bytes(gpu, np.stack([ops.rotate(i, a) for i, a in
                                     zip(images.astype(np.uint8)[:, ::-1], angles)]),
                      "rotate_batch of a flipped view")


@pytest.mark.parametrize("name, values", [
    ("rotate_batch", [12.0, -90.0, 45.5, 0.0]),
    ("translate_batch", [(0.5, 1.0), (-30.0, 2.0), (0.0, 0.0), (3.25, -1.75)]),
    ("scale_batch", [0.7, 1.3, (1.0, 2.0), 1.0]),
])
def test_warp_batch_and_masks_are_one_launch(rng, name, values):
    """Images and masks of a uint8 stack: one warp_affine launch together, the maps one
    host-to-device copy, no sync and no float copy of the stack."""
    from augengine import ops

    images = rng.integers(0, 256, (4, 20, 18), dtype=np.uint8)
    masks = rng.random(images.shape) < 0.5
    with emulated_cupy() as cp:
        device, device_masks = cp.asarray(images), cp.asarray(masks)
        with counting() as counts:
            out, masks_out = getattr(ops, name)(device, values, masks=device_masks)
        assert (out.dtype, masks_out.dtype) == (np.uint8, bool)
    assert dict(counts.launches) == {"warp_affine<unsigned char>": 1}, counts.launches
    assert counts.n_syncs == 0 and counts.n_h2d == 1, (counts.syncs, counts.h2d)


def test_warp_of_one_image_is_one_launch_and_cubic_stays_cupyx(rng):
    """A per-image rotate of order 0 or 1 is the batch's kernel on a stack of one; order 3
    keeps cupyx's affine_transform (its B-spline prefilter)."""
    from augengine import ops

    image = rng.uniform(0.0, 1.0, (20, 18)).astype(np.float32)
    with emulated_cupy() as cp:
        device = cp.asarray(image)
        with counting() as linear:
            ops.rotate(device, 20.0)
        with counting() as cubic:
            cubic_out = ops.rotate(device, 20.0, order=3).get()
    assert dict(linear.launches) == {"warp_affine<float>": 1}, linear.launches
    assert cubic.launches["cupy.affine_transform"] == 1, cubic.launches  # the emulator's name
    np.testing.assert_array_equal(cubic_out, ops.rotate(image, 20.0, order=3),
                                  err_msg="rotate order 3 on emulated CuPy")


# --- resampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_clip_u8_is_bitwise_equal(cp, rng, dtype):
    """cuda/resample.cu's round_clip_u8 against NumPy's rint, clip, astype (halves to even)."""
    from augengine.ops._util import restore_dtype

    values = rng.uniform(-20.0, 280.0, (3, 37, 41)).astype(dtype)
    values[0, 0, :6] = [0.5, 1.5, 2.5, 254.5, -0.5, 255.5]  # ties: 0, 2, 2, 254, 0, 255
    gpu = restore_dtype(cp.asarray(values), np.uint8)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == np.uint8 and gpu.shape == values.shape
    np.testing.assert_array_equal(gpu.get(), restore_dtype(values, np.uint8),
                                  err_msg=f"round_clip_u8<{np.dtype(dtype).name}> 3x37x41")


def test_resize_many_is_two_launches_and_one_copy_without_sync(rng):
    """The demo head's crops: 3 frames x ROI margins 2/5/10 mm = 9 crops (views of the frames)
    of 3 shapes, resized bicubically in one call: resize_rows and resize_cols once each, the
    tables in one host-to-device copy, no wait; an image alone costs the same."""
    from augengine.ops.geometry import resize, resize_many

    frames = rng.integers(0, 256, (3, 70, 52), dtype=np.uint8)
    boxes = [(slice(20 - m, 40 + m), slice(15 - m, 30 + m)) for m in (2, 5, 10)]
    with emulated_cupy() as cp:
        device = [cp.asarray(frame) for frame in frames]
        crops = [frame[box] for frame in device for box in boxes]
        with counting() as counts:
            out = resize_many(crops, (24, 24))
        with counting() as alone:
            resize(crops[4], (24, 24))
        host = [image.get() for image in out]
    kernels = {"resize_rows<unsigned char, float>": 1, "resize_cols<float, unsigned char>": 1}
    for name, c in (("resize_many of 9 crops", counts), ("resize of one crop", alone)):
        assert (dict(c.launches), dict(c.h2d), c.n_syncs) == (kernels, {"cupy.asarray": 1}, 0), (
            f"{name}: launches {dict(c.launches)}, copies {dict(c.h2d)}, syncs {c.n_syncs}; "
            f"expected {kernels}, one copy, no sync")
    for j, got in enumerate(host):
        expected = resize(frames[j // 3][boxes[j % 3]], (24, 24))
        step = np.abs(got.astype(np.int16) - expected)
        assert step.max() <= 1 and np.count_nonzero(step) <= expected.size // 100, (
            f"crop {j}: {np.count_nonzero(step)} of {expected.size} pixels differ from NumPy's "
            f"resize by up to {step.max()} grey levels (at most {expected.size // 100} by 1)")


def test_flip_batch_with_masks_is_one_launch_on_the_device(rng):
    from augengine.ops import geometry

    images = rng.integers(0, 256, (5, 16, 20)).astype(np.uint8)
    masks = rng.random((5, 16, 20)) < 0.3
    with emulated_cupy() as cupy:
        stack, mask_stack = cupy.asarray(images), cupy.asarray(masks)
        with counting() as counts:
            geometry.flip_batch(stack, "horizontal", masks=mask_stack)
    assert counts.launches == {"warp_affine<unsigned char>": 1}, counts.launches
    assert counts.n_syncs == 0, counts.syncs
