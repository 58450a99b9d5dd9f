"""Feed-forward style transfer: AdaIN statistics, StyleNet shapes/range/freezing, and mass
generation (each image encoded once, same pixels as the direct forward pass)."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
import zarr

from augengine.errors import ConfigError, InputError
from augengine.models import resnet18
from augengine.nst.feedforward import Decoder, StyleNet, adain, align_statistics, feature_stats
from augengine.nst.generate import generate, to_uint8, to_unit
from augengine.nst.pairs import plan_pairs

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return StyleNet(resnet18(), layer="layer2")


@pytest.fixture(scope="module")
def images():
    """Six 32 x 32 uint8 images, labels 0 0 0 1 1 1: 3^2 + 3^2 = 18 within-class pairs."""
    return np.random.default_rng(7).integers(0, 256, (6, 32, 32), dtype=np.uint8)


LABELS = [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("module", ["augengine.nst.feedforward", "augengine.nst.generate"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


# ------------------------------------------------------------------------------------ AdaIN


def test_adain_hand_values():
    # content [0, 2]: mean 1, std 1; style [5, 11]: mean 8, std 3 -> 3 * (x - 1) + 8 = [5, 11].
    x = torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)
    y = torch.tensor([5.0, 11.0]).reshape(1, 1, 1, 2)
    out = adain(x, y, eps=0.0).flatten().tolist()
    assert out == [5.0, 11.0], f"AdaIN([0, 2] -> style [5, 11]): expected [5, 11], got {out}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("style_batch", [3, 1])
def test_adain_output_has_the_style_channel_statistics(device, style_batch):
    g = torch.Generator().manual_seed(1)
    content = (torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64) * 2 + 1).to(device)
    style = (torch.randn(style_batch, 5, 4, 9, generator=g, dtype=torch.float64) * 0.5 - 3).to(
        device
    )
    out = adain(content, style, eps=0.0)
    mean, std = feature_stats(out, eps=0.0)
    style_mean, style_std = feature_stats(style, eps=0.0)
    torch.testing.assert_close(mean, style_mean.expand_as(mean), rtol=0, atol=1e-12,
                               msg="AdaIN output mean differs from the style's channel means")
    torch.testing.assert_close(std, style_std.expand_as(std), rtol=1e-12, atol=0,
                               msg="AdaIN output std differs from the style's channel stds")


def test_adain_eps_shrinks_the_std_by_the_documented_factor():
    eps = 1e-2
    content = torch.tensor([0.0, 0.2], dtype=torch.float64).reshape(1, 1, 1, 2)  # var 0.01
    style = torch.tensor([0.0, 2.0], dtype=torch.float64).reshape(1, 1, 1, 2)    # var 1
    _, std = feature_stats(adain(content, style, eps=eps), eps=0.0)
    expected = (1.0 + eps) ** 0.5 * (0.01 / (0.01 + eps)) ** 0.5       # sigma_y * sqrt(vx/(vx+e))
    assert std.item() == pytest.approx(expected, rel=1e-12), (
        f"std with eps={eps}: expected {expected:.6f}, got {std.item():.6f}"
    )


def test_constant_channel_stays_finite():
    out = adain(torch.ones(1, 2, 3, 3), torch.randn(1, 2, 3, 3))
    assert torch.isfinite(out).all(), "a constant content channel gave non-finite AdaIN output"


def test_align_statistics_equals_adain():
    g = torch.Generator().manual_seed(3)
    content, style = torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    direct = adain(content, style)
    from_stats = align_statistics(content, *feature_stats(content), *feature_stats(style))
    assert torch.equal(direct, from_stats), "align_statistics differs from adain"


@pytest.mark.parametrize(
    "content, style",
    [
        (torch.zeros(2, 4, 3, 3), torch.zeros(2, 5, 3, 3)),  # channels differ
        (torch.zeros(2, 4, 3, 3), torch.zeros(3, 4, 3, 3)),  # batch neither 2 nor 1
        (torch.zeros(4, 3, 3), torch.zeros(4, 3, 3)),        # not 4-D
    ],
)
def test_adain_rejects_mismatched_features(content, style):
    with pytest.raises(InputError):
        adain(content, style)


# --------------------------------------------------------------------------------- StyleNet


def test_stylenet_measures_encoder_stride_and_width(net):
    assert (net.channels, net.stride) == (128, 8), (
        f"resnet18 layer2: expected 128 channels, stride 8, got {net.channels}, {net.stride}"
    )


@pytest.mark.parametrize("size", [(32, 32), (40, 48), (36, 36)])
def test_output_shape_and_range(net, size):
    content = torch.rand(2, 1, *size)
    with torch.no_grad():
        out = net(content, torch.rand(1, 1, 32, 32))
    assert out.shape == (2, 1, *size), f"content {size}: expected (2, 1, {size}), got {out.shape}"
    assert out.min() >= 0 and out.max() <= 1, (
        f"content {size}: output outside [0, 1]: [{out.min():.3f}, {out.max():.3f}]"
    )


def test_encoder_is_frozen_and_stays_in_eval_mode(net):
    net.train()
    try:
        assert not net.encoder.training, "StyleNet.train() put the encoder in training mode"
        out = net(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32))
        out.mean().backward()
        encoder_grads = [p.grad for p in net.encoder.parameters() if p.grad is not None]
        decoder_grads = [p.grad for p in net.decoder.parameters() if p.grad is not None]
        assert not encoder_grads, f"{len(encoder_grads)} encoder parameters received gradients"
        assert len(decoder_grads) == len(list(net.decoder.parameters())), "decoder got no grads"
    finally:
        net.decoder.zero_grad(set_to_none=True)
        net.eval()


def test_alpha_zero_decodes_the_content_features(net):
    content = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = net(content, torch.rand(2, 1, 32, 32), alpha=0.0)
        expected = net.decode(net.encode(content))
    assert torch.equal(out, expected), "alpha=0 should decode the content's own features"


@pytest.mark.parametrize("in_channels, upsamplings", [(64, 1), (128, 3), (1024, 4)])
def test_untrained_decoder_draws_an_image_not_a_constant(in_channels, upsamplings):
    # With PyTorch's default convolution init the variance shrank ~6x per layer: these decoders
    # drew a near-uniform grey (pixel std 0.015, 2e-4, 3e-5), and short trainings stayed flat.
    torch.manual_seed(0)
    decoder = Decoder(in_channels, upsamplings)
    features = torch.randn(2, in_channels, 4, 4).relu()
    with torch.no_grad():
        std = decoder(features).std(dim=(1, 2, 3))
    assert (std > 0.02).all(), (
        f"untrained Decoder({in_channels}, {upsamplings}): pixel std {std.tolist()}, "
        "expected > 0.02"
    )


def test_bad_inputs_and_settings(net):
    with pytest.raises(InputError, match="content"):
        net(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))       # RGB, not grey
    with pytest.raises(InputError, match="features"):
        net.decode(torch.rand(1, 64, 4, 4))                            # wrong width
    with pytest.raises(InputError, match="2 x 2"):
        net.decode(torch.rand(1, 128, 1, 1))                           # reflect pad needs 2 x 2
    with pytest.raises(ConfigError, match="alpha"):
        net(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32), alpha=1.5)
    with pytest.raises(ConfigError, match="layer"):
        StyleNet(resnet18(), layer="no_such_layer")


# ------------------------------------------------------------------------------- generation


def _direct(net, images, pairs):
    """uint8 results of the plain forward pass, one pair at a time."""
    out = []
    with torch.no_grad():
        for content, style in pairs:
            out.append(to_uint8(net(to_unit(images[[content]]), to_unit(images[[style]]))))
    return np.concatenate(out)


def _collect(batches, n_rows):
    rows_seen, out = [], np.zeros((n_rows, 32, 32), dtype=np.uint8)
    for rows, batch in batches:
        assert batch.dtype == np.uint8 and batch.shape == (len(rows), 32, 32), (
            f"batch of rows {rows.tolist()}: got {batch.dtype} {batch.shape}"
        )
        out[rows] = batch
        rows_seen += rows.tolist()
    assert rows_seen == list(range(n_rows)), f"rows yielded {rows_seen}, expected 0..{n_rows - 1}"
    return out


def test_generation_encodes_each_image_once(net, images):
    pairs = plan_pairs(LABELS)
    encoded = []
    handle = net.encoder.conv1.register_forward_hook(lambda m, i, o: encoded.append(o.shape[0]))
    try:
        _collect(generate(net, images, pairs, batch_size=4), len(pairs))
    finally:
        handle.remove()
    assert len(pairs) == 18
    assert sum(encoded) == 6, (
        f"18 pairs of 6 images: expected 6 encoded images, the encoder saw {sum(encoded)}"
    )


def test_generation_equals_direct_forward_per_pair(net, images):
    pairs = plan_pairs(LABELS)
    generated = _collect(generate(net, images, pairs, batch_size=5), len(pairs))
    direct = _direct(net, images, pairs)
    diff = np.abs(generated.astype(int) - direct.astype(int))
    # Same arithmetic; only the batch composition of the convolutions differs, which can move a
    # value sitting on a rounding boundary by one grey level.
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels (expected <= 1)"
    assert (diff == 0).mean() > 0.99, f"only {(diff == 0).mean():.4f} of pixels are identical"


def test_host_feature_bank_and_zarr_input_give_the_same_images(net, images, tmp_path):
    pairs = plan_pairs(LABELS)
    on_device = _collect(generate(net, images, pairs, batch_size=4), len(pairs))
    on_host = _collect(generate(net, images, pairs, batch_size=4, max_feature_bytes=0),
                       len(pairs))
    assert np.array_equal(on_device, on_host), "host-memory feature bank changed the images"
    stored = zarr.create_array(tmp_path / "images.zarr", shape=images.shape, chunks=(1, 32, 32),
                               dtype="uint8")
    stored[:] = images
    from_zarr = _collect(generate(net, stored, pairs, batch_size=4), len(pairs))
    assert np.array_equal(on_device, from_zarr), "reading from Zarr changed the images"


def test_only_used_images_are_encoded_and_only_content_features_kept(net, images):
    pairs = np.array([[4, 5], [4, 3]])  # images 3, 4, 5 used; only 4 as content
    encoded = []
    handle = net.encoder.conv1.register_forward_hook(lambda m, i, o: encoded.append(o.shape[0]))
    try:
        out = _collect(generate(net, images, pairs, batch_size=8), 2)
    finally:
        handle.remove()
    assert sum(encoded) == 3, f"pairs use images 3, 4, 5: expected 3 encoded, got {sum(encoded)}"
    direct = _direct(net, images, pairs)
    assert np.abs(out.astype(int) - direct.astype(int)).max() <= 1, "explicit pairs differ"


def test_bf16_and_channels_last_stay_close_to_float32(net, images):
    pairs = plan_pairs(LABELS)
    reference = _collect(generate(net, images, pairs, batch_size=6), len(pairs)).astype(int)
    fast = _collect(generate(net, images, pairs, batch_size=6, dtype=torch.bfloat16,
                             channels_last=True), len(pairs)).astype(int)
    mean_diff = np.abs(fast - reference).mean()
    # bf16 keeps 8 significant bits: a few grey levels on average, not a different image.
    assert mean_diff < 4.0, f"bf16 + channels_last: mean difference {mean_diff:.2f} grey levels"
    net.to(memory_format=torch.contiguous_format)


@pytest.mark.parametrize(
    "bad_images, bad_pairs, match",
    [
        (np.zeros((3, 32, 32), np.float32), [[0, 1]], "uint8"),
        (np.zeros((3, 32), np.uint8), [[0, 1]], "uint8"),
        (np.zeros((3, 32, 32), np.uint8), [[0, 3]], "outside"),
        (np.zeros((3, 32, 32), np.uint8), [[0, 1, 2]], r"\(M, 2\)"),
        (np.zeros((3, 32, 32), np.uint8), np.zeros((0, 2), np.int64), r"\(M, 2\)"),
    ],
)
def test_generate_rejects_bad_input_at_the_call(net, bad_images, bad_pairs, match):
    with pytest.raises(InputError, match=match):
        generate(net, bad_images, bad_pairs)  # raised before iterating


def test_generate_rejects_bad_settings(net, images):
    with pytest.raises(ConfigError, match="batch_size"):
        generate(net, images, [[0, 1]], batch_size=0)
    with pytest.raises(ConfigError, match="alpha"):
        generate(net, images, [[0, 1]], alpha=-0.1)


def test_precomputed_statistics_give_the_same_images_and_encode_only_contents(net, images):
    from augengine.nst.generate import generate, image_statistics

    pairs = plan_pairs([0, 0, 0, 1, 1, 1])
    direct = np.concatenate([out for _, out in generate(net, images, pairs, batch_size=5)])
    statistics = image_statistics(net, images, batch_size=4)
    encoded = []
    hook = net.encoder.conv1.register_forward_hook(lambda m, i, o: encoded.append(o.shape[0]))
    try:
        shard = pairs[3:9]                                  # contents 1 and 2 only
        reused = np.concatenate([out for _, out in generate(net, images, shard, batch_size=5,
                                                            statistics=statistics)])
    finally:
        hook.remove()
    np.testing.assert_array_equal(reused, direct[3:9])
    assert sum(encoded) == 2, f"only the 2 content images should be encoded, got {sum(encoded)}"
