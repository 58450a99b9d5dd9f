"""LRP through whole ResNets: BN folding, conservation layer by layer (ResNet-50), the explained
logit, batching, and errors."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.explain import fold_batchnorm, lrp, lrp_layers
from augengine.models import feature_extractor, imagenet_normalize, resnet18, resnet50
from tests.conftest import requires_gpu

D = torch.float64


def _trained_looking(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine terms (fresh BN folds to the identity, hiding mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
        model.fc.bias.copy_(0.5 * torch.randn(model.fc.out_features, generator=g))
    return model.eval()


def _images(n: int, size: int = 32, seed: int = 0, dtype=D) -> torch.Tensor:
    grey = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return imagenet_normalize(grey)


def _sums(relevance: torch.Tensor) -> torch.Tensor:
    return relevance.flatten(1).sum(1)


@pytest.fixture(scope="module")
def resnet50_case():
    """ResNet-50 (random weights, random BN), float64, two 64x64 images, targets (0, 3)."""
    torch.manual_seed(50)
    model = _trained_looking(resnet50(num_classes=4), seed=50).to(D)
    x = _images(2, size=64)
    target = torch.tensor([0, 3])
    with torch.no_grad():
        logits = model(x)[torch.arange(2), target]
    return model, x, target, logits, lrp_layers(model, x, target)


@pytest.fixture(scope="module")
def resnet18_model():
    torch.manual_seed(18)
    return _trained_looking(resnet18(num_classes=3), seed=18).to(D)


# ------------------------------------------------------------------------------------------------
# ResNet-50 end to end
# ------------------------------------------------------------------------------------------------

def test_resnet50_explains_the_model_logit(resnet50_case):
    _, _, _, logits, layers = resnet50_case
    got = _sums(layers["fc"])
    assert torch.allclose(got, logits, rtol=1e-10), \
        f"start relevance {got.tolist()}, logits {logits.tolist()}"


def test_resnet50_conservation_layer_to_layer(resnet50_case):
    # alpha-beta (convs), z-rule (adds, average pool), winner-take-all, flat: all conservative.
    _, _, _, logits, layers = resnet50_case
    names = list(layers)
    assert names[:3] == ["fc", "avgpool", "layer4.2"] and names[-3:] == ["maxpool", "relu", "input"]
    assert len(names) == 16 + 5, f"expected 16 blocks + 5 stages, got {len(names)}: {names}"
    scale = logits.abs().min().item()
    worst = max(((_sums(layers[a]) - _sums(layers[b])).abs().max().item() / scale, a, b)
                for a, b in zip(names[1:-1], names[2:]))
    assert worst[0] < 1e-6, \
        f"relevance not conserved from {worst[1]} to {worst[2]}: rel. change {worst[0]:.2e}"


def test_resnet50_fc_epsilon_rule_gives_the_bias_share_away(resnet50_case):
    model, _, target, logits, layers = resnet50_case
    bias = model.fc.bias.detach()[target]
    expected = (logits - bias) * logits / (logits + 1e-6 * torch.sign(logits))
    got = _sums(layers["avgpool"])
    assert torch.allclose(got, expected, rtol=1e-9), \
        f"sum at avgpool {got.tolist()}, expected {expected.tolist()}"


def test_resnet50_input_relevance_sums_to_logit_minus_fc_bias(resnet50_case):
    model, x, target, logits, layers = resnet50_case
    expected = logits - model.fc.bias.detach()[target]
    got = _sums(layers["input"])
    assert layers["input"].shape == x.shape, \
        f"input relevance {tuple(layers['input'].shape)} vs x {tuple(x.shape)}"
    assert torch.allclose(got, expected, rtol=1e-5), \
        f"sum of input relevance {got.tolist()}, expected {expected.tolist()}"
    assert (layers["input"] > 0).any() and (layers["input"] < 0).any(), \
        "expected evidence of both signs"


def test_resnet50_layer_names_and_shapes_match_feature_extractor(resnet50_case):
    model, x, _, _, layers = resnet50_case
    names = [n for n in layers if n not in ("fc", "input")]
    with torch.no_grad():
        features = feature_extractor(model, names)(x)
    wrong = [(n, tuple(layers[n].shape), tuple(features[n].shape)) for n in names
             if layers[n].shape != features[n].shape]
    assert not wrong, f"(name, relevance shape, activation shape): {wrong}"


# ------------------------------------------------------------------------------------------------
# ResNet-18 (32x32 inputs, to keep the suite fast): folding, batching, rules, dtypes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [resnet18, resnet50])
def test_fold_batchnorm_leaves_outputs_unchanged(factory):
    torch.manual_seed(3)
    model = _trained_looking(factory(num_classes=5), seed=3).train()
    folded = fold_batchnorm(model)
    x = _images(2, dtype=torch.float32)
    assert model.training, "fold_batchnorm changed the mode of the original model"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), \
        "original model was modified"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) and not folded.training
    with torch.no_grad():
        want, got = model.eval()(x), folded(x)
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert error < 1e-5, \
        f"{factory.__name__}: folded outputs differ by {error:.2e} (relative), limit 1e-5"


def test_batched_equals_per_sample(resnet18_model):
    x = _images(2, seed=1)
    target = [2, 0]
    for kwargs in ({}, {"first_rule": "zb"}):
        batch = lrp(resnet18_model, x, target, **kwargs)
        for i in range(2):
            single = lrp(resnet18_model, x[i:i + 1], target[i], **kwargs)
            assert torch.allclose(batch[i:i + 1], single, rtol=1e-9, atol=1e-14), \
                f"{kwargs or 'default'}: sample {i} differs from its batched relevance"


def test_train_mode_model_is_explained_as_in_eval_mode(resnet18_model):
    x = _images(1, seed=2)
    want = lrp(resnet18_model.eval(), x, 1)
    got = lrp(resnet18_model.train(), x, 1)
    resnet18_model.eval()
    assert torch.allclose(got, want, rtol=1e-12), "train-mode model explained differently"


def _bias_free_resnet18() -> nn.Module:
    """Fresh BN (folds to zero bias) and fc without bias: every rule is conservative to f(x)."""
    torch.manual_seed(7)
    model = resnet18(num_classes=2).to(D).eval()
    with torch.no_grad():
        model.fc.bias.zero_()
    return model


# epsilon=1e-12 so that the stabiliser of the fc epsilon rule (1e-6 by default) takes nothing.
@pytest.mark.parametrize("kwargs", [{"rule": "epsilon"},
                                    {"rule": "alpha_beta"},
                                    {"rule": "alpha_beta", "first_rule": "zb"}])
def test_input_relevance_sums_to_logit_without_biases(kwargs):
    model = _bias_free_resnet18()
    x = _images(2, seed=4)
    with torch.no_grad():
        logit = model(x)[:, 1]
    got = _sums(lrp(model, x, 1, epsilon=1e-12, **kwargs))
    assert torch.allclose(got, logit, rtol=1e-6), \
        f"{kwargs}: sum R = {got.tolist()}, f(x) = {logit.tolist()}"


@pytest.mark.parametrize("factory", [resnet18, resnet50])
def test_epsilon_rule_without_biases_equals_gradient_times_input(factory):
    # For a bias-free ReLU network, LRP-0 (epsilon -> 0 everywhere, z-rule at the adds,
    # winner-take-all max pooling) equals gradient x input (Montavon et al. 2018): an independent
    # oracle for the whole backward walk (block order, branch vs shortcut, downsampling).
    torch.manual_seed(11)
    model = factory(num_classes=2).to(D).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        model.fc.bias.zero_()
        for m in model.modules():  # random scales, zero shifts: folded biases stay zero
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    x = _images(2, seed=12).requires_grad_(True)
    model(x)[:, 1].sum().backward()
    want = (x * x.grad).detach()
    got = lrp(model, x.detach(), 1, rule="epsilon", epsilon=1e-12)
    error = ((got - want).abs().max() / want.abs().max()).item()
    assert error < 1e-6, f"{factory.__name__}: LRP-0 differs from gradient x input by {error:.2e}"


def test_zb_first_rule_with_imagenet_bounds_conserves(resnet18_model):
    x = _images(2, seed=5)
    bounds = (imagenet_normalize(torch.zeros(1, 1, 1, 1, dtype=D)),
              imagenet_normalize(torch.ones(1, 1, 1, 1, dtype=D)))
    layers = lrp_layers(resnet18_model, x, 0, first_rule="zb", input_bounds=bounds)
    stem, pixels = _sums(layers["relu"]), _sums(layers["input"])
    assert torch.allclose(pixels, stem, rtol=1e-9), \
        f"z^B: stem {stem.tolist()} -> pixels {pixels.tolist()}"


def test_float32_conserves_within_float_tolerance():
    torch.manual_seed(8)
    model = _trained_looking(resnet18(num_classes=2), seed=8)
    x = _images(2, seed=6, dtype=torch.float32)
    layers = lrp_layers(model, x, 1)
    top, bottom = _sums(layers["avgpool"]), _sums(layers["input"])
    assert layers["input"].dtype == torch.float32
    assert torch.allclose(bottom, top, rtol=1e-4), \
        f"float32: avgpool {top.tolist()} -> input {bottom.tolist()}"


def test_prefolded_model_gives_the_same_relevance(resnet18_model):
    x = _images(1, seed=9)
    assert torch.allclose(lrp(fold_batchnorm(resnet18_model), x, 2), lrp(resnet18_model, x, 2),
                          rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha": 3.0, "beta": 1.0}, ConfigError, "alpha - beta must equal 1"),
    ({"rule": "gradient"}, ConfigError, "rule must be one of"),
    ({"first_rule": "w2"}, ConfigError, "first_rule must be one of"),
    ({"epsilon": -1.0}, ConfigError, "epsilon must be >= 0, got -1.0"),
    ({"target": 3}, InputError, "target 3 out of range for 3 classes"),
    ({"target": [0, 1, 2]}, InputError, "target must be an int or 2 integer class indices"),
    ({"x": torch.zeros(3, 32, 32, dtype=D)}, InputError, r"\(N, C, H, W\), got \(3, 32, 32\)"),
    ({"x": torch.zeros(2, 3, 32, 32)}, InputError, "torch.float32 on cpu, the model torch.float64"),
    ({"x": torch.zeros(2, 1, 32, 32, dtype=D)}, InputError, "1 channels, the model expects 3"),
])
def test_bad_arguments_raise_one_line_errors(resnet18_model, kwargs, error, message):
    arguments = {"model": resnet18_model, "x": _images(2), "target": 0} | kwargs
    with pytest.raises(error, match=message):
        lrp(**arguments)


def test_folded_model_in_training_mode_is_refused(resnet18_model):
    with pytest.raises(InputError, match=r"training mode; call \.eval\(\)"):
        lrp(fold_batchnorm(resnet18_model).train(), _images(1), 0)


def test_other_models_are_refused():
    with pytest.raises(InputError, match="got Sequential"):
        lrp(nn.Sequential(nn.Conv2d(3, 2, 3)), torch.zeros(1, 3, 8, 8), 0)


@requires_gpu
def test_gpu_matches_cpu(resnet18_model):
    x = _images(2, seed=10)
    want = lrp(resnet18_model, x, 1)
    got = lrp(copy.deepcopy(resnet18_model).to("cuda"), x.to("cuda"), 1).cpu()
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-12), "GPU relevance differs from CPU"


def test_lrp_computes_with_tf32_off(resnet18_model):
    # cuDNN's default is TF32 for float32 convolutions; LRP's divisions would amplify its error.
    folded = fold_batchnorm(resnet18_model)  # used as is, so the hook below sees the forward
    seen = []
    hook = folded.conv1.register_forward_pre_hook(
        lambda *_: seen.append(torch.backends.cudnn.conv.fp32_precision))
    try:
        lrp(folded, _images(1, seed=13), 0)
    finally:
        hook.remove()
    assert seen == ["ieee"], f"cuDNN conv precision during LRP: {seen}, expected ['ieee']"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32", "TF32 default not restored"


# ------------------------------------------------------------------------------------------------
# Sign: positive relevance is evidence for the class, whatever the sign of the explained logit
# ------------------------------------------------------------------------------------------------

def _with_logit(model: nn.Module, x: torch.Tensor, target: int, value: float) -> nn.Module:
    """A copy whose logit ``target`` on ``x`` is ``value``: only b_fc[target] moves, so every
    pixel's effect on the logit (its evidence) stays what it was."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.fc.bias[target] += value - twin(x)[0, target]
    return twin


def test_heatmap_does_not_flip_with_the_sign_of_the_logit(resnet18_model):
    # Issue 11's case: a two-class ResNet-18 explaining a logit of -0.515. A relevance started
    # from 1 instead of f(x) would be -1/0.515 times this one (correlation -1).
    x = _images(1, seed=14)
    positive = lrp(_with_logit(resnet18_model, x, 1, 0.515), x, 1)
    negative = lrp(_with_logit(resnet18_model, x, 1, -0.515), x, 1)
    correlation = torch.corrcoef(torch.stack([positive.flatten(), negative.flatten()]))[0, 1]
    assert torch.allclose(negative, positive, rtol=1e-5, atol=1e-12), \
        f"logit -0.515 vs +0.515: heatmaps correlate {correlation.item():.4f}, expected 1.0000"


def _negative_logit_lrp0_case():
    """Bias-free ResNet-18 whose explained logit is negative, with its gradient x input: for
    LRP-0 the exact relevance, each pixel's contribution to the logit (Montavon et al. 2018)."""
    model = _bias_free_resnet18()
    x = _images(1, seed=15).requires_grad_(True)
    logit = model(x)[0, 1]
    if logit > 0:  # flipping the class's weights flips the logit and keeps the model bias-free
        with torch.no_grad():
            model.fc.weight[1].neg_()
        logit = model(x)[0, 1]
    logit.backward()
    return model, x.detach(), logit.item(), (x * x.grad).detach()


def test_positive_relevance_raises_the_logit_when_the_logit_is_negative():
    model, x, logit, contribution = _negative_logit_lrp0_case()
    got = lrp(model, x, 1, rule="epsilon", epsilon=1e-12)
    agree = (torch.sign(got) == torch.sign(contribution)).double().mean().item()
    error = ((got - contribution).abs().max() / contribution.abs().max()).item()
    assert logit < 0, f"test case needs a negative logit, got {logit:.3f}"
    assert error < 1e-6, \
        f"logit {logit:.3f}: relevance differs from gradient x input by {error:.2e} (relative); " \
        f"same sign at {agree:.1%} of the inputs, expected 100%"


def test_nst_content_weights_come_from_the_evidence_for_the_class():
    # relevance_weights keeps max(R, 0): with the sign right these are the pixels that raise the
    # class's logit, also for an image the model scores against the class.
    from augengine.nst.losses import relevance_weights

    model, x, logit, contribution = _negative_logit_lrp0_case()
    got = relevance_weights(lrp(model, x, 1, rule="epsilon", epsilon=1e-12).sum(dim=1), (8, 8))
    want = relevance_weights(contribution.sum(dim=1), (8, 8))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-9), \
        f"logit {logit:.3f}: content weights differ from those of the evidence for the class " \
        f"by {(got - want).abs().max().item():.3g} (weights have mean 1)"
