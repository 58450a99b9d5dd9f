"""U-Net: output shapes, size and input errors, gradients to every parameter, parameter counts
from the architecture's formula, determinism, and the docstring examples."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.models.unet import UNet, double_conv, unet
from augengine.precision import full_float32
from tests.conftest import requires_gpu


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _formula_count(in_channels: int, num_classes: int, base: int, depth: int,
                   bilinear: bool) -> int:
    """Parameters of the U-Net written out: double conv ``9 a b + 9 b b + 4 b`` (two bias-free
    3x3 convs, two BatchNorms with weight and bias), up-convolution ``4 a b + b`` (2x2 transposed)
    or ``a b + b`` (1x1 after bilinear), head ``w0 K + K``."""
    def double(a, b):
        return 9 * a * b + 9 * b * b + 4 * b

    w = [base * 2**k for k in range(depth + 1)]
    total = double(in_channels, w[0]) + sum(double(w[k - 1], w[k]) for k in range(1, depth + 1))
    for k in range(depth):
        total += (1 if bilinear else 4) * w[k + 1] * w[k] + w[k]
        total += double(2 * w[k], w[k])
    return total + w[0] * num_classes + num_classes


@pytest.mark.parametrize("bilinear", [False, True], ids=["transposed", "bilinear"])
@pytest.mark.parametrize(("depth", "base", "size", "classes"),
                         [(1, 4, (6, 10), 1), (2, 4, (12, 20), 3), (3, 2, (64, 48), 2),
                          (4, 2, (32, 32), 1)])
def test_logits_have_the_input_size_and_num_classes(depth, base, size, classes, bilinear):
    model = unet(in_channels=1, num_classes=classes, base_channels=base, depth=depth,
                 bilinear=bilinear).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, *size))
    expected = (2, classes, *size)
    assert logits.shape == expected, (f"depth {depth}, input {size}: logits {tuple(logits.shape)}, "
                                      f"expected {expected}")
    assert logits.dtype == torch.float32


def test_multichannel_input_is_accepted():
    model = unet(in_channels=3, num_classes=2, base_channels=2, depth=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)


@pytest.mark.parametrize(("depth", "size", "expected"),
                         [(4, (65, 64), "divisible by 16, got 65x64 (H x W); pad or resize, e.g. "
                                        "to 80x64"),
                          (4, (64, 100), "divisible by 16, got 64x100 (H x W); pad or resize, "
                                         "e.g. to 64x112"),
                          (2, (6, 8), "divisible by 4, got 6x8 (H x W); pad or resize, e.g. to "
                                      "8x8"),
                          (3, (4, 4), "divisible by 8, got 4x4 (H x W); pad or resize, e.g. to "
                                      "8x8")])
def test_size_not_divisible_by_2_to_the_depth_names_the_size(depth, size, expected):
    model = unet(base_channels=2, depth=depth)
    with pytest.raises(InputError) as error:
        model(torch.rand(1, 1, *size))
    message = str(error.value)
    assert message == f"UNet with depth={depth} needs H and W " + expected, message


@pytest.mark.parametrize(("x", "expected"), [
    (torch.rand(1, 8, 8), "UNet with depth=2 expects a batch of images (N, C, H, W), got "
                          "(1, 8, 8)"),
    (torch.rand(1, 3, 8, 8), "UNet with depth=2 expects 1 input channels, got 3 "
                             "(shape (1, 3, 8, 8))"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.uint8), "UNet with depth=2 expects floating-point "
                                                  "images, got dtype torch.uint8"),
    ([[0.0]], "UNet with depth=2 expects a batch of images (N, C, H, W), got list"),
], ids=["3d", "channels", "uint8", "list"])
def test_bad_input_is_one_line_input_error(x, expected):
    with pytest.raises(InputError) as error:
        unet(base_channels=2, depth=2)(x)
    assert str(error.value) == expected


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"depth": 0}, "depth must be an integer >= 1, got 0"),
    ({"base_channels": -3}, "base_channels must be an integer >= 1, got -3"),
    ({"in_channels": 1.5}, "in_channels must be an integer >= 1, got 1.5"),
    ({"num_classes": True}, "num_classes must be an integer >= 1, got True"),
])
def test_bad_sizes_are_config_errors(kwargs, expected):
    with pytest.raises(ConfigError) as error:
        unet(**kwargs)
    assert str(error.value) == expected


@pytest.mark.parametrize("bilinear", [False, True], ids=["transposed", "bilinear"])
def test_gradient_reaches_every_parameter(bilinear):
    # No parameter may sit outside the forward pass: DDP/Horovod would wait for its gradient.
    torch.manual_seed(0)
    model = unet(num_classes=2, base_channels=4, depth=3, bilinear=bilinear).train()
    x = torch.rand(2, 1, 32, 32)
    F.mse_loss(model(x), torch.rand(2, 2, 32, 32)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    bad = [n for n, p in model.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not zero and not bad, (f"no gradient {missing[:3]}, zero gradient "
                                                  f"{zero[:3]}, non-finite {bad[:3]}")


@pytest.mark.parametrize("bilinear", [False, True], ids=["transposed", "bilinear"])
@pytest.mark.parametrize(("in_channels", "classes", "base", "depth"),
                         [(1, 1, 2, 1), (1, 1, 8, 3), (3, 4, 4, 2)])
def test_parameter_count_follows_the_architecture(in_channels, classes, base, depth, bilinear):
    model = unet(in_channels, classes, base, depth, bilinear=bilinear)
    expected = _formula_count(in_channels, classes, base, depth, bilinear)
    assert _count(model) == expected, (f"unet({in_channels}, {classes}, {base}, {depth}, "
                                       f"bilinear={bilinear}): {_count(model)} parameters, "
                                       f"formula gives {expected}")


def test_smallest_unet_has_447_parameters_by_hand():
    # encoder double_conv(1, 2): 18 + 36 + 8 = 62; bottleneck double_conv(2, 4): 72 + 144 + 16
    # = 232; 2x2 up-conv 4 -> 2: 32 + 2 = 34; decoder double_conv(4, 2): 72 + 36 + 8 = 116;
    # head 2 -> 1: 3. Total 447.
    assert _count(unet(1, 1, 2, 1)) == 447, f"{_count(unet(1, 1, 2, 1))} parameters, expected 447"


@pytest.mark.parametrize(("bilinear", "expected"), [(False, 31_036_481), (True, 28_947_521)],
                         ids=["transposed", "bilinear"])
def test_default_unet_has_about_31_million_parameters(bilinear, expected):
    # Ronneberger et al.'s network (widths 64..1024) is known as a ~31M-parameter model.
    count = _count(unet(bilinear=bilinear))
    assert count == expected, f"default unet (bilinear={bilinear}): {count:,} parameters, " \
                              f"expected {expected:,}"
    assert 28e6 < count < 32e6, f"{count:,} parameters outside the 28M-32M sanity range"


def test_structure_is_the_classic_unet():
    model = unet(base_channels=64, depth=4)
    assert isinstance(model, UNet)
    widths = [block[0].out_channels for block in model.encoder] + [model.bottleneck[0].out_channels]
    assert widths == [64, 128, 256, 512, 1024], f"level widths {widths}"
    ups = [(type(u).__name__, u.kernel_size, u.stride) for u in model.upsamplers]
    assert ups == [("ConvTranspose2d", (2, 2), (2, 2))] * 4, f"upsamplers {ups}"
    decoder_in = [block[0].in_channels for block in model.decoder]
    assert decoder_in == [128, 256, 512, 1024], f"decoder inputs (skip + upsampled) {decoder_in}"
    kinds = {type(m).__name__ for block in model.encoder for m in block}
    assert kinds == {"Conv2d", "BatchNorm2d", "ReLU"}, f"double conv layers {kinds}"


def test_double_conv_keeps_the_size():
    block = double_conv(3, 5).eval()
    with torch.no_grad():
        assert block(torch.rand(1, 3, 7, 9)).shape == (1, 5, 7, 9)


def test_eval_mode_is_deterministic_and_batch_independent():
    torch.manual_seed(1)
    model = unet(base_channels=4, depth=2).eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        first, second, alone = model(x), model(x), model(x[1:2])
    assert torch.equal(first, second), "two eval passes on the same batch differ"
    assert torch.allclose(alone, first[1:2], atol=1e-6), (
        f"sample 1 alone vs in a batch differs by {(alone - first[1:2]).abs().max():.3g}")


@requires_gpu
def test_cuda_matches_cpu():
    torch.manual_seed(2)
    model = unet(base_channels=4, depth=2).eval()
    x = torch.rand(2, 1, 16, 16)
    # TF32 off: the tolerance is for float32 rounding; cuDNN's default TF32 for float32
    # convolutions (10-bit mantissa, about 5e-4 relative per product) does not promise it.
    with torch.no_grad(), full_float32():
        expected = model(x)
        got = model.cuda()(x.cuda()).cpu()
    assert torch.allclose(got, expected, atol=1e-4), (
        f"CUDA vs CPU max difference {(got - expected).abs().max():.3g}")


def test_docstring_examples_run():
    # importlib: the package re-exports factories under some module names (augengine.models.unet
    # is the function there), sys.modules holds the module.
    module = importlib.import_module("augengine.models.unet")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed")
