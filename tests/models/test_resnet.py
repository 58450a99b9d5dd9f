"""ResNet-18/50: torchvision's state_dict layout, recorded key by key, and the architecture facts
that loading a torchvision checkpoint relies on."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from augengine.models import Bottleneck, resnet18, resnet50

DATA = Path(__file__).parent / "data"


def _recorded(name: str) -> list[tuple[str, list[int]]]:
    """``key [shape]`` lines of a recorded key list (written from torchvision's resnet.py)."""
    entries = []
    for line in (DATA / f"{name}_keys.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries.append((key, [int(n) for n in shape.strip("[]").split(",") if n.strip()]))
    return entries


@pytest.mark.parametrize(("factory", "name", "count"), [(resnet18, "resnet18", 122),
                                                       (resnet50, "resnet50", 320)])
def test_state_dict_keys_and_shapes_equal_torchvision(factory, name, count):
    recorded = _recorded(name)
    assert len(recorded) == count, \
        f"{name}: recorded list has {len(recorded)} keys, expected {count}"
    ours = [(key, list(value.shape)) for key, value in factory().state_dict().items()]
    missing = [k for k, _ in recorded if k not in dict(ours)]
    extra = [k for k, _ in ours if k not in dict(recorded)]
    assert not missing and not extra, f"{name}: missing {missing[:3]}, unexpected {extra[:3]}"
    wrong = [(k, s, dict(recorded)[k]) for k, s in ours if s != dict(recorded)[k]]
    assert not wrong, f"{name}: shape mismatches (key, ours, torchvision) {wrong[:3]}"
    assert ours == recorded, f"{name}: same keys and shapes but a different order"


@pytest.mark.parametrize(("factory", "params"), [(resnet18, 11_689_512), (resnet50, 25_557_032)])
def test_parameter_count_matches_torchvision_documentation(factory, params):
    count = sum(p.numel() for p in factory().parameters())
    assert count == params, \
        f"{factory.__name__}: {count} parameters, torchvision documents {params}"


def test_bottleneck_carries_the_stride_on_its_3x3_conv_v1_5():
    first = resnet50().layer2[0]
    assert isinstance(first, Bottleneck)
    assert first.conv1.stride == (1, 1), f"layer2.0.conv1 stride {first.conv1.stride}, expected 1"
    assert first.conv2.stride == (2, 2), f"layer2.0.conv2 stride {first.conv2.stride}, expected 2"
    assert first.downsample[0].stride == (2, 2)


@pytest.mark.parametrize(("factory", "features"), [(resnet18, 512), (resnet50, 2048)])
def test_logits_shape_and_fc_width(factory, features):
    model = factory(num_classes=2).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 2), \
        f"{factory.__name__}: logits {tuple(logits.shape)}, expected (2, 2)"
    assert model.fc.in_features == features


def test_grey_input_with_in_channels_1():
    model = resnet18(num_classes=2, in_channels=1).eval()
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize("bn", ["bn1", "bn2"])
def test_no_in_place_relu_or_add_so_captured_maps_stay_intact(bn):
    # torchvision's in-place ReLU (after bn1) and "out += identity" (after bn2) would overwrite a
    # captured BN output; NST and LRP keep such maps, so ours must leave them as they were.
    model = resnet18().eval()
    captured = {}
    getattr(model.layer1[0], bn).register_forward_hook(
        lambda m, i, o: captured.update(kept=o, copy=o.clone()))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert (captured["copy"] < 0).any(), f"layer1.0.{bn}: expected some negative outputs"
    assert torch.equal(captured["kept"], captured["copy"]), f"layer1.0.{bn} output was overwritten"
