"""feature_extractor (named activations, truncated forward, gradients) and imagenet_normalize."""
from __future__ import annotations

import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.models import feature_extractor, imagenet_normalize, resnet18


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet18(num_classes=2).eval()


def test_named_activations_in_requested_order_with_shapes(model):
    extract = feature_extractor(model, layers=("layer3", "relu", "layer2.1"))
    with torch.no_grad():
        features = extract(torch.rand(2, 3, 64, 64))
    shapes = {name: tuple(f.shape) for name, f in features.items()}
    assert list(features) == ["layer3", "relu", "layer2.1"], f"order {list(features)}"
    assert shapes == {"layer3": (2, 256, 4, 4), "relu": (2, 64, 32, 32),
                      "layer2.1": (2, 128, 8, 8)}, f"shapes {shapes}"


def test_default_layers_are_the_four_stages(model):
    with torch.no_grad():
        features = feature_extractor(model)(torch.rand(1, 3, 64, 64))
    channels = [f.shape[1] for f in features.values()]
    assert list(features) == ["layer1", "layer2", "layer3", "layer4"]
    assert channels == [64, 128, 256, 512], f"stage widths {channels}"


def test_activation_equals_the_full_forward_value(model):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        stage = feature_extractor(model, "layer2")(x)["layer2"]
        expected = model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x))))))
    assert torch.equal(stage, expected), "layer2 activation differs from the plain forward pass"


def test_forward_stops_after_the_last_requested_layer(model):
    ran = []
    handle = model.layer3.register_forward_hook(lambda *_: ran.append("layer3"))
    try:
        with torch.no_grad():
            feature_extractor(model, ("layer1", "layer2.0"))(torch.rand(1, 3, 64, 64))
    finally:
        handle.remove()
    assert ran == [], "layer3 ran although only layer1 and layer2.0 were requested"


def test_gradients_reach_the_input_for_nst(model):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    features = feature_extractor(model, ("layer1", "layer3"))(x)
    sum(f.square().mean() for f in features.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, "no gradient reached the input image"


def test_hooks_are_removed_after_each_call(model):
    feature_extractor(model, ("layer1",))(torch.rand(1, 3, 64, 64))
    assert not model.layer1._forward_hooks, "feature_extractor left a hook on layer1"


def test_unknown_layer_is_a_config_error_naming_it(model):
    with pytest.raises(ConfigError, match="layer9"):
        feature_extractor(model, ("layer1", "layer9"))


def test_imagenet_normalize_hand_values():
    # grey 0.5 -> ((0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224, (0.5 - 0.406) / 0.225)
    y = imagenet_normalize(torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64))
    expected = torch.tensor([0.065502183, 0.196428571, 0.417777778], dtype=torch.float64)
    assert y.shape == (1, 3, 2, 2)
    assert torch.allclose(y[0, :, 1, 1], expected, atol=1e-8), \
        f"got {y[0, :, 1, 1]}, want {expected}"


def test_imagenet_normalize_three_channels_and_bad_input():
    x = torch.zeros(1, 3, 1, 1)
    assert torch.allclose(imagenet_normalize(x).flatten(), torch.tensor([-2.117904, -2.035714,
                                                                         -1.804444]), atol=1e-5)
    with pytest.raises(InputError, match=r"\(1, 2, 4, 4\)"):
        imagenet_normalize(torch.zeros(1, 2, 4, 4))
    with pytest.raises(InputError, match="uint8"):
        imagenet_normalize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
