"""BUSI-layout folders: bit depths and colour modes, extra masks, lazy discovery, bad layouts."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from augengine.sources import discover, load_sample, read_busi
from augengine.sources._image import to_gray_uint8
from tests.sources.helpers import one_line_error as _error

H, W = 6, 5


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def box_mask(rows, cols, value=255):
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = value
    return mask


@pytest.fixture
def busi(tmp_path):
    """benign/a (8-bit grey, two masks), malignant/b (RGB, RGB mask), normal/c (16-bit grey)."""
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 8
    save(tmp_path / "benign" / "a.png", gray)
    save(tmp_path / "benign" / "a_mask.png", box_mask(slice(0, 2), slice(0, 2)))
    save(tmp_path / "benign" / "a_mask_1.png", box_mask(slice(4, 6), slice(3, 5)))
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 255                                   # pure red: luma 0.299 * 255 = 76.2
    save(tmp_path / "malignant" / "b.png", rgb)
    save(tmp_path / "malignant" / "b_mask.png",
         np.repeat(box_mask(slice(1, 4), slice(1, 3))[..., None], 3, axis=2))
    sixteen = np.full((H, W), 257 * 200, np.uint16)     # 16-bit 51400 -> 51400 / 257 = 200
    sixteen[0, 0] = 65535
    save(tmp_path / "normal" / "c.png", sixteen)
    save(tmp_path / "normal" / "c_mask.png", np.zeros((H, W), np.uint8))
    return tmp_path


def test_reads_every_class_with_ids_and_labels(busi):
    samples = read_busi(busi)
    assert [(s.sample_id, s.source_id, s.label) for s in samples] == [
        ("benign/a", "benign/a", 0), ("malignant/b", "malignant/b", 1), ("normal/c", "normal/c", 2)]
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape == (H, W), (s.sample_id, s.image.dtype)
        assert s.roi.dtype == np.bool_ and s.roi.shape == (H, W)
        assert s.meta["spacing_mm"] is None and s.rf is None


def test_grey_levels_per_bit_depth_and_colour(busi):
    a, b, c = read_busi(busi)
    assert np.array_equal(a.image, np.arange(H * W, dtype=np.uint8).reshape(H, W) * 8), \
        "8-bit grey must be unchanged"
    assert (b.image == 76).all(), \
        f"pure red should be luma round(0.299 * 255) = 76, got {b.image[0, 0]}"
    assert c.image[0, 1] == 200 and c.image[0, 0] == 255, \
        f"16-bit 51400 -> 200 and 65535 -> 255, got {c.image[0, 1]} and {c.image[0, 0]}"


def test_extra_masks_are_ored(busi):
    a, b, c = read_busi(busi)
    assert a.roi.sum() == 8 and a.roi[0, 0] and a.roi[5, 4], \
        f"a: two 2x2 masks should OR to 8 pixels, got {a.roi.sum()}"
    assert b.roi.sum() == 6, f"b: RGB 3x2 mask should give 6 pixels, got {b.roi.sum()}"
    assert c.roi.sum() == 0, "normal/c: all-zero mask"
    assert a.meta["mask_paths"] == [str(busi / "benign" / "a_mask.png"),
                                    str(busi / "benign" / "a_mask_1.png")]


def test_rgba_and_palette_images(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 1] = 100                                  # green 100 -> 0.587 * 100 = 58.7 -> 59
    rgba[..., 3] = 10                                   # alpha is dropped
    save(tmp_path / "benign" / "d.png", rgba)
    palette = Image.new("P", (W, H), 0)
    palette.putpalette([50, 50, 50] + [0] * 765)         # index 0 -> grey 50
    palette.save(tmp_path / "benign" / "e.png")
    d, e = read_busi(tmp_path)
    assert (d.image == 59).all(), f"RGBA green 100 should give 59, got {d.image[0, 0]}"
    assert (e.image == 50).all(), f"palette grey 50 should stay 50, got {e.image[0, 0]}"
    assert d.roi is None, "an image without mask files has no ROI"


def test_discovery_decodes_nothing(busi, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("discover opened an image")

    monkeypatch.setattr(Image, "open", refuse)
    refs = discover("busi", str(busi))
    assert [(r.sample_id, r.has_roi) for r in refs] == [
        ("benign/a", True), ("malignant/b", True), ("normal/c", True)]


def test_load_sample_matches_read(busi):
    refs = discover("busi", str(busi))
    for ref, sample in zip(refs, read_busi(busi), strict=True):
        loaded = load_sample(ref)
        assert np.array_equal(loaded.image, sample.image) and np.array_equal(loaded.roi, sample.roi)


def test_unknown_folder(busi):
    (busi / "benign2").mkdir()
    message = _error(lambda: read_busi(busi))
    assert "unknown class folder 'benign2'; allowed: benign, malignant, normal" in message, message


def test_empty_class_folder(busi):
    (busi / "normal" / "c.png").unlink()
    (busi / "normal" / "c_mask.png").unlink()
    message = _error(lambda: read_busi(busi))
    assert f"{busi / 'normal'}: class folder holds no images" in message, message


def test_mask_without_image(busi):
    save(busi / "benign" / "z_mask.png", box_mask(0, 0))
    assert "mask without its image z.*" in _error(lambda: read_busi(busi))


def test_two_images_with_one_name(busi):
    save(busi / "benign" / "a.bmp", np.zeros((H, W), np.uint8))
    assert "another image of the same name, a.bmp" in _error(lambda: read_busi(busi))


def test_mask_size_differs(busi):
    save(busi / "benign" / "a_mask_1.png", np.zeros((H + 1, W), np.uint8))
    message = _error(lambda: read_busi(busi))
    assert str(busi / "benign" / "a_mask_1.png") in message and \
        str(busi / "benign" / "a.png") in message and "5x7 differs" in message, message


def test_non_image_png(busi):
    (busi / "malignant" / "b.png").write_bytes(b"this is not a png")
    message = _error(lambda: read_busi(busi))
    assert f"{busi / 'malignant' / 'b.png'}: sample 'malignant/b': cannot read as an image" \
        in message, message


def test_truncated_png_raises_alone(busi):
    data = (busi / "benign" / "a.png").read_bytes()
    (busi / "benign" / "a.png").write_bytes(data[: len(data) // 2])
    refs = discover("busi", str(busi))
    assert "cannot read as an image" in _error(lambda: load_sample(refs[0]))
    assert load_sample(refs[1]).sample_id == "malignant/b"


def test_root_without_class_folders(tmp_path):
    assert "no class folders" in _error(lambda: read_busi(tmp_path))
    assert "not a directory" in _error(lambda: read_busi(tmp_path / "missing"))


@pytest.mark.parametrize("pixels, max_value, expected", [
    (np.array([[0, 128, 255]], np.uint8), 255, [[0, 128, 255]]),
    (np.array([[0, 257, 514, 65535]], np.uint16), 65535, [[0, 1, 2, 255]]),
    (np.array([[0, 2048, 4095]], np.uint16), 4095, [[0, 128, 255]]),
    (np.array([[[10, 10, 10], [0, 0, 255]]], np.uint8), 255, [[10, 29]]),
    (np.array([[True, False]]), 255, [[255, 0]]),
])
def test_to_gray_uint8(pixels, max_value, expected):
    out = to_gray_uint8(pixels, max_value, "x.png")
    assert out.dtype == np.uint8 and out.tolist() == expected, f"{out.tolist()} != {expected}"


def test_to_gray_uint8_rejects_floats_and_out_of_range():
    assert "unsupported pixel type float32" in _error(
        lambda: to_gray_uint8(np.zeros((2, 2), np.float32), 255, "x.tif"))
    assert "outside the stored range [0, 4095]" in _error(
        lambda: to_gray_uint8(np.full((2, 2), 5000, np.uint16), 4095, "x.dcm"))
