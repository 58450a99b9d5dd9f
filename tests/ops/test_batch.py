"""Batched ops on stacks (B, H, W) against their per-image ops: the same bytes, image for image.

Each test draws a different parameter per image (mixed signs, repeats, zero), on odd sizes, and
runs on every backend of ``BACKENDS`` (NumPy; CuPy on a GPU; CuPy emulated on the CPU) against
the NumPy per-image op: bit for bit on NumPy and emulated CuPy (whose cupyx.scipy.ndimage is
SciPy's). On a real GPU cupyx resamples and filters with its own float rounding, so there a
value may sit on the other side of a .5 and round one grey level away: at most 1 level, on at
most 0.1 % of the pixels (at least one; as tests/ops/test_cuda_parity.py allows for log_compress).
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
    for stack in (images, masks):
        out = ops.flip_batch(xp.asarray(stack), axis)
        assert_same_per_image(out, [ops.flip(image, axis) for image in stack], f"flip {axis}")


def test_batch_ops_refuse_a_single_image_and_a_short_vector(xp):
    with pytest.raises(InputError, match=r"expected a stack \(B, H, W\)"):
        ops.rotate_batch(xp.asarray(np.zeros((4, 4), np.uint8)), [1.0])
    with pytest.raises(ConfigError, match="3 images but 2 values of sigmas"):
        ops.gaussian_blur_batch(xp.asarray(np.zeros((3, 4, 4), np.uint8)), [1.0, 2.0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", [3, 1, 0])
def test_resize_and_scan_convert_batch_equal_each_image_alone(xp, on_gpu, rng, shape, order):
    images, masks = stacks(rng, shape)
    for stack in (images, masks, images.astype(np.float32)):
        for size in [(23, 40), shape[::-1]]:
            out = ops.resize_batch(xp.asarray(stack), size, order=order)
            expected = [ops.resize(image, size, order=order) for image in stack]
            assert_same_per_image(out, expected, f"resize to {size} order {order} "
                                  f"{stack.dtype} {shape}", on_gpu)
        spacing = (0.05, 0.3)
        out = ops.scan_convert_batch(xp.asarray(stack), spacing, 0.1, order=order)
        expected = [ops.scan_convert(image, spacing, 0.1, order=order) for image in stack]
        assert_same_per_image(out, expected, f"scan_convert order {order} {stack.dtype} {shape}",
                              on_gpu)


def test_resize_batch_refuses_a_bad_size(xp):
    with pytest.raises(ConfigError, match=r"size must be a pair \(H, W\) of integers >= 1"):
        ops.resize_batch(xp.zeros((2, 8, 8), np.uint8), (0, 8))
