"""SegNet (seed 004): shapes, and that the decoder unpools at the encoder's max positions."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from augengine.errors import InputError
from augengine.models.segnet import segnet


@pytest.mark.parametrize(("depth", "size"), [(1, (6, 4)), (3, (32, 24)), (5, (64, 32))])
def test_logits_have_the_input_size(depth, size):
    model = segnet(base_channels=2, depth=depth, num_classes=3).eval()
    out = model(torch.rand(2, 1, *size))
    assert out.shape == (2, 3, *size), f"depth {depth}: expected (2, 3, {size}), got {out.shape}"


def test_vgg16_encoder_layout():
    model = segnet()
    convs = [sum(isinstance(m, nn.Conv2d) for m in block.modules()) for block in model.encoder]
    widths = [block[-1][0].out_channels for block in model.encoder]
    assert convs == [2, 2, 3, 3, 3] and widths == [64, 128, 256, 512, 512]
    count = sum(p.numel() for p in model.parameters())
    assert count == 29_470_977, f"expected 29,470,977 parameters (paper: 29.5M), got {count:,}"


def test_unpooling_puts_each_maximum_back_where_the_encoder_found_it():
    # depth 1, width 1, identity 3x3 kernels and fresh BatchNorm in eval (x / sqrt(1 + 1e-5)):
    # the encoder level is relu(x) scaled by 1 / (1 + 1e-5), so the pooled maxima are the
    # hand-placed ones below and must come back at exactly those pixels.
    model = segnet(base_channels=1, depth=1).eval()
    with torch.no_grad():
        for conv in (m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)):
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1
    image = torch.full((1, 1, 4, 4), 0.1)
    peaks = {(0, 1): 0.9, (1, 2): 0.8, (3, 0): 0.7, (2, 3): 0.6}  # one per 2x2 window
    for (row, col), value in peaks.items():
        image[0, 0, row, col] = value
    seen = {}
    model.unpool.register_forward_hook(lambda module, args, out: seen.setdefault("out", out))
    model(image)
    unpooled = seen["out"][0, 0]
    scale = (1 + 1e-5) ** -1.0
    for row in range(4):
        for col in range(4):
            expected = peaks.get((row, col), 0.0) * scale
            assert unpooled[row, col].item() == pytest.approx(expected, abs=1e-6), \
                f"pixel ({row}, {col}): expected {expected:.6f} after unpooling, " \
                f"got {unpooled[row, col].item():.6f}"


def test_sides_not_divisible_are_refused():
    with pytest.raises(InputError, match="SegNet with depth=3 needs H and W divisible by 8"):
        segnet(base_channels=2, depth=3)(torch.rand(1, 1, 20, 16))
