"""The super-resolution job (seed 004): the degradation's determinism, PSNR and SSIM against
hand-computed cases, and a tiny CPU run end to end."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from augengine.errors import ConfigError
from augengine.models.superres import super_resolve
from augengine.train.cli import main
from augengine.train.loop import TrainConfig, load_checkpoint, resolve_config
from augengine.train.metrics import psnr, ssim
from augengine.train.superres import (
    Degradation,
    bicubic_upscale,
    draw_degradation,
    low_resolution,
)
from tests.train.test_jobs import make_tiny_store


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("superres") / "tiny.zarr")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _image(seed: int = 0, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size)).astype(np.float32) / 255


# --- degradation -------------------------------------------------------------------------------

def test_same_seed_and_row_give_the_same_pair_bytes():
    first = low_resolution(_image(), 3, draw_degradation(5, 11, 2.0, 8.0))
    again = low_resolution(_image(), 3, draw_degradation(5, 11, 2.0, 8.0))
    assert first.tobytes() == again.tobytes(), "seed 5 row 11: the pair must be rebuilt exactly"
    other = low_resolution(_image(), 3, draw_degradation(6, 11, 2.0, 8.0))
    assert other.tobytes() != first.tobytes(), "another seed must draw another degradation"


def test_draws_are_uniform_within_the_maxima_and_keyed_by_row():
    drawn = [draw_degradation(0, row, 2.0, 8.0) for row in range(200)]
    sigmas = np.array([d.blur_sigma for d in drawn])
    noises = np.array([d.noise_std for d in drawn])
    assert 0 <= sigmas.min() and sigmas.max() <= 2.0 and 0 <= noises.min() and noises.max() <= 8
    assert abs(sigmas.mean() - 1.0) < 0.15, f"U(0, 2) mean 1, got {sigmas.mean():.3f}"
    assert len({d.noise_seed for d in drawn}) == 200, "each row needs its own noise"


def test_no_blur_no_noise_is_the_bicubic_downscale_in_whole_grey_levels():
    # A constant image stays constant through the renormalised bicubic kernel: 0.4 -> 102/255.
    low = low_resolution(np.full((12, 12), 0.4, np.float32), 4, Degradation(0.0, 0.0, 0))
    assert low.shape == (3, 3) and np.all(low == np.float32(102 / 255)), \
        f"expected 3x3 of 102/255 = {102 / 255:.6f}, got {np.unique(low)}"
    assert bicubic_upscale(low, 4).shape == (12, 12)


def test_noise_adds_the_drawn_standard_deviation():
    flat = np.full((96, 96), 0.5, np.float32)
    low = low_resolution(flat, 2, Degradation(0.0, 10.0, 1))
    spread = float(np.std(low * 255))
    assert abs(spread - 10.0) < 0.5, f"noise std 10 grey levels expected, measured {spread:.3f}"


# --- PSNR and SSIM -----------------------------------------------------------------------------

def test_psnr_hand_cases():
    truth = np.zeros((2, 2))
    one_off = truth.copy()
    one_off[1, 1] = 0.5
    # MSE = 0.25 / 4 = 1/16 -> 10 log10(16) = 12.0412 dB.
    assert psnr(truth, one_off)[0][0] == pytest.approx(12.0412, abs=1e-4)
    # The same error in grey levels with L = 255: MSE 255^2 / 4 -> 10 log10(4) = 6.0206 dB.
    grey = truth.copy()
    grey[0, 0] = 255
    assert psnr(truth, grey, data_range=255)[0][0] == pytest.approx(6.0206, abs=1e-4)
    per_image, mean = psnr(np.stack([truth, truth]), np.stack([one_off, truth]))
    assert per_image[0] == pytest.approx(12.0412, abs=1e-4) and math.isinf(per_image[1])
    assert math.isinf(mean), "an identical image has infinite PSNR"


def test_ssim_hand_cases():
    # Constant images: no variance, so SSIM is the luminance term
    # (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) = (0.25 + 1e-4) / (0.3125 + 1e-4) = 0.800064.
    per_image, _ = ssim(np.full((11, 11), 0.5), np.full((11, 11), 0.25))
    assert per_image[0] == pytest.approx(0.2501 / 0.3126, abs=1e-9)
    # A 1x1 window (radius 0) has no variance either: pixelwise luminance, then the mean:
    # pixel 1 (0, 0): C1 / C1 = 1; pixel 2 (1, 0.5): (1 + 1e-4) / (1.25 + 1e-4) = 0.800080.
    per_image, _ = ssim([[0.0, 1.0]], [[0.0, 0.5]], radius=0)
    assert per_image[0] == pytest.approx((1 + 1.0001 / 1.2501) / 2, abs=1e-9)
    image = _image(1, 16)
    assert ssim(image, image)[0][0] == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_a_window_by_window_computation():
    x, y = _image(2, 13), _image(3, 13)
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    window = np.outer(taps, taps) / taps.sum() ** 2
    values = []
    for i in range(3):
        for j in range(3):
            a, b = x[i:i + 11, j:j + 11].astype(np.float64), y[i:i + 11, j:j + 11]
            mu_a, mu_b = np.sum(window * a), np.sum(window * b)
            var_a, var_b = np.sum(window * (a - mu_a) ** 2), np.sum(window * (b - mu_b) ** 2)
            cov = np.sum(window * (a - mu_a) * (b - mu_b))
            values.append((2 * mu_a * mu_b + 1e-4) * (2 * cov + 9e-4)
                          / ((mu_a**2 + mu_b**2 + 1e-4) * (var_a + var_b + 9e-4)))
    assert ssim(x, y)[0][0] == pytest.approx(np.mean(values), abs=1e-9), \
        f"expected the mean of 9 windows, {np.mean(values):.9f}"


# --- the job -----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"scale": 5}, "--scale must be 2, 3 or 4, got 5"),
    ({"image_size": 40}, "--image-size must be a multiple of the scale 3, got 40"),
    ({"model": "unet"}, "--model must be one of edsr, rdn, edsr_small, rdn_small"),
    ({"max_noise_std": -1.0}, "max_noise_std must be a finite number >= 0, got -1.0"),
])
def test_bad_superres_settings_are_refused(changes, message):
    config = dataclasses.replace(TrainConfig("superres", "ds.zarr", "run"), **changes)
    with pytest.raises(ConfigError, match=message):
        resolve_config(config)


def test_recipe_defaults():
    config = resolve_config(TrainConfig("superres", "ds.zarr", "run"))
    found = (config.model, config.scale, config.epochs, config.optimizer, config.lr,
             config.image_size, config.augment)
    assert found == ("edsr", 3, 20, "adam", 1e-4, 96, False), f"superres defaults {found}"


def test_tiny_run_writes_the_report_and_records_each_degradation(tiny_store, tmp_path):
    out = tmp_path / "sr"
    code = main(["superres", "--data", str(tiny_store), "--out", str(out), "--model",
                 "edsr_small", "--scale", "2", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--lr", "1e-3", "--max-blur-sigma", "1",
                 "--max-noise-std", "2", "--loader", "torch", "--seed", "4"])
    assert code == 0, "superres run failed"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_samples"] == 2, "test split: 2 lesions, originals only -> 2 images"
    for name in ("psnr", "psnr_bicubic"):
        assert 5 < metrics[name] < 60, f"{name} {metrics[name]} dB: not a PSNR of [0, 1] images"
    assert metrics["psnr_gain_db"] == pytest.approx(metrics["psnr"] - metrics["psnr_bicubic"])
    per_sample = metrics["per_sample"]
    for k, row in enumerate(per_sample["index"]):
        drawn = draw_degradation(4, row, 1.0, 2.0)
        recorded = (per_sample["blur_sigma"][k], per_sample["noise_std"][k],
                    per_sample["noise_seed"][k])
        assert recorded == (drawn.blur_sigma, drawn.noise_std, drawn.noise_seed), \
            f"test row {row}: recorded {recorded}, drawn {drawn}"
    assert (out / "superres.png").stat().st_size > 0
    assert "![low resolution, bicubic, network, ground truth](superres.png)" in \
        (out / "report.md").read_text()
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["task"] == "superres" and checkpoint["config"]["scale"] == 2
    upscaled = super_resolve(np.zeros((3, 16, 12), np.uint8), out / "checkpoint.pt")
    assert upscaled.shape == (3, 32, 24), "the superres op must read the run's checkpoint"
