"""Tests for augengine.ops.geometry: scan conversion, ROI box, resize, geometric augmentations."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from augengine.errors import ConfigError, InputError
from augengine.ops import flip, resize, roi_box, rotate, rotate90, scale, scan_convert, translate
from augengine.ops.geometry import rf_spacing_mm
from tests.conftest import BACKENDS

SHAPES = [(17, 23), (16, 24)]  # odd and even sizes


def make_image(rng, shape, dtype):
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    return rng.random(shape).astype(dtype)


# Every op with parameters that interpolate, and the output shape it must give for input (H, W).
OPS = {
    "rotate30": (lambda x, o: rotate(x, 30, order=o), lambda h, w: (h, w)),
    "translate": (lambda x, o: translate(x, (2.5, -1.25), order=o), lambda h, w: (h, w)),
    "zoom_in": (lambda x, o: scale(x, 1.3, order=o), lambda h, w: (h, w)),
    "zoom_out": (lambda x, o: scale(x, (0.7, 0.8), order=o), lambda h, w: (h, w)),
    "resize": (lambda x, o: resize(x, (20, 13), order=o), lambda h, w: (20, 13)),
    "scan_convert": (
        lambda x, o: scan_convert(x, (0.05, 0.2), pixel_size_mm=0.1, order=o),
        lambda h, w: (round(h / 2), 2 * w),
    ),
    "rotate90": (lambda x, o: rotate90(x, 1), lambda h, w: (w, h)),
    "flip": (lambda x, o: flip(x, "horizontal"), lambda h, w: (h, w)),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, order", [(np.uint8, 3), (np.uint8, 1), (np.float32, 3),
                                          (np.float64, 1), (np.uint16, 1), (np.bool_, 0)],
                         ids=lambda v: str(np.dtype(v)) if isinstance(v, type) else f"order{v}")
@pytest.mark.parametrize("name", list(OPS))
def test_shape_and_dtype(name, dtype, order, shape, rng):
    op, out_shape = OPS[name]
    image = make_image(rng, shape, dtype)
    out = op(image, order)
    assert out.dtype == image.dtype, f"{name} on {image.dtype} {shape}: got dtype {out.dtype}"
    assert out.shape == out_shape(*shape), f"{name} on {shape}: got shape {out.shape}"
    assert out.flags.c_contiguous, f"{name}: result is not C-contiguous"


# --- exact identities ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.bool_], ids=lambda d: np.dtype(d).name)
def test_rotate90_and_flip_identities(shape, dtype, rng):
    image = make_image(rng, shape, dtype)
    np.testing.assert_array_equal(rotate90(image, 4), image, err_msg="rotate90 k=4")
    np.testing.assert_array_equal(rotate90(rotate90(image, 1), 3), image, err_msg="k=1 then k=3")
    np.testing.assert_array_equal(rotate90(image, -1), rotate90(image, 3), err_msg="k=-1 vs k=3")
    np.testing.assert_array_equal(rotate90(image, 1), np.rot90(image), err_msg="k=1 vs np.rot90")
    for axis, reference in ((0, np.flipud), ("vertical", np.flipud), (1, np.fliplr),
                            ("horizontal", np.fliplr), ("Horizontal", np.fliplr)):
        flipped = flip(image, axis)
        np.testing.assert_array_equal(flipped, reference(image), err_msg=f"flip axis={axis!r}")
        np.testing.assert_array_equal(flip(flipped, axis), image, err_msg=f"flip {axis!r} twice")


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.bool_], ids=lambda d: np.dtype(d).name)
def test_zero_rotation_unit_scale_zero_shift_are_identities(order, dtype, rng):
    image = make_image(rng, (17, 24), dtype)
    # Cubic B-splines interpolate exactly at the knots up to float32 rounding of the prefilter.
    atol = 1e-5 if (order == 3 and dtype == np.float32) else 0
    for name, out in (("rotate(0)", rotate(image, 0, order=order)),
                      ("rotate(360)", rotate(image, 360, order=order)),
                      ("scale(1)", scale(image, 1.0, order=order)),
                      ("translate(0, 0)", translate(image, (0, 0), order=order)),
                      ("resize to the same size", resize(image, image.shape, order=order))):
        np.testing.assert_allclose(out, image, rtol=0, atol=atol,
                                   err_msg=f"{name}, order {order}, {image.dtype}")


@pytest.mark.parametrize("n", [5, 6])
@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("angle, k", [(90, 1), (180, 2), (270, 3), (-90, 3), (450, 1)])
def test_right_angle_rotate_equals_rotate90(angle, k, order, n, rng):
    image = make_image(rng, (n, n), np.uint8)
    np.testing.assert_array_equal(rotate(image, angle, order=order), rotate90(image, k),
                                  err_msg=f"rotate({angle}, order={order}) on {n}x{n}")


def test_rotate_hand_case():
    image = np.zeros((5, 5), np.uint8)
    image[0, 2] = 9  # top centre; a quarter turn counter-clockwise moves it to the left centre
    out = rotate(image, 90, order=0)
    assert out[2, 0] == 9 and out.sum() == 9, f"expected pixel (2, 0), got {np.argwhere(out)}"
    # Corners of a 45-degree turn come from outside the image: they get the fill value.
    assert rotate(np.full((9, 9), 7, np.uint8), 45, order=1, fill=3)[0, 0] == 3


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("shift", [(2, -3), (-1, 0), (0, 4), (5, 5)], ids=str)
def test_integer_translate_is_roll_plus_fill(shift, order, rng):
    image = make_image(rng, (11, 14), np.uint8)
    fill = 17
    expected = np.roll(image, shift, axis=(0, 1))
    dy, dx = shift
    # The band that np.roll wrapped around is what translate fills.
    expected[slice(0, dy) if dy >= 0 else slice(dy, None), :] = fill
    expected[:, slice(0, dx) if dx >= 0 else slice(dx, None)] = fill
    np.testing.assert_array_equal(translate(image, shift, order=order, fill=fill), expected,
                                  err_msg=f"translate {shift}, order {order}")


def test_fractional_translate_linear():
    image = np.array([[0.0, 10.0, 20.0, 30.0]], np.float32)
    out = translate(image, (0, 0.5), order=1)
    np.testing.assert_allclose(out[0, 1:], [5.0, 15.0, 25.0],
                               err_msg="half-pixel linear shift of a ramp 0,10,20,30")


def test_scale_hand_cases():
    line = np.arange(1, 6, dtype=np.uint8)[None, :]  # centre column 2 holds 3
    assert scale(line, 0.5, order=0)[0].tolist() == [0, 1, 3, 5, 0], "zoom out by 2: pad"
    assert scale(line, (1, 2), order=1)[0].tolist() == [2, 2, 3, 4, 4], "zoom in by 2: 1.5 -> 2"


# --- image and mask stay aligned -----------------------------------------------------------------

ALIGN_OPS = {
    "rotate": lambda x, o: rotate(x, 33, order=o),
    "translate": lambda x, o: translate(x, (3.4, -5.2), order=o),
    "zoom_in": lambda x, o: scale(x, 1.4, order=o),
    "zoom_out": lambda x, o: scale(x, 0.7, order=o),
    "resize": lambda x, o: resize(x, (45, 70), order=o),
    "scan_convert": lambda x, o: scan_convert(x, (0.05, 0.2), order=o),
    "rotate90": lambda x, o: rotate90(x, 3),
    "flip": lambda x, o: flip(x, 0),
}


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("name", list(ALIGN_OPS))
def test_mask_follows_bright_square(name, order):
    image = np.full((61, 64), 20, np.uint8)
    image[18:34, 30:46] = 220
    mask = np.zeros(image.shape, bool)
    mask[18:34, 30:46] = True
    op = ALIGN_OPS[name]
    out_image, out_mask = op(image, order), op(mask, 0)
    assert out_mask.dtype == bool and out_mask.shape == out_image.shape
    bright = out_image > 120
    centre_image = np.argwhere(bright).mean(axis=0)
    centre_mask = np.argwhere(out_mask).mean(axis=0)
    # A half-pixel convention mismatch between orders would shift one centre by ~0.5 px.
    assert np.all(np.abs(centre_image - centre_mask) <= 0.25), (
        f"{name}: bright square centred at {centre_image}, mask at {centre_mask}"
    )
    iou = np.sum(bright & out_mask) / np.sum(bright | out_mask)
    assert iou > 0.95, f"{name}: IoU of the bright square and the mask {iou:.3f}, expected > 0.95"


# --- resize --------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("size", [(224, 224), (7, 5), (1, 1), (31, 200)], ids=str)
@pytest.mark.parametrize("value", [np.uint8(7), np.float32(0.3), np.True_],
                         ids=lambda v: type(v).__name__)
def test_resize_of_constant_is_constant(value, size, order):
    image = np.full((37, 52), value)
    out = resize(image, size, order=order)
    assert out.shape == size and out.dtype == image.dtype
    np.testing.assert_allclose(out.astype(np.float64), float(value), rtol=1e-6,
                               err_msg=f"constant {value!r} resized to {size}, order {order}")


PIL_FILTERS = {0: Image.NEAREST, 1: Image.BILINEAR, 3: Image.BICUBIC}


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("shape, size", [((37, 53), (224, 224)), ((301, 211), (64, 100)),
                                         ((17, 17), (17, 40))], ids=str)
def test_resize_matches_pil(shape, size, order, rng):
    # Odd input sizes and even output sizes: no output centre falls on an input pixel border,
    # where PIL's NEAREST float arithmetic is ambiguous.
    image = rng.random(shape).astype(np.float32)
    expected = np.asarray(Image.fromarray(image).resize(size[::-1], PIL_FILTERS[order]))
    np.testing.assert_allclose(resize(image, size, order=order), expected, rtol=0, atol=1e-4,
                               err_msg=f"float32 {shape} -> {size}, order {order} vs PIL 'F'")
    # A smooth uint8 image: PIL rounds between its two passes, we do not -> at most 1 grey level.
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    smooth = (127 + 100 * np.sin(yy / 5.0) * np.cos(xx / 7.0)).astype(np.uint8)
    expected = np.asarray(Image.fromarray(smooth).resize(size[::-1], PIL_FILTERS[order]))
    diff = np.abs(resize(smooth, size, order=order).astype(int) - expected)
    assert diff.max() <= 1, f"uint8 {shape} -> {size}, order {order}: {diff.max()} levels off PIL"


def test_resize_nearest_hand_case():
    image = np.arange(4, dtype=np.uint8)[None, :]
    assert resize(image, (1, 8), order=0)[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Downscale 4 -> 2: centres at 1.0 and 3.0 fall on borders; floor picks pixels 1 and 3.
    assert resize(image, (1, 2), order=0)[0].tolist() == [1, 3]


def test_resize_downscale_antialiases(rng):
    stripes = np.tile(np.array([0, 255], np.uint8), (32, 32))  # 1-pixel stripes, 32x64
    out = resize(stripes, (32, 16), order=3)
    assert np.abs(out.astype(int) - 127.5).max() <= 12, (
        f"4x downscale of 1-px stripes should average to ~128, got range {out.min()}..{out.max()}"
    )


# --- scan conversion and ROI box -----------------------------------------------------------------


def test_rf_spacing_mm():
    axial, lateral = rf_spacing_mm(40e6, 1540.0, 0.3e-3)
    assert axial == pytest.approx(0.01925) and lateral == pytest.approx(0.3), (axial, lateral)


def test_scan_convert_shapes():
    image = np.zeros((2000, 100), np.uint8)
    assert scan_convert(image, (0.02, 0.2), pixel_size_mm=0.1).shape == (400, 200)
    # Default pixel: sqrt(0.02 * 0.2) = 0.0632 mm -> 632 x 316, the same pixel count (within 1 %).
    out = scan_convert(image, (0.02, 0.2))
    assert out.shape == (632, 316), f"default pixel size: got {out.shape}, expected (632, 316)"


def test_scan_convert_preserves_physical_geometry():
    # A 2 mm x 2 mm square on a (0.02 mm, 0.2 mm) grid: 100 rows x 10 columns.
    image = np.zeros((400, 40), np.float32)
    image[150:250, 15:25] = 1.0
    out = scan_convert(image, (0.02, 0.2), pixel_size_mm=0.1, order=0)
    rows, cols = np.nonzero(out)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 20), (
        f"2 mm square at 0.1 mm pixels should be 20x20, got {np.ptp(rows) + 1}x{np.ptp(cols) + 1}"
    )


@pytest.mark.parametrize(
    "margin_mm, spacing_mm, expected",
    [
        (1.0, (0.1, 0.5), (slice(30, 70), slice(18, 32))),   # 10 rows, 2 cols
        (0.0, (0.1, 0.5), (slice(40, 60), slice(20, 30))),   # the bounding box itself
        (0.25, (0.1, 0.2), (slice(37, 63), slice(18, 32))),  # 2.5 -> 3 rows, 1.25 -> 2 cols
        (1.1, (0.1, 1.1), (slice(29, 71), slice(19, 31))),   # exact multiples: 11 rows, 1 col
        (5.0, (0.1, 0.5), (slice(0, 100), slice(10, 40))),   # 50 rows clipped to the image
        (10.0, 0.5, (slice(20, 80), slice(0, 50))),          # scalar spacing, cols clipped
    ],
)
def test_roi_box_hand_cases(margin_mm, spacing_mm, expected):
    roi = np.zeros((100, 50), np.uint8)
    roi[40:60, 20:30] = 255
    assert roi_box(roi, margin_mm, spacing_mm) == expected, (
        f"margin {margin_mm} mm at spacing {spacing_mm}: expected {expected}"
    )


def test_roi_box_single_pixel_at_corner():
    roi = np.zeros((10, 10), bool)
    roi[9, 0] = True
    assert roi_box(roi, 2.0, (1.0, 1.0)) == (slice(7, 10), slice(0, 3))


# --- errors --------------------------------------------------------------------------------------


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, f"error message spans several lines: {text!r}"
    return text


IMAGE = np.zeros((8, 8), np.uint8)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: resize(IMAGE, (0, 5)), ConfigError, "size"),
        (lambda: resize(IMAGE, (-3, 5)), ConfigError, "size"),
        (lambda: resize(IMAGE, (4.5, 5)), ConfigError, "size"),
        (lambda: resize(IMAGE, 5), ConfigError, "size"),
        (lambda: resize(IMAGE, (5, 5), order=2), ConfigError, "order"),
        (lambda: rotate(IMAGE, 10, order=5), ConfigError, "order"),
        (lambda: rotate(IMAGE, float("nan")), ConfigError, "angle_deg"),
        (lambda: translate(IMAGE, 3), ConfigError, "shift_px"),
        (lambda: translate(IMAGE, (1, float("inf"))), ConfigError, "shift_px"),
        (lambda: scale(IMAGE, 0), ConfigError, "factor"),
        (lambda: scale(IMAGE, (1, -2)), ConfigError, "factor"),
        (lambda: rotate90(IMAGE, 1.5), ConfigError, "k"),
        (lambda: flip(IMAGE, 2), ConfigError, "axis"),
        (lambda: flip(IMAGE, "diagonal"), ConfigError, "axis"),
        (lambda: scan_convert(IMAGE, (0.0, 0.2)), ConfigError, "spacing_mm"),
        (lambda: scan_convert(IMAGE, (0.02, 0.2), pixel_size_mm=-1), ConfigError, "pixel_size_mm"),
        (lambda: rf_spacing_mm(0, 1540, 3e-4), ConfigError, "fs_hz"),
        (lambda: roi_box(IMAGE, 1.0, (0.1, 0.1)), InputError, "ROI is empty"),
        (lambda: roi_box(IMAGE + 1, -1.0, (0.1, 0.1)), ConfigError, "margin_mm"),
        (lambda: roi_box(IMAGE + 1, 1.0, (0.1, 0.0)), ConfigError, "spacing_mm"),
        (lambda: resize(np.zeros((4, 4, 3)), (2, 2)), InputError, "2-D"),
        (lambda: rotate(np.zeros(8), 10), InputError, "2-D"),
        (lambda: flip(np.zeros((0, 4)), 0), InputError, "empty"),
        (lambda: translate(np.zeros((4, 4), complex), (1, 1)), InputError, "dtype"),
    ],
)
def test_bad_parameters_give_one_line_errors(call, error, words):
    with pytest.raises(error) as raised:
        call()
    assert words in _one_line(raised), f"expected {words!r} in {str(raised.value)!r}"


# --- backends ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xp", BACKENDS, indirect=True)
@pytest.mark.parametrize("name", list(OPS))
def test_backend_parity(name, xp, rng):
    image = make_image(rng, (17, 24), np.float32)
    op = OPS[name][0]
    expected = op(image, 1)
    result = op(xp.asarray(image), 1)
    assert type(result).__module__.split(".")[0] == xp.__name__, f"{name}: array module in != out"
    host = result.get() if hasattr(result, "get") else result
    np.testing.assert_allclose(host, expected, rtol=0, atol=1e-5,
                               err_msg=f"{name} on {xp.__name__}")
