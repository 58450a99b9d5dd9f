"""DSA-U++: output shapes and errors, the nested decoder's wiring (seed 000, Eq. 2), depthwise-
separable units, ASPP rates, encoder weight loading, gradients to every parameter, parameter
counts, determinism, and the docstring examples."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.models import load_weights, resnet50
from augengine.models.dsa_unetpp import ASPP, DepthwiseSeparableConv, dsa_unetpp
from augengine.precision import full_float32
from tests.conftest import requires_gpu


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dsa_unetpp(birads_head=True).eval()


@pytest.mark.parametrize(("batch", "size"), [(2, (32, 32)), (1, (32, 64)), (1, (96, 32))])
def test_mask_logits_at_input_resolution_and_birads_logits(model, batch, size):
    with torch.no_grad():
        out = model(torch.rand(batch, 1, *size))
    assert set(out) == {"mask", "birads"}, f"output keys {set(out)}"
    assert out["mask"].shape == (batch, 1, *size), (
        f"input {size}: mask {tuple(out['mask'].shape)}, expected {(batch, 1, *size)}")
    shapes = {name: tuple(v.shape) for name, v in out["birads"].items()}
    assert shapes == {name: (batch, 2) for name in ("orientation", "margin", "calcification",
                                                    "shape")}, f"input {size}: BI-RADS {shapes}"


def test_without_birads_head_the_output_is_the_mask_tensor():
    model = dsa_unetpp(num_classes=3).eval()
    assert model.birads is None
    with torch.no_grad():
        mask = model(torch.rand(1, 3, 32, 32))
    assert isinstance(mask, torch.Tensor) and mask.shape == (1, 3, 32, 32), (
        f"mask {type(mask).__name__} {tuple(getattr(mask, 'shape', ()))}, expected (1, 3, 32, 32)")


def test_grey_input_equals_the_same_image_repeated_to_three_channels(model):
    grey = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        one, three = model(grey), model(grey.repeat(1, 3, 1, 1))
    assert torch.equal(one["mask"], three["mask"]), "grey input differs from its 3-channel copy"


@pytest.mark.parametrize(("shape", "expected"), [
    ((1, 1, 65, 64), "DSA-U++ needs H and W divisible by 32, got 65x64 (H x W); pad or resize, "
                     "e.g. to 96x64"),
    ((1, 1, 224, 200), "DSA-U++ needs H and W divisible by 32, got 224x200 (H x W); pad or "
                       "resize, e.g. to 224x224"),
    ((1, 2, 64, 64), "DSA-U++ expects 1 or 3 input channels, got 2 (shape (1, 2, 64, 64))"),
    ((64, 64), "DSA-U++ expects a batch of images (N, C, H, W), got (64, 64)"),
])
def test_bad_input_names_the_size(model, shape, expected):
    with pytest.raises(InputError) as error:
        model(torch.rand(*shape))
    assert str(error.value) == expected


def test_nested_decoder_nodes_follow_eq_2(model):
    # x^{i,j} = H([x^{i,0}, ..., x^{i,j-1}, U(x^{i+1,j-1})]): encoder widths (64, 256, 512, 1024,
    # ASPP 256), decoder widths (32, 64, 128, 256). E.g. x0_4: 64 + 3 * 32 + 64 = 224.
    expected = {"x0_1": 64 + 256, "x1_1": 256 + 512, "x2_1": 512 + 1024, "x3_1": 1024 + 256,
                "x0_2": 64 + 32 + 64, "x1_2": 256 + 64 + 128, "x2_2": 512 + 128 + 256,
                "x0_3": 64 + 2 * 32 + 64, "x1_3": 256 + 2 * 64 + 128,
                "x0_4": 64 + 3 * 32 + 64}
    nodes = model.nodes
    widths = {name: node[0].depthwise.in_channels for name, node in nodes.items()}
    assert widths == expected, f"node input widths {widths}, expected {expected}"
    outputs = {name: node[-1].pointwise.out_channels for name, node in nodes.items()}
    assert outputs == {name: (32, 64, 128, 256)[int(name[1])] for name in expected}, outputs


def test_decoder_convolutions_are_depthwise_separable(model):
    nodes = model.nodes
    units = [m for m in nodes.modules() if isinstance(m, DepthwiseSeparableConv)]
    assert len(units) == 20, f"{len(units)} depthwise-separable units, expected 2 per node x 10"
    for unit in units:
        dw, pw = unit.depthwise, unit.pointwise
        assert dw.groups == dw.in_channels == dw.out_channels, (
            f"depthwise conv groups {dw.groups}, channels {dw.in_channels}->{dw.out_channels}")
        assert dw.kernel_size == (3, 3) and pw.kernel_size == (1, 1) and pw.groups == 1
    full = [m for m in nodes.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) and m.groups != m.in_channels]
    assert not full, f"{len(full)} full (non-depthwise) spatial convolutions in the decoder"


def test_depthwise_separable_decoder_costs_about_a_ninth_of_full_convolutions(model):
    # Seed 000, Sec. 2.4: cost ratio 1/C2 + 1/9 per unit. Weights of a full 3x3 conv: 9 C1 C2.
    nodes = model.nodes
    units = [m for m in nodes.modules() if isinstance(m, DepthwiseSeparableConv)]
    separable = sum(u.depthwise.weight.numel() + u.pointwise.weight.numel() for u in units)
    full = sum(9 * u.depthwise.in_channels * u.pointwise.out_channels for u in units)
    ratio = separable / full
    assert 1 / 9 < ratio < 1 / 9 + 1 / 32, f"separable/full weight ratio {ratio:.4f}, expected " \
                                           f"between 1/9 and 1/9 + 1/32 (narrowest C2 = 32)"


def test_aspp_has_rates_6_12_18_plus_1x1_and_image_pooling(model):
    aspp = model.aspp
    convs = [branch[0] for branch in aspp.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (6, 6), (12, 12), (18, 18)], (
        f"atrous rates {[c.dilation for c in convs]}, expected 1x1 + 6/12/18")
    assert [c.padding for c in convs] == [(0, 0), (6, 6), (12, 12), (18, 18)], "size not kept"
    assert isinstance(aspp.image_pool[0], nn.AdaptiveAvgPool2d)
    assert aspp.image_pool[0].output_size in (1, (1, 1))
    assert aspp.project[0].in_channels == 5 * 256, f"fusion input {aspp.project[0].in_channels}"
    assert convs[0].in_channels == 2048, "ASPP must run on layer4 (2048 channels)"


def test_aspp_keeps_the_map_size_and_its_pooling_branch_is_global():
    torch.manual_seed(3)
    aspp = ASPP(4, 3).eval()
    x = torch.rand(1, 4, 5, 7)
    with torch.no_grad():
        pooled = aspp.image_pool(x)
        expected = torch.relu(aspp.image_pool[1](x.mean(dim=(2, 3), keepdim=True)))
        out = aspp(x)
    assert out.shape == (1, 3, 5, 7), f"ASPP output {tuple(out.shape)}, expected (1, 3, 5, 7)"
    assert torch.allclose(pooled, expected, atol=1e-6), "image pooling is not a global mean"


@pytest.fixture(scope="module")
def resnet50_checkpoint(tmp_path_factory):
    torch.manual_seed(7)
    source = resnet50()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(source.state_dict(), path)
    return source, path


def _differing(source: nn.Module, encoder: nn.Module) -> list[str]:
    loaded = encoder.state_dict()
    return [k for k, v in source.state_dict().items()
            if not k.startswith("fc.") and not torch.equal(v, loaded[k])]


def test_encoder_loads_a_resnet50_state_dict(resnet50_checkpoint):
    source, path = resnet50_checkpoint
    model = dsa_unetpp(pretrained_encoder=path)
    expected = [k for k in source.state_dict() if not k.startswith("fc.")]
    keys = list(model.encoder.state_dict())
    assert keys == expected, (
        f"encoder keys differ from resnet50's without fc: {sorted(set(keys) ^ set(expected))[:3]}")
    assert len(keys) == 318, f"{len(keys)} encoder entries, expected 320 - fc.weight, fc.bias"
    assert not _differing(source, model.encoder), "pretrained_encoder: tensors differ after loading"

    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()
    load_weights(model.encoder, path, skip_head=True)
    differing = _differing(source, model.encoder)
    assert not differing, f"load_weights(encoder, skip_head=True): tensors differ {differing[:3]}"


def test_missing_encoder_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"absent\.pth: weights file not found"):
        dsa_unetpp(pretrained_encoder=tmp_path / "absent.pth")


def test_gradient_reaches_every_parameter():
    # No unused parameter (DDP/Horovod wait for every gradient): the encoder's fc is gone.
    torch.manual_seed(4)
    model = dsa_unetpp(birads_head=True).train()
    out = model(torch.rand(2, 1, 32, 32))
    loss = F.binary_cross_entropy_with_logits(out["mask"], torch.rand(2, 1, 32, 32).round())
    for logits in out["birads"].values():
        loss = loss + F.cross_entropy(logits, torch.tensor([0, 1]))
    loss.backward()
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None]
    zero = [n for n, p in params.items() if p.grad is not None and not p.grad.any()]
    bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not zero and not bad, (f"no gradient {missing[:3]}, zero gradient "
                                                  f"{zero[:3]}, non-finite {bad[:3]}")


def test_custom_birads_class_counts():
    model = dsa_unetpp(birads_head=True, birads_classes={"margin": 5, "shape": 3}).eval()
    with torch.no_grad():
        birads = model(torch.rand(1, 1, 32, 32))["birads"]
    shapes = {name: tuple(v.shape) for name, v in birads.items()}
    assert shapes == {"margin": (1, 5), "shape": (1, 3)}, f"BI-RADS logits {shapes}"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"birads_classes": {"margin": 5}}, "birads_classes is given but birads_head=False; set "
                                        "birads_head=True"),
    ({"birads_head": True, "birads_classes": {"margin": 0}},
     "birads_classes['margin'] must be an integer >= 1, got 0"),
    ({"birads_head": True, "birads_classes": {}},
     "birads_classes must map feature names to class counts, got {}"),
    ({"decoder_channels": (32, 64, 128)},
     "decoder_channels needs 4 widths (levels 0-3), got (32, 64, 128)"),
    ({"decoder_channels": (32, 0, 128, 256)}, "decoder_channels[1] must be an integer >= 1, got 0"),
    ({"atrous_rates": (6, -12, 18)}, "atrous rate 1 must be an integer >= 1, got -12"),
    ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
])
def test_bad_configuration_is_a_config_error(kwargs, expected):
    with pytest.raises(ConfigError) as error:
        dsa_unetpp(**kwargs)
    assert str(error.value) == expected


def test_parameter_counts(model):
    parts = {"encoder": _count(model.encoder), "aspp": _count(model.aspp),
             "decoder": _count(model.nodes), "head": _count(model.head),
             "birads": _count(model.birads)}
    # ResNet-50 is 25,557,032 parameters (torchvision) of which fc has 2048 * 1000 + 1000.
    # ASPP: 1x1 + three 3x3 branches 2048 * 256 * (1 + 27), pooling 2048 * 256 + 256, fusion
    # 1280 * 256, five BatchNorms 2 * 256 each.
    expected = {"encoder": 25_557_032 - 2_049_000,
                "aspp": 2048 * 256 * 28 + (2048 * 256 + 256) + 1280 * 256 + 5 * 512,
                "decoder": 960_768, "head": 32 + 1, "birads": 4 * (2048 * 2 + 2)}
    assert parts == expected, f"parameter counts {parts}, expected {expected}"
    total = _count(model) - parts["birads"]
    assert total == 40_003_681 and 35e6 < total < 45e6, f"DSA-U++ total {total:,} parameters, " \
                                                         f"expected 40,003,681"


def test_eval_mode_is_deterministic(model):
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first["mask"], second["mask"]), "two eval passes differ (mask)"
    assert all(torch.equal(first["birads"][k], second["birads"][k]) for k in first["birads"])


@requires_gpu
def test_cuda_matches_cpu():
    torch.manual_seed(5)
    model = dsa_unetpp(birads_head=True).eval()
    x = torch.rand(1, 1, 64, 64)
    # TF32 off: the tolerance is for float32 rounding; cuDNN's default TF32 for float32
    # convolutions (10-bit mantissa, about 5e-4 relative per product) does not promise it.
    with torch.no_grad(), full_float32():
        expected = model(x)
        got = model.cuda()(x.cuda())
    difference = (got["mask"].cpu() - expected["mask"]).abs().max()
    assert difference < 1e-3, f"CUDA vs CPU mask logits differ by {difference:.3g}"


def test_docstring_examples_run():
    # importlib: the package re-exports factories under some module names (augengine.models.unet
    # is the function there), sys.modules holds the module.
    module = importlib.import_module("augengine.models.dsa_unetpp")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed")
