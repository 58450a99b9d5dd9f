"""Classifier and quality-regressor heads: plain ResNets in torchvision's layout, dropout where
LRP can ignore it, checkpoint round trips, BI-RADS multi-label columns, gradients, errors."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.explain import lrp
from augengine.models import ResNet, feature_extractor, load_weights, resnet18, resnet50
from augengine.models.heads import (
    BIRADS_CLASSES,
    BIRADS_FEATURES,
    QUALITY_SCORES,
    classifier,
    quality_regressor,
    split_birads_logits,
)
from augengine.precision import full_float32
from tests.conftest import requires_gpu


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def source18(tmp_path_factory):
    """A resnet18 with 1000 classes (an ImageNet-layout checkpoint) and its file."""
    torch.manual_seed(11)
    model = resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18_imagenet_layout.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize(("arch", "plain", "features"), [("resnet50", resnet50, 2048),
                                                          ("resnet18", resnet18, 512)])
def test_classifier_is_a_plain_resnet_with_torchvision_keys(arch, plain, features):
    model = classifier(arch)
    assert type(model) is ResNet, f"{arch}: classifier is a {type(model).__name__}, not a ResNet"
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (
        features, 2), f"{arch}: fc {model.fc}"
    dropout = model.avgpool[1]
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.5, f"{arch}: avgpool {model.avgpool}"
    assert _shapes(model) == _shapes(plain(num_classes=2)), (
        f"{arch}: state_dict keys/shapes differ from {arch}(num_classes=2)")


@pytest.mark.parametrize(("arch", "expected"), [("resnet50", 25_557_032 - 2_049_000 + 4_098),
                                                ("resnet18", 11_689_512 - 513_000 + 1_026)])
def test_classifier_parameter_count_is_torchvision_minus_the_imagenet_fc(arch, expected):
    # torchvision's documented totals, less fc (features x 1000 + 1000), plus features x 2 + 2.
    count = _count(classifier(arch))
    assert count == expected, f"classifier({arch!r}): {count:,} parameters, expected {expected:,}"


def test_trained_classifier_checkpoint_loads_strictly_into_a_plain_resnet(tmp_path):
    torch.manual_seed(3)
    model = classifier("resnet18").eval()
    path = tmp_path / "classifier.pth"
    torch.save({"state_dict": model.state_dict(), "arch": "resnet18"}, path)
    plain = load_weights(resnet18(num_classes=2), path, strict=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x)), "eval logits differ after loading into a resnet18"


def test_pretrained_loads_every_layer_but_the_head(source18):
    source, path = source18
    torch.manual_seed(0)
    model = classifier("resnet18", pretrained=path)
    ours = model.state_dict()
    differing = [k for k, v in source.state_dict().items()
                 if not k.startswith("fc.") and not torch.equal(v, ours[k])]
    assert not differing, f"backbone tensors differ after loading: {differing[:3]}"
    assert model.fc.weight.shape == (2, 512), f"fc {tuple(model.fc.weight.shape)}, expected 2x512"


def test_missing_pretrained_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nothing\.pth: weights file not found"):
        classifier("resnet18", pretrained=tmp_path / "nothing.pth")


def test_dropout_zeroes_pooled_features_or_scales_them_by_two_in_training():
    # Inverted dropout with p = 0.5: each pooled feature is 0 or 1 / (1 - p) = 2 times its value.
    torch.manual_seed(5)
    model = classifier("resnet18").train()
    features = feature_extractor(model, ["avgpool.0", "avgpool"])(torch.rand(4, 3, 32, 32))
    pooled, dropped = features["avgpool.0"].flatten(1), features["avgpool"].flatten(1)
    kept = dropped != 0
    assert torch.allclose(dropped[kept], 2 * pooled[kept]), "kept features are not scaled by 2"
    fraction = 1 - kept[pooled != 0].float().mean().item()
    assert 0.44 < fraction < 0.56, f"{fraction:.3f} of 2048 pooled features dropped, expected 0.5"


def test_dropout_only_in_training_mode():
    torch.manual_seed(6)
    with_dropout, without = classifier("resnet18"), classifier("resnet18", dropout=0.0)
    without.load_state_dict(with_dropout.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(with_dropout.train()(x), with_dropout(x)), "p=0.5: passes equal"
        assert torch.equal(without.train()(x), without(x)), "p=0: train passes differ"
        assert torch.equal(with_dropout.eval()(x), without.eval()(x)), "eval: dropout not identity"


def test_lrp_explains_the_classifier_as_the_plain_resnet():
    torch.manual_seed(8)
    model = classifier("resnet18").eval()
    plain = resnet18(num_classes=2).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 32)
    relevance, expected = lrp(model, x, target=1), lrp(plain, x, target=1)
    assert relevance.shape == (1, 3, 32, 32) and torch.isfinite(relevance).all()
    assert torch.allclose(relevance, expected), (
        f"LRP of the classifier differs from LRP of its plain ResNet by "
        f"{(relevance - expected).abs().max():.3g}")


def test_multilabel_birads_appends_four_logits():
    torch.manual_seed(9)
    model = classifier("resnet18", num_classes=3, multilabel_birads=True).eval()
    assert model.fc.out_features == 3 + 4, f"fc outputs {model.fc.out_features}, expected 7"
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    classes, birads = split_birads_logits(logits, num_classes=3)
    assert classes.shape == (2, 3), f"class logits {tuple(classes.shape)}, expected (2, 3)"
    assert list(birads) == ["orientation", "margin", "calcification", "shape"]
    assert all(v.shape == (2,) for v in birads.values())
    assert torch.equal(birads["orientation"], logits[:, 3]) and torch.equal(birads["shape"],
                                                                            logits[:, 6])


def test_split_birads_logits_rejects_the_wrong_width():
    with pytest.raises(InputError) as error:
        split_birads_logits(torch.zeros(2, 2), num_classes=2)
    assert str(error.value) == ("split_birads_logits expects logits (N, 2 classes + 4 BI-RADS "
                                "features = 6), got (2, 2)")


@pytest.mark.parametrize("multilabel", [False, True], ids=["softmax", "multilabel"])
def test_gradient_reaches_every_classifier_parameter(multilabel):
    torch.manual_seed(10)
    model = classifier("resnet18", multilabel_birads=multilabel).train()
    logits = model(torch.rand(2, 3, 32, 32))
    classes, targets = logits[:, :2], torch.tensor([0, 1])
    loss = F.cross_entropy(classes, targets)
    if multilabel:
        loss = loss + F.binary_cross_entropy_with_logits(logits[:, 2:], torch.rand(2, 4).round())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no or zero gradient for {missing[:3]}"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"arch": "vgg16"}, "arch must be one of ['resnet18', 'resnet50'], got 'vgg16'"),
    ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ({"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
])
def test_bad_classifier_configuration_is_a_config_error(kwargs, expected):
    with pytest.raises(ConfigError) as error:
        classifier(**kwargs)
    assert str(error.value) == expected


def test_birads_constants_follow_seed_000():
    assert BIRADS_FEATURES == ("orientation", "margin", "calcification", "shape")
    assert dict(BIRADS_CLASSES) == {"orientation": 2, "margin": 2, "calcification": 2,
                                    "shape": 2}, f"classes per feature {dict(BIRADS_CLASSES)}"
    assert dict(QUALITY_SCORES) == {"original": 100.0, "jpeg": 60.0, "blur": 30.0}


def test_quality_regressor_is_a_resnet18_with_one_output(source18):
    _, path = source18
    model = quality_regressor(pretrained=path).eval()
    assert type(model) is ResNet and (model.fc.in_features, model.fc.out_features) == (512, 1)
    count = _count(model)
    assert count == 11_689_512 - 513_000 + 513, f"{count:,} parameters, expected 11,177,025"
    with torch.no_grad():
        scores = model(torch.rand(3, 3, 32, 32))
    assert scores.shape == (3, 1) and scores.dtype == torch.float32, f"scores {scores.shape}"
    assert torch.equal(model.conv1.weight, source18[0].conv1.weight), "backbone not loaded"


def test_quality_regressor_trains_on_the_mse_of_the_score():
    torch.manual_seed(12)
    model = quality_regressor().train()
    target = torch.tensor([[100.0], [30.0]])
    loss = F.mse_loss(model(torch.rand(2, 3, 32, 32)), target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no or zero gradient for {missing[:3]}"
    # An untrained score is near 0, so the MSE is near mean(100^2, 30^2) = 5450.
    assert 2_000 < loss.item() < 10_000, f"initial MSE {loss.item():.0f}, expected about 5450"


@requires_gpu
def test_classifier_cuda_matches_cpu():
    torch.manual_seed(13)
    model = classifier("resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    # TF32 off: the tolerance is for float32 rounding; cuDNN's default TF32 for float32
    # convolutions (10-bit mantissa, about 5e-4 relative per product) does not promise it.
    with torch.no_grad(), full_float32():
        expected = model(x)
        got = model.cuda()(x.cuda()).cpu()
    assert torch.allclose(got, expected, atol=1e-3), (
        f"CUDA vs CPU logits differ by {(got - expected).abs().max():.3g}")


def test_docstring_examples_run():
    # importlib: the package re-exports factories under some module names (augengine.models.unet
    # is the function there), sys.modules holds the module.
    module = importlib.import_module("augengine.models.heads")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed")
