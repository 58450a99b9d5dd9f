"""Batched ops on stacks (B, H, W) against their per-image ops: the same bytes, image for image.

Each test draws a different parameter per image (mixed signs, repeats, zero), on odd sizes, and
runs on every backend of ``BACKENDS`` (NumPy; CuPy on a GPU; CuPy emulated on the CPU) against
the NumPy per-image op: bit for bit on NumPy and emulated CuPy (whose cupyx.scipy.ndimage is
SciPy's). On a real GPU cupyx resamples and filters with its own float rounding, so there a
value may sit on the other side of a .5 and round one grey level away: at most 1 level, on at
most 0.1 % of the pixels (at least one; as tests/ops/test_cuda_parity.py allows for log_compress).
The resize family is the exception: on CuPy its kernels (resize_many's) sum in another order than
NumPy's BLAS, so there the batch is compared bit for bit with the per-image op on the same
backend, and both with NumPy within :func:`assert_resized_close`'s tolerance.
"""
from __future__ import annotations

import numpy as np
import pytest

from augengine import ops
from augengine.errors import ConfigError, InputError
from tests.conftest import BACKENDS

pytestmark = pytest.mark.parametrize("xp", BACKENDS, indirect=True)

SHAPES = [(31, 47), (8, 9), (64, 64)]


def host(array):
    return array.get() if hasattr(array, "get") else array


def stacks(rng, shape, batch=7):
    """A speckle-like uint8 stack and a blob mask stack (bool), different in every image."""
    images = rng.integers(0, 256, (batch,) + shape).astype(np.uint8)
    rows, cols = np.indices(shape)
    centres = rng.uniform(0.3, 0.7, (batch, 2)) * np.array(shape)
    masks = ((rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2
             < (min(shape) / 4) ** 2)
    return images, masks


@pytest.fixture
def on_gpu(request) -> bool:
    return request.node.callspec.params["xp"] == "cupy"


def assert_same_per_image(batched, per_image, what, on_gpu=False):
    for b, expected in enumerate(per_image):
        got = host(batched)[b]
        step = np.abs(got.astype(np.int64) - expected.astype(np.int64))
        differ, allowed = int((step > 0).sum()), max(1, expected.size // 1000) if on_gpu else 0
        assert got.dtype == expected.dtype and differ <= allowed and step.max() <= on_gpu, (
            f"{what}: image {b} of the batch differs from the op alone in {differ} of "
            f"{expected.size} pixels by up to {step.max()} (dtype {got.dtype}, expected "
            f"{expected.dtype}, at most {allowed} pixels by {int(on_gpu)})")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op, batch_op, draw", [
    (ops.rotate, ops.rotate_batch, lambda rng: [*rng.uniform(-180, 180, 4), 90.0, 0.0, -15.0]),
    (ops.translate, ops.translate_batch,
     lambda rng: [tuple(v) for v in rng.uniform(-16, 16, (5, 2))] + [(0.0, 0.0), (3.0, -2.0)]),
    (ops.scale, ops.scale_batch, lambda rng: [*rng.uniform(0.2, 3.0, 5), 1.0, (0.5, 2.0)]),
])
@pytest.mark.parametrize("order", [1, 0])
def test_geometric_batch_equals_each_image_alone(xp, on_gpu, rng, shape, op, batch_op, draw,
                                                  order):
    images, masks = stacks(rng, shape)
    values = draw(rng)
    for stack in (images, masks):
        out = batch_op(xp.asarray(stack), values, order=order)
        expected = [op(image, value, order=order) for image, value in zip(stack, values)]
        assert_same_per_image(out, expected, f"{op.__name__} order {order} {stack.dtype} {shape}",
                              on_gpu)
    for mask_stack in (masks, masks.astype(np.uint8)):
        out, masks_out = batch_op(xp.asarray(images), values, order=order,
                                  masks=xp.asarray(mask_stack))
        what = f"{op.__name__} order {order} with {mask_stack.dtype} masks {shape}"
        assert_same_per_image(out, [op(image, value, order=order)
                                    for image, value in zip(images, values)], what, on_gpu)
        assert_same_per_image(masks_out, [op(mask, value, order=0)
                                          for mask, value in zip(mask_stack, values)],
                              f"{what}: the masks", on_gpu)


def per_image_maps(op, values, shape):
    """(matrices, offsets) of :func:`ops.affine_batch` for each value, from the ops' docstrings:
    rotate ``R (o - c) + c``, translate ``o - shift``, scale ``(o - c) / f + c``."""
    centre = (np.array(shape) - 1) / 2
    maps = []
    for value in values:
        if op is ops.rotate:
            t = np.radians(value)
            matrix = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
            if value % 90 == 0:
                matrix = np.round(matrix)
            maps.append((matrix, centre - matrix @ centre))
        elif op is ops.translate:
            maps.append((np.eye(2), -np.array(value, float)))
        else:
            factor = np.broadcast_to(np.array(value, float), 2)
            maps.append((np.diag(1 / factor), centre - centre / factor))
    return [m for m, _ in maps], [t for _, t in maps]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op, draw", [
    (ops.rotate, lambda rng: [*rng.uniform(-180, 180, 4), 90.0, 0.0, -15.0]),
    (ops.translate, lambda rng: [tuple(v) for v in rng.uniform(-16, 16, (6, 2))] + [(0.0, 0.0)]),
    (ops.scale, lambda rng: [*rng.uniform(0.2, 3.0, 5), 1.0, (0.5, 2.0)]),
])
@pytest.mark.parametrize("order", [1, 0])
def test_one_affine_call_equals_each_image_alone(xp, on_gpu, rng, shape, op, draw, order):
    images, masks = stacks(rng, shape)
    values = draw(rng)
    matrices, offsets = per_image_maps(op, values, shape)
    for stack in (images, masks):
        out = ops.affine_batch(xp.asarray(stack), matrices, offsets, order=order)
        expected = [op(image, value, order=order) for image, value in zip(stack, values)]
        assert_same_per_image(out, expected,
                              f"affine_batch as {op.__name__} order {order} {stack.dtype} {shape}",
                              on_gpu)
    out, masks_out = ops.affine_batch(xp.asarray(images), matrices, offsets, order=order,
                                      masks=xp.asarray(masks))
    what = f"affine_batch as {op.__name__} order {order} with masks {shape}"
    assert_same_per_image(out, [op(image, value, order=order)
                                for image, value in zip(images, values)], what, on_gpu)
    assert_same_per_image(masks_out, [op(mask, value, order=0)
                                      for mask, value in zip(masks, values)],
                          f"{what}: the masks", on_gpu)


def test_affine_batch_refuses_cubic(xp):
    with pytest.raises(ConfigError, match="order must be 0 or 1"):
        ops.affine_batch(xp.asarray(np.zeros((2, 4, 4))), [np.eye(2)] * 2, [(0, 0)] * 2, order=3)


@pytest.mark.parametrize("masks, words", [
    (np.zeros((2, 4, 5), bool), r"masks of shape \(2, 4, 5\) for images of shape \(2, 4, 4\)"),
    (np.zeros((2, 4, 4), np.float32), "masks must be bool or uint8, got dtype float32"),
    (np.zeros((4, 4), bool), r"expected a mask stack \(B, H, W\), got shape \(4, 4\)"),
])
def test_affine_batches_refuse_bad_masks(xp, masks, words):
    images = xp.asarray(np.zeros((2, 4, 4), np.uint8))
    calls = {
        "affine_batch": lambda m: ops.affine_batch(images, [np.eye(2)] * 2, [(0, 0)] * 2,
                                                   masks=m),
        "rotate_batch": lambda m: ops.rotate_batch(images, [0.0, 1.0], masks=m),
        "translate_batch": lambda m: ops.translate_batch(images, [(0, 1)] * 2, masks=m),
        "scale_batch": lambda m: ops.scale_batch(images, [1.0, 2.0], masks=m),
    }
    for name, call in calls.items():
        with pytest.raises(InputError, match=f"{name}: {words}"):
            call(xp.asarray(masks))


@pytest.mark.parametrize("shape", SHAPES)
def test_blur_batch_equals_each_image_alone(xp, on_gpu, rng, shape):
    images, _ = stacks(rng, shape)
    sigmas = [0.0, 1.5, 1.5, 0.7, 3.0, 0.3, 1.5]
    out = ops.gaussian_blur_batch(xp.asarray(images), sigmas)
    expected = [ops.gaussian_blur(image, sigma) for image, sigma in zip(images, sigmas)]
    assert_same_per_image(out, expected, f"gaussian_blur {shape}", on_gpu)


@pytest.mark.parametrize("shape", SHAPES)
def test_jpeg_batch_equals_each_image_alone(xp, rng, shape):
    images, _ = stacks(rng, shape)
    qualities = [1, 95, 50, 50, 10, 75, 30]
    out = ops.jpeg_batch(xp.asarray(images), qualities)
    expected = [ops.jpeg(image, quality) for image, quality in zip(images, qualities)]
    assert_same_per_image(out, expected, f"jpeg {shape}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_rotate90_batch_equals_each_image_alone(xp, rng, shape, k):
    images, masks = stacks(rng, shape)
    for stack in (images, masks):
        out = ops.rotate90_batch(xp.asarray(stack), k)
        assert_same_per_image(out, [ops.rotate90(image, k) for image in stack],
                              f"rotate90 k={k} {shape}")


@pytest.mark.parametrize("axis", ["horizontal", "vertical", 0, 1])
def test_flip_batch_equals_each_image_alone(xp, rng, axis):
    images, masks = stacks(rng, (31, 47))
    for stack in (images, masks, images.astype(np.float32), images.astype(np.int16)):
        out = ops.flip_batch(xp.asarray(stack), axis)
        assert_same_per_image(out, [ops.flip(image, axis) for image in stack],
                              f"flip {axis} of {stack.dtype}")
    out, moved = ops.flip_batch(xp.asarray(images), axis, masks=xp.asarray(masks))
    assert_same_per_image(out, [ops.flip(image, axis) for image in images], f"flip {axis}")
    assert_same_per_image(moved, [ops.flip(mask, axis) for mask in masks], f"flip {axis} masks")


def test_batch_ops_refuse_a_single_image_and_a_short_vector(xp):
    with pytest.raises(InputError, match=r"expected a stack \(B, H, W\)"):
        ops.rotate_batch(xp.asarray(np.zeros((4, 4), np.uint8)), [1.0])
    with pytest.raises(ConfigError, match="3 images but 2 values of sigmas"):
        ops.gaussian_blur_batch(xp.asarray(np.zeros((3, 4, 4), np.uint8)), [1.0, 2.0])


def assert_resized_close(got, expected, what):
    """CuPy's resampling (band-sparse sums in tap order) against NumPy's (BLAS matrix products):
    uint8 at most 1 grey level apart on at most 1 % of the pixels (a sum sitting on a .5 may
    round either way); floats within rtol 1e-5, with an absolute floor of 1e-5 of the image's
    range for values that cancel to near 0; bool and other types equal."""
    got = host(got)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (
        f"{what}: got {got.dtype} {got.shape}, expected {expected.dtype} {expected.shape}")
    if expected.dtype == np.uint8:
        step = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        differ = int(np.count_nonzero(step))
        assert step.max() <= 1 and differ <= expected.size // 100, (
            f"{what}: {differ} of {expected.size} pixels differ from NumPy's resize, by up to "
            f"{step.max()} grey levels (expected at most {expected.size // 100} by 1)")
    elif expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(expected).max()),
                                   err_msg=f"{what} vs NumPy's resize")
    else:
        np.testing.assert_array_equal(got, expected, err_msg=f"{what} vs NumPy's resize")


def crops_of_one_frame(rng, dtype):
    """Views of one frame (three boxes, ROI crops as roi_box makes them) and two images of their
    own, with the sizes each goes to: downscaling, upscaling and both at once."""
    frame = rng.integers(0, 256, (61, 47)).astype(dtype)
    boxes = [(slice(10, 40), slice(5, 45)), (slice(0, 61), slice(20, 47)), (slice(3, 8),
                                                                              slice(3, 9))]
    images = [frame[box] for box in boxes] + [rng.integers(0, 256, (9, 33)).astype(dtype),
                                              frame]
    sizes = [(24, 24), (80, 11), (24, 24), (20, 16), (31, 94)]
    return frame, boxes, images, sizes


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("order", [3, 1])
def test_resize_many_of_mixed_shapes_equals_each_image_alone(xp, rng, dtype, order):
    frame, boxes, images, sizes = crops_of_one_frame(rng, dtype)
    device_frame = xp.asarray(frame)
    # The crops as views of the frame on the device too, read in place by the kernels.
    inputs = [device_frame[box] for box in boxes] + [xp.asarray(images[3]), device_frame]
    out = ops.resize_many(inputs, sizes, order=order)
    assert isinstance(out, list) and len(out) == len(images), f"{type(out)} of {len(out)}"
    for j, (image, size, got) in enumerate(zip(images, sizes, out)):
        what = f"image {j} {image.shape} -> {size} {np.dtype(dtype).name} order {order}"
        alone = host(ops.resize(xp.asarray(np.ascontiguousarray(image)), size, order=order))
        assert np.array_equal(host(got), alone), (
            f"{what}: differs from resize of the image alone in "
            f"{int(np.count_nonzero(host(got) != alone))} of {alone.size} pixels")
        assert_resized_close(got, ops.resize(image, size, order=order), what)


def test_resize_many_reads_any_view(xp, rng):
    """Rows reversed (a negative row stride, read in place), columns stepped and a transpose
    (copied first): on CuPy each the bytes of resize of a contiguous copy (NumPy's BLAS may
    sum a transposed operand in another order, so there the view itself is the reference)."""
    frame = rng.integers(0, 256, (40, 50)).astype(np.float32)
    device = xp.asarray(frame)
    views = [(device[::-1, 3:40], frame[::-1, 3:40]), (device[::2, ::3], frame[::2, ::3]),
             (device.T, frame.T)]
    out = ops.resize_many([view for view, _ in views], [(17, 23), (30, 9), (41, 12)])
    for j, ((_, image), got) in enumerate(zip(views, out)):
        alone = host(ops.resize(image if xp is np else xp.asarray(np.ascontiguousarray(image)),
                                got.shape))
        assert np.array_equal(host(got), alone), f"view {j} {image.strides}: differs from a copy"


@pytest.mark.parametrize("order", [3, 1, 0])
def test_resize_many_of_masks_and_other_types_goes_image_by_image(xp, rng, order):
    for dtype in (bool, np.int16, np.uint8):
        _, _, images, sizes = crops_of_one_frame(rng, np.uint8)
        images = [(image > 127).astype(dtype) for image in images]
        out = ops.resize_many([xp.asarray(image) for image in images], sizes, order=order)
        for j, (image, size, got) in enumerate(zip(images, sizes, out)):
            what = f"image {j} {np.dtype(dtype).name} -> {size} order {order}"
            alone = host(ops.resize(xp.asarray(image), size, order=order))
            assert np.array_equal(host(got), alone), f"{what}: differs from the image alone"


def test_resize_many_stacks_and_takes_one_size_for_all(xp, rng):
    _, _, images, _ = crops_of_one_frame(rng, np.uint8)
    inputs = [xp.asarray(image) for image in images]
    stack = ops.resize_many(inputs, (24, 24), stack=True)
    assert stack.shape == (5, 24, 24) and stack.dtype == np.uint8, (stack.shape, stack.dtype)
    listed = ops.resize_many(inputs, [(24, 24)] * 5)
    for j, image in enumerate(listed):
        assert np.array_equal(host(stack)[j], host(image)), f"image {j}: stack != list"
    assert ops.resize_many([], (24, 24)) == []


def test_resize_many_refuses_bad_lists(xp):
    images = [xp.zeros((4, 5), np.uint8), xp.zeros((6, 3), np.uint8)]
    with pytest.raises(ConfigError, match=r"2 images but sizes \[\(2, 2\)\]"):
        ops.resize_many(images, [(2, 2)])
    with pytest.raises(ConfigError, match="stack=True needs one size for all images, got 2"):
        ops.resize_many(images, [(2, 2), (3, 3)], stack=True)
    with pytest.raises(InputError, match=r"different dtypes \(float32, uint8\)"):
        ops.resize_many([images[0], xp.zeros((4, 4), np.float32)], (2, 2))
    with pytest.raises(InputError, match="resize_many: expected a 2-D image"):
        ops.resize_many([xp.zeros((2, 4, 4), np.uint8)], (2, 2))
    with pytest.raises(ConfigError, match=r"size must be a pair \(H, W\)"):
        ops.resize_many(images, [(2, 2), (0, 3)])


def test_scan_convert_many_equals_scan_convert_per_image(xp, rng):
    _, _, images, _ = crops_of_one_frame(rng, np.uint8)
    spacings = [(0.05, 0.3), (0.02, 0.2), (0.05, 0.3), (0.1, 0.1), (0.03, 0.15)]
    inputs = [xp.asarray(image) for image in images]
    for spacing, pixel in [(spacings, None), (spacings, 0.1), ((0.05, 0.3), 0.1)]:
        out = ops.scan_convert_many(inputs, spacing, pixel)
        per_image = spacing if len(spacing) == len(images) else [spacing] * len(images)
        for j, (image, got) in enumerate(zip(inputs, out)):
            alone = host(ops.scan_convert(image, per_image[j], pixel))
            assert np.array_equal(host(got), alone), (
                f"image {j} spacing {per_image[j]} pixel {pixel}: differs from scan_convert alone")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", [3, 1, 0])
def test_resize_and_scan_convert_of_a_stack_equal_each_image_alone(xp, on_gpu, rng, shape,
                                                                  order):
    """Batch and per-image op on one backend: the same bytes; each against NumPy's op as
    :func:`assert_resized_close` allows (exact on NumPy)."""
    images, masks = stacks(rng, shape)
    for stack in (images, masks, images.astype(np.float32)):
        for size in [(23, 40), shape[::-1]]:
            out = ops.resize_many(list(xp.asarray(stack)), size, order=order, stack=True)
            what = f"resize to {size} order {order} {stack.dtype} {shape}"
            alone = [host(ops.resize(xp.asarray(image), size, order=order)) for image in stack]
            assert_same_per_image(out, alone, what)
            for b, image in enumerate(stack):
                expected = ops.resize(image, size, order=order)
                if on_gpu and stack.dtype == bool:  # cuBLAS's sums, then > 0.5
                    assert_same_per_image(out[b:b + 1], [expected], what, on_gpu)
                else:
                    assert_resized_close(out[b], expected, f"{what} image {b}")
        spacing = (0.05, 0.3)
        out = xp.stack(ops.scan_convert_many(list(xp.asarray(stack)), spacing, 0.1, order=order))
        what = f"scan_convert order {order} {stack.dtype} {shape}"
        alone = [host(ops.scan_convert(xp.asarray(image), spacing, 0.1, order=order))
                 for image in stack]
        assert_same_per_image(out, alone, what)


def test_resize_many_refuses_a_bad_size(xp):
    with pytest.raises(ConfigError, match=r"size must be a pair \(H, W\) of integers >= 1"):
        ops.resize_many(list(xp.zeros((2, 8, 8), np.uint8)), (0, 8))
