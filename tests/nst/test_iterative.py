"""Iterative style transfer (loss falls, [0, 1], batch == per pair, relevance keeps content) and
the quality checks run on its results (SSIM hand values, style distance before/after)."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.models import feature_extractor, resnet18
from augengine.nst import StyleTransferLoss
from augengine.nst.iterative import stylize
from augengine.nst.quality import assess_quality, ssim, style_distance

STYLE_LAYERS = ("relu", "layer1")


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return resnet18().eval().double()


@pytest.fixture(scope="module")
def loss():
    return StyleTransferLoss(beta=1e3, content_layers=("layer2",), style_layers=STYLE_LAYERS)


@pytest.fixture(scope="module")
def pairs():
    """Two content images (smooth gradients reaching 0 and 1) and two style images (speckle)."""
    g = torch.Generator().manual_seed(5)
    ramp = torch.linspace(0, 1, 32, dtype=torch.float64)
    content = torch.stack([ramp.expand(32, 32), ramp.expand(32, 32).T]).unsqueeze(1)
    style = torch.rand(2, 1, 32, 32, generator=g, dtype=torch.float64) ** 3
    return content.contiguous(), style


@pytest.mark.parametrize("module", ["augengine.nst.iterative", "augengine.nst.quality"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


# ------------------------------------------------------------------------------- iterative


def test_loss_falls_and_images_stay_in_unit_range(network, loss, pairs):
    content, style = pairs
    result = stylize(content, style, loss, network, iterations=15, lr=0.05)
    first, last = result.history[0], result.history[-1]
    assert result.history.shape == (15, 2)
    for n in range(2):
        assert last[n] < 0.7 * first[n], (
            f"pair {n}: loss {first[n]:.4g} -> {last[n]:.4g}, expected a fall of > 30 %"
        )
    low, high = result.images.min().item(), result.images.max().item()
    assert 0.0 <= low and high <= 1.0, f"images outside [0, 1]: [{low}, {high}]"
    assert not result.images.requires_grad, "returned images should be detached"


def test_batch_of_pairs_equals_each_pair_alone(network, loss, pairs):
    content, style = pairs
    batched = stylize(content, style, loss, network, iterations=4).images
    for n in range(2):
        alone = stylize(content[n:n + 1], style[n:n + 1], loss, network, iterations=4).images
        torch.testing.assert_close(batched[n:n + 1], alone, rtol=0, atol=1e-9,
                                   msg=f"pair {n}: batched result differs from running it alone")


def test_style_of_batch_one_is_shared(network, loss, pairs):
    content, style = pairs
    shared = stylize(content, style[:1], loss, network, iterations=2).images
    repeated = stylize(content, style[:1].expand(2, -1, -1, -1), loss, network,
                       iterations=2).images
    torch.testing.assert_close(shared, repeated, rtol=0, atol=1e-9,
                               msg="a style batch of 1 should style every pair")


def test_one_reference_stack_equals_a_single_style(network, loss, pairs):
    content, style = pairs
    single = stylize(content, style, loss, network, iterations=2).images
    stacked = stylize(content, style.unsqueeze(1), loss, network, iterations=2).images
    torch.testing.assert_close(single, stacked, rtol=0, atol=1e-12,
                               msg="K=1 reference stack should equal the single-style loss")
    three = torch.stack([style, style.flip(-1), style.flip(-2)], dim=1)  # (N, 3, 1, H, W)
    result = stylize(content, three, loss, network, iterations=3)
    assert result.history[-1].sum() < result.history[0].sum(), "K=3 references: loss did not fall"


def test_relevance_keeps_the_relevant_half(network, pairs):
    # Content loss only, relevance on the left half: the left half must stay closer to the
    # content than the right half, which only the style term moves.
    content, style = pairs
    loss = StyleTransferLoss(alpha=1.0, beta=3e3, content_layers=("layer1",),
                             style_layers=STYLE_LAYERS)
    relevance = torch.zeros(2, 32, 32, dtype=torch.float64)
    relevance[:, :, :16] = 1.0
    out = stylize(content, style, loss, network, relevance=relevance, iterations=15,
                  lr=0.05).images
    change = (out - content).abs()
    left, right = change[..., :16].mean().item(), change[..., 16:].mean().item()
    assert left < 0.5 * right, f"mean change left {left:.4f} vs right {right:.4f}: expected < 1/2"


def test_lbfgs_lowers_the_loss(network, loss, pairs):
    content, style = pairs
    result = stylize(content, style, loss, network, iterations=3, optimizer="lbfgs")
    assert result.history[-1].sum() < result.history[0].sum(), (
        f"L-BFGS: loss {result.history[0].sum():.4g} -> {result.history[-1].sum():.4g}"
    )
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0


def test_callback_sees_every_step_and_can_stop(network, loss, pairs):
    content, style = pairs
    seen = []

    def callback(step, images, losses):
        seen.append((step, tuple(images.shape), tuple(losses.shape)))
        return step == 3

    result = stylize(content, style, loss, network, iterations=10, callback=callback)
    assert seen == [(k, (2, 1, 32, 32), (2,)) for k in (1, 2, 3)], f"callback calls {seen}"
    assert result.history.shape == (3, 2), f"stopped at 3: history {tuple(result.history.shape)}"


def test_init_tensor_is_the_starting_point(network, loss, pairs):
    content, style = pairs
    start = torch.full_like(content, 0.5)
    seen = []
    stylize(content, style, loss, network, iterations=1, init=start, lr=1e-9,
            callback=lambda step, images, losses: seen.append(images.clone()))
    torch.testing.assert_close(seen[0], start, rtol=0, atol=1e-8,
                               msg="init tensor: first iterate should sit at the given start")


def test_bad_arguments(network, loss, pairs):
    content, style = pairs
    with pytest.raises(ConfigError, match="iterations"):
        stylize(content, style, loss, network, iterations=0)
    with pytest.raises(ConfigError, match="optimizer"):
        stylize(content, style, loss, network, optimizer="sgd")
    with pytest.raises(ConfigError, match="lr"):
        stylize(content, style, loss, network, lr=-1.0)
    with pytest.raises(ConfigError, match="init"):
        stylize(content, style, loss, network, init="noise")
    with pytest.raises(InputError, match="style"):
        stylize(content, torch.rand(3, 1, 32, 32, dtype=torch.float64), loss, network)
    with pytest.raises(InputError, match="content"):
        stylize(content[:, 0], style, loss, network)
    network.train()
    try:
        with pytest.raises(ConfigError, match="training mode"):
            stylize(content, style, loss, network, iterations=1)
    finally:
        network.eval()


# --------------------------------------------------------------------------------- quality


def test_ssim_hand_values():
    flat_a, flat_b = torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.25)
    # Flat images: only the luminance term, (2 * 0.5 * 0.25 + C1) / (0.5^2 + 0.25^2 + C1).
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.25 + c1) / (0.25 + 0.0625 + c1)
    got = ssim(flat_a, flat_b).item()
    assert got == pytest.approx(expected, rel=1e-6), f"flat 0.5 vs 0.25: expected {expected:.6f}"
    x = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64)), "SSIM(x, x) != 1"
    # Inverted contrast around the same mean: structure term -1 wherever the image varies.
    inverted = ssim(x, 1 - x)
    assert (inverted < 0).all(), f"SSIM of an image and its negative: expected < 0, got {inverted}"
    assert torch.allclose(ssim(x, 1 - x), ssim(1 - x, x)), "SSIM is not symmetric"


def test_ssim_data_range_scales_the_constants():
    a = torch.full((1, 1, 11, 11), 0.5, dtype=torch.float64)
    b = torch.full((1, 1, 11, 11), 0.25, dtype=torch.float64)
    assert torch.allclose(ssim(a * 255, b * 255, data_range=255.0), ssim(a, b)), (
        "SSIM on 0-255 with data_range=255 should equal SSIM on 0-1"
    )


def test_ssim_rejects_bad_input():
    with pytest.raises(InputError, match="smaller"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(InputError, match="shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ConfigError, match="window_size"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), window_size=4)
    with pytest.raises(ConfigError, match="sigma"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), sigma=0.0)


def test_style_distance_is_the_sum_of_layer_losses(network, pairs):
    from augengine.models import imagenet_normalize
    from augengine.nst import gram_loss

    content, style = pairs
    extract = feature_extractor(network, STYLE_LAYERS)
    with torch.no_grad():
        got = style_distance(content, style, extract, layer_weights={"layer1": 2.0})
        fc, fs = extract(imagenet_normalize(content)), extract(imagenet_normalize(style))
        expected = (gram_loss(fc["relu"], fs["relu"], reduction="none")
                    + 2.0 * gram_loss(fc["layer1"], fs["layer1"], reduction="none"))
    torch.testing.assert_close(got, expected, msg="style distance != relu + 2 * layer1 Gram loss")
    with pytest.raises(ConfigError, match="layer_weights"):
        style_distance(content, style, extract, layer_weights={"layer4": 1.0})


def test_stylized_images_move_towards_the_style_and_keep_structure(network, loss, pairs):
    content, style = pairs
    result = stylize(content, style, loss, network, iterations=15, lr=0.05).images
    scores = assess_quality(result, content, style, feature_extractor(network, STYLE_LAYERS))
    for n in range(2):
        before, after = scores.style_before[n].item(), scores.style_after[n].item()
        assert after < 0.7 * before, f"pair {n}: style distance {before:.4g} -> {after:.4g}"
        assert 0.0 < scores.ssim[n] < 1.0, f"pair {n}: SSIM {scores.ssim[n]:.3f} not in (0, 1)"
    unchanged = assess_quality(content, content, style, feature_extractor(network, STYLE_LAYERS))
    assert torch.allclose(unchanged.ssim, torch.ones(2, dtype=torch.float64)), "SSIM(c, c) != 1"
    assert torch.equal(unchanged.style_before, unchanged.style_after)
