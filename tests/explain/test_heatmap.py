"""Relevance heatmaps: red positive, blue negative, over the grey image; PNG round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from augengine.errors import InputError
from augengine.explain import relevance_heatmap, save_heatmap_png
from tests.conftest import BACKENDS

RELEVANCE = [[1.0, -1.0], [0.0, 0.25]]


@pytest.mark.parametrize("xp", BACKENDS, indirect=True)
def test_colours_on_white_by_hand(xp):
    rgb = relevance_heatmap(xp.asarray(RELEVANCE))
    # r = 1: red; r = -1: blue; r = 0: white; r = 0.25: 0.75 white + 0.25 red = (255, 191, 191).
    expected = np.array([[[255, 0, 0], [0, 0, 255]], [[255, 255, 255], [255, 191, 191]]], np.uint8)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert np.array_equal(rgb, expected), f"got {rgb.tolist()}, expected {expected.tolist()}"


def test_overlay_on_uint8_and_float_images():
    relevance = np.array([[0.0, -0.4], [2.0, 0.0]])  # peak 2 -> r = (0, -0.2, 1, 0)
    grey = np.full((2, 2), 100, np.uint8)
    rgb = relevance_heatmap(relevance, grey)
    assert rgb[0, 0].tolist() == [100, 100, 100], f"r=0 over grey 100: {rgb[0, 0].tolist()}"
    assert rgb[1, 0].tolist() == [255, 0, 0], f"r=1 over grey 100: {rgb[1, 0].tolist()}"
    # r = -0.2: 0.8 * 100 = 80 grey, plus 0.2 * 255 = 51 blue.
    assert rgb[0, 1].tolist() == [80, 80, 131], f"r=-0.2 over grey 100: {rgb[0, 1].tolist()}"
    assert np.array_equal(relevance_heatmap(relevance, grey / 255.0), rgb), "float image differs"


def test_channels_are_summed_and_torch_is_accepted():
    relevance = torch.tensor(RELEVANCE).expand(3, 2, 2) / 3
    assert np.array_equal(relevance_heatmap(relevance), relevance_heatmap(np.array(RELEVANCE)))


def test_zero_relevance_shows_the_image():
    grey = np.arange(4, dtype=np.uint8).reshape(2, 2) * 60
    rgb = relevance_heatmap(np.zeros((2, 2)), grey)
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize(("relevance", "image", "message"), [
    (np.zeros((2, 2, 2, 2)), None, r"\(H, W\) or \(C, H, W\), got shape \(2, 2, 2, 2\)"),
    (np.array([[np.nan, 0.0]]), None, "NaN or Inf"),
    (np.zeros((2, 2)), np.zeros((3, 3), np.uint8), r"image shape \(3, 3\) does not match"),
])
def test_bad_input(relevance, image, message):
    with pytest.raises(InputError, match=message):
        relevance_heatmap(relevance, image)


def test_png_round_trip(tmp_path):
    from PIL import Image

    path = save_heatmap_png(tmp_path / "heat.png", np.array(RELEVANCE))
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (2, 2)
        assert np.array_equal(np.asarray(png), relevance_heatmap(np.array(RELEVANCE)))
    with pytest.raises(InputError, match="missing.*cannot write heatmap PNG"):
        save_heatmap_png(tmp_path / "missing" / "heat.png", np.array(RELEVANCE))
