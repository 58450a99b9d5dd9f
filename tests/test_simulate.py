"""The RF phantom simulator: physical units, determinism, lesion shape and acoustics."""
from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.signal import hilbert

from augengine.errors import ConfigError
from augengine.simulate import (AcquisitionParams, lesion_mask, orthogonal_view, sample_lesion,
                                simulate_dataset, simulate_frame)

PARAMS = AcquisitionParams()
DZ_MM = PARAMS.dz_m * 1e3
DX_MM = PARAMS.pitch_m * 1e3
N_PER_CLASS = 8


def _envelope(rf):
    return np.abs(hilbert(rf.astype(np.float64), axis=0))


def _extent_mm(roi):
    rows, cols = np.flatnonzero(roi.any(axis=1)), np.flatnonzero(roi.any(axis=0))
    return (cols[-1] - cols[0] + 1) * DX_MM, (rows[-1] - rows[0] + 1) * DZ_MM


@pytest.fixture(scope="module")
def frames():
    """N_PER_CLASS frames per class with their envelopes, simulated once for this module."""
    out = {}
    for label in (0, 1):
        out[label] = []
        for i in range(N_PER_CLASS):
            sample = simulate_frame(label, np.random.default_rng([9, label, i]))
            out[label].append((sample, _envelope(sample.rf)))
    return out


def test_grid_in_physical_units():
    # dz = c / (2 fs) = 1540 / 80e6 m = 19.25 um; 35 mm / 19.25 um = 1818.2 -> 1818 rows.
    assert PARAMS.dz_m == pytest.approx(19.25e-6), f"dz {PARAMS.dz_m} m, expected 19.25e-6"
    assert PARAMS.n_samples == 1818, f"{PARAMS.n_samples} rows, expected 1818"
    assert PARAMS.width_mm == pytest.approx(38.2), f"width {PARAMS.width_mm} mm, expected 38.2"


@pytest.mark.parametrize("kwargs, message", [
    ({"fs_hz": -3.0}, "fs_hz must be > 0, got -3.0"),
    ({"fc_hz": 18e6}, "exceeds Nyquist"),
    ({"depth_m": 0.01}, "depth_m must be >= 0.03"),
    ({"n_lines": 50}, "must span >= 20 mm"),
    ({"attenuation_db_cm": -1.0}, "attenuation_db_cm must be >= 0"),
])
def test_bad_params_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AcquisitionParams(**kwargs)


def test_frame_layout(frames):
    sample, _ = frames[0][0]
    assert sample.rf.dtype == np.int16 and sample.rf.shape == (1818, 192), \
        f"rf {sample.rf.dtype} {sample.rf.shape}, expected int16 (1818, 192)"
    assert np.abs(sample.rf.astype(np.int32)).max() == 30000, "peak |rf| should be 30000"
    assert sample.roi.dtype == np.bool_ and sample.roi.shape == sample.rf.shape
    assert sample.roi.any(), f"{sample.sample_id}: empty ROI"
    for key, value in {"fs_hz": 40e6, "fc_hz": 7.5e6, "c_m_s": 1540.0, "pitch_m": 2e-4}.items():
        assert sample.meta[key] == value, f"meta[{key!r}] = {sample.meta[key]}, expected {value}"
    assert sample.meta["lesion"]["label"] == 0 and sample.meta["birads"] in ("3", "4a")


def test_same_rng_state_gives_same_bytes():
    a = simulate_frame("malignant", np.random.default_rng(7))
    b = simulate_frame("malignant", np.random.default_rng(7))
    c = simulate_frame("malignant", np.random.default_rng(8))
    assert a.rf.tobytes() == b.rf.tobytes() and np.array_equal(a.roi, b.roi), \
        "seed 7 twice gave different frames"
    assert a.rf.tobytes() != c.rf.tobytes(), "seeds 7 and 8 gave the same frame"


def test_rf_spectrum_matches_pulse(frames):
    # Power spectrum ~ |H(f)|^2: peak at fc = 7.5 MHz; amplitude -6 dB (power / 4) full width
    # = fractional bandwidth * fc = 0.6 * 7.5 MHz = 4.5 MHz.
    sample, _ = frames[0][0]
    power = np.mean(np.abs(np.fft.rfft(sample.rf.astype(np.float64), axis=0)) ** 2, axis=1)
    freq = np.fft.rfftfreq(sample.rf.shape[0], 1 / PARAMS.fs_hz)
    centroid = (freq * power).sum() / power.sum()
    smooth = np.convolve(power, np.ones(25) / 25, mode="same")
    band = freq[smooth >= smooth.max() / 4]
    assert centroid == pytest.approx(7.5e6, rel=0.03), \
        f"centroid {centroid / 1e6:.2f} MHz, expected 7.5"
    assert band.max() - band.min() == pytest.approx(4.5e6, rel=0.1), \
        f"-6 dB bandwidth {(band.max() - band.min()) / 1e6:.2f} MHz, expected 4.5"


def test_background_speckle_is_rayleigh_like():
    # Fully developed speckle: envelope mean/std = sqrt(pi / (4 - pi)) = 1.91 for a Rayleigh
    # law; the tissue texture (+-25 %) only lowers it a little.
    sample = simulate_frame(0, np.random.default_rng(3))
    env = _envelope(sample.rf)
    rows = slice(int(12 / DZ_MM), int(14 / DZ_MM))
    patch = env[rows][:, ~sample.roi[rows].any(axis=0)]
    snr = patch.mean() / patch.std()
    assert 1.5 < snr < 2.1, f"{sample.sample_id}: envelope SNR {snr:.2f}, expected about 1.91"


def test_benign_wider_than_tall_malignant_taller_than_wide(frames):
    for label, wider in ((0, True), (1, False)):
        for i, (sample, _) in enumerate(frames[label]):
            width, height = _extent_mm(sample.roi)
            assert (width > height) == wider, \
                f"class {label} frame {i}: ROI {width:.1f} mm wide x {height:.1f} mm tall"


def test_roi_matches_lesion_geometry(frames):
    for label in (0, 1):
        for i, (sample, _) in enumerate(frames[label]):
            width, height = _extent_mm(sample.roi)
            lesion = sample.meta["lesion"]
            # Thin spike tips fall between samples, so the ROI can be a little smaller.
            where = f"class {label} frame {i}"
            assert abs(width - lesion["width_mm"]) < 1.0, \
                f"{where}: ROI width {width:.2f}, lesion {lesion['width_mm']:.2f} mm"
            assert abs(height - lesion["height_mm"]) < 1.5, \
                f"{where}: ROI height {height:.2f}, lesion {lesion['height_mm']:.2f} mm"


def _ratios(sample, env):
    """(inside / surrounding mean envelope, below-lesion / beside mean envelope)."""
    roi = sample.roi
    rows, cols = np.flatnonzero(roi.any(axis=1)), np.flatnonzero(roi.any(axis=0))
    pad_r, pad_c = int(3 / DZ_MM), int(3 / DX_MM)
    box = np.zeros_like(roi)
    box[max(rows[0] - pad_r, 0):rows[-1] + 1, max(cols[0] - pad_c, 0):cols[-1] + pad_c + 1] = True
    inside = env[roi].mean() / env[box & ~roi].mean()
    thickness = roi.sum(axis=0)
    core = np.flatnonzero(thickness >= 0.5 * thickness.max())
    quarter = len(core) // 4
    under = slice(core[0] + quarter, core[-1] - quarter + 1)
    depth = slice(rows[-1] + int(1 / DZ_MM), rows[-1] + int(6 / DZ_MM))
    n = under.stop - under.start
    beside = np.r_[max(cols[0] - pad_c - n, 0):max(cols[0] - pad_c, 0),
                   cols[-1] + pad_c + 1:min(cols[-1] + pad_c + 1 + n, roi.shape[1])]
    return inside, env[depth, under].mean() / env[depth][:, beside].mean()


def test_lesions_are_hypoechoic(frames):
    for label in (0, 1):
        for i, (sample, env) in enumerate(frames[label]):
            inside, _ = _ratios(sample, env)
            assert inside < 0.5, f"class {label} frame {i}: mean envelope inside/outside ROI " \
                                 f"{inside:.2f}, expected the echogenicity 0.15-0.4"


def test_shadowing_below_malignant_enhancement_below_benign(frames):
    below = {label: [_ratios(s, env)[1] for s, env in frames[label]] for label in (0, 1)}
    assert max(below[1]) < 0.6, f"malignant below/beside envelope {np.round(below[1], 2)}, " \
                                f"expected the shadow factor 0.25-0.5"
    assert np.mean(below[0]) > 1.1, f"benign below/beside envelope {np.round(below[0], 2)}, " \
                                    f"expected enhancement 1.15-1.4"


def test_orthogonal_view_keeps_class_shape():
    for i in range(10):
        for label, (low, high) in ((0, (0.4, 0.8)), (1, (1.1, 1.6))):
            lesion = sample_lesion(label, np.random.default_rng([i, label]))
            view = orthogonal_view(lesion, np.random.default_rng([i, label, 1]))
            assert low <= view.aspect <= high, \
                f"class {label} lesion {i}: orthogonal view aspect {view.aspect:.2f}"
            assert view.height_mm == lesion.height_mm and view.center_z_mm == lesion.center_z_mm
            assert lesion_mask(view).any(), f"class {label} lesion {i}: empty orthogonal view"


def test_lesions_fit_a_small_frame():
    # 30 mm deep, 100 lines x 0.2 mm = 20 mm wide: 9 mm above, 8 mm below, 2 mm at each side.
    small = AcquisitionParams(depth_m=0.03, n_lines=101)
    for i in range(20):
        for label in (0, 1):
            lesion = sample_lesion(label, np.random.default_rng([i, label]), small)
            top = lesion.center_z_mm - lesion.height_mm / 2
            bottom = lesion.center_z_mm + lesion.height_mm / 2
            left = lesion.center_x_mm - lesion.width_mm / 2
            right = lesion.center_x_mm + lesion.width_mm / 2
            assert top >= 9 - 1e-9 and bottom <= 22 + 1e-9, \
                f"class {label} lesion {i}: depth {top:.1f}-{bottom:.1f} mm, expected within 9-22"
            assert left >= 2 - 1e-9 and right <= 18 + 1e-9, \
                f"class {label} lesion {i}: lateral {left:.1f}-{right:.1f} mm, expected within 2-18"


@pytest.mark.parametrize("label, message", [
    ("normal", "label must be benign"), (2, "label must be benign"), (True, "label must be")])
def test_bad_label_raises(label, message):
    with pytest.raises(ConfigError, match=message):
        simulate_frame(label, np.random.default_rng(0))


def test_lesion_label_must_match():
    lesion = sample_lesion(0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="lesion label 0 does not match label 1"):
        simulate_frame(1, np.random.default_rng(0), lesion=lesion)


def test_dataset_files_and_frame_independence(tmp_path):
    small = simulate_dataset(1, 1, tmp_path / "a", seed=3)
    large = simulate_dataset(3, 2, tmp_path / "b", seed=3)
    assert small["n_frames"] == {"benign": 1, "malignant": 1}
    assert large["n_lesions"] == {"benign": 2, "malignant": 1}, large["n_lesions"]
    names = sorted(p.name for p in (tmp_path / "b" / "npz").iterdir())
    assert names == ["benign_000_rf1.npz", "benign_000_rf2.npz", "benign_001_rf1.npz",
                     "malignant_000_rf1.npz", "malignant_000_rf2.npz"], names
    for name in ("benign_000_rf1.npz", "malignant_000_rf1.npz"):
        a, b = np.load(tmp_path / "a" / "npz" / name), np.load(tmp_path / "b" / "npz" / name)
        assert a["rf"].tobytes() == b["rf"].tobytes(), f"{name} depends on the class counts"
    assert (tmp_path / "b" / "phantoms.mat").stat().st_size > 5 * 1818 * 192 * 2


def test_dataset_same_seed_same_bytes(tmp_path):
    simulate_dataset(1, 0, tmp_path / "a", seed=11)
    simulate_dataset(1, 0, tmp_path / "b", seed=11)
    for name in ("phantoms.mat", "npz/benign_000_rf1.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # savemat's own header holds the creation time, which would differ a second later.
    header = (tmp_path / "a" / "phantoms.mat").read_bytes()[:116]
    assert header.startswith(b"MATLAB 5.0 MAT-file, written by augengine.simulate"), header


@pytest.mark.parametrize("n_benign, n_malignant, seed, message", [
    (0, 0, 0, "must be >= 1"),
    (-1, 2, 0, "n_benign must be an integer >= 0, got -1"),
    (1.5, 2, 0, "n_benign must be an integer"),
    (1, 1, -2, "seed must be an integer >= 0, got -2"),
])
def test_dataset_bad_arguments(tmp_path, n_benign, n_malignant, seed, message):
    with pytest.raises(ConfigError, match=message):
        simulate_dataset(n_benign, n_malignant, tmp_path, seed=seed)


def test_simulating_again_leaves_identical_files_untouched(tmp_path):
    """``make demo`` twice: the store made from the first phantoms must still see its inputs."""
    from augengine.simulate import simulate_dataset

    simulate_dataset(1, 1, tmp_path, seed=4)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    for p in files:
        os.utime(p, ns=(1, 1))
    simulate_dataset(1, 1, tmp_path, seed=4)
    assert {p: p.stat().st_mtime_ns for p in files} == dict.fromkeys(before, 1), \
        "an identical file was rewritten"
    simulate_dataset(1, 1, tmp_path, seed=5)
    assert (tmp_path / "phantoms.mat").stat().st_mtime_ns != 1, "a changed file must be written"
