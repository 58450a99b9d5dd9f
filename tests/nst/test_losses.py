"""Style-transfer losses (seed 002, Eqs. 1-9 and 14): hand-checked values, identities, gradients."""

from __future__ import annotations

import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.nst import (
    RESNET50_LAYERS,
    StyleTransferLoss,
    content_loss,
    gram_loss,
    gram_matrix,
    histogram_specification,
    max_reference_features,
    mmd_poly_loss,
    multi_reference_target,
    proposed_style_loss,
    relevance_weights,
    total_loss,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                not torch.cuda.is_available(), reason="needs a CUDA device (none found)"
            ),
        ],
    ),
]


def _randn(generator, *shape, dtype=torch.float64):
    return torch.randn(*shape, generator=generator, dtype=dtype)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(12345)


def _mmd2_bruteforce(x, y, c):
    """Biased MMD^2 straight from its definition: kernel sums over every pair of positions."""
    xs, ys = x.flatten(1).T, y.flatten(1).T  # (M, C) position vectors of one sample
    kxx = (xs @ xs.T + c) ** 2
    kyy = (ys @ ys.T + c) ** 2
    kxy = (xs @ ys.T + c) ** 2
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


# ---------------------------------------------------------------------------------------- Gram


def test_gram_matrix_hand_values():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]])
    assert torch.equal(gram_matrix(f), expected), f"Gram of [[1,2],[3,4]]: expected {expected}"


@pytest.mark.parametrize("device", DEVICES)
def test_gram_loss_hand_value(device):
    # C=1, M=2: G(F) = 2, G(T) = 0, E = (2/2 - 0)^2 / (4 * 1) = 0.25 (Eq. 4).
    loss = gram_loss(torch.ones(1, 1, 1, 2, device=device), torch.zeros(1, 1, 1, 2, device=device))
    assert loss.item() == pytest.approx(0.25), (
        f"ones vs zeros (C=1, M=2): expected 0.25, got {loss.item()}"
    )


def test_gram_loss_matches_paper_eq4_for_equal_sizes(gen):
    f, t = _randn(gen, 3, 4, 3, 5), _randn(gen, 3, 4, 3, 5)
    channels, positions = 4, 15
    eq4 = ((gram_matrix(f) - gram_matrix(t)) ** 2).sum(dim=(1, 2)) / (
        4 * channels**2 * positions**2
    )
    got = gram_loss(f, t, reduction="none")
    assert torch.allclose(got, eq4), (
        f"gram_loss vs Eq. 4 with 1/(4 C^2 M^2): expected {eq4}, got {got}"
    )


@pytest.mark.parametrize(
    "target_shape", [(2, 3, 2, 3), (2, 3, 4, 1)], ids=["same_size", "other_size"]
)
def test_gram_loss_is_mmd2_with_squared_linear_kernel_over_4c2(gen, target_shape):
    f, t = _randn(gen, 2, 3, 2, 3), _randn(gen, *target_shape)
    got = gram_loss(f, t, reduction="none")
    for n in range(2):
        mmd2 = _mmd2_bruteforce(f[n], t[n], c=0.0)
        assert got[n].item() == pytest.approx(mmd2.item() / (4 * 3**2), rel=1e-10), (
            f"sample {n}: expected MMD^2/(4 C^2) = {mmd2.item() / 36}, got {got[n].item()}"
        )


def test_gram_loss_reduction_and_target_broadcast(gen):
    f, t = _randn(gen, 3, 2, 2, 2), _randn(gen, 1, 2, 3, 3)
    per_sample = gram_loss(f, t, reduction="none")
    assert per_sample.shape == (3,), (
        f"reduction='none' on N=3: expected shape (3,), got {per_sample.shape}"
    )
    expected = torch.stack([gram_loss(f[n : n + 1], t) for n in range(3)])
    assert torch.allclose(per_sample, expected), "a batch-1 target must be shared by every pair"
    assert gram_loss(f, t).item() == pytest.approx(per_sample.mean().item()), "mean reduction"


# ----------------------------------------------------------------------------------------- MMD


@pytest.mark.parametrize("c", [0.0, 0.5, 2.0])
@pytest.mark.parametrize(
    "target_shape", [(2, 3, 2, 2), (2, 3, 1, 3)], ids=["same_size", "other_size"]
)
def test_mmd_poly_loss_matches_bruteforce_kernel_sums(gen, c, target_shape):
    f, t = _randn(gen, 2, 3, 2, 2), _randn(gen, *target_shape)
    got = mmd_poly_loss(f, t, c=c, reduction="none")
    for n in range(2):
        expected = _mmd2_bruteforce(f[n], t[n], c).item() / (4 * 3**2)
        assert got[n].item() == pytest.approx(expected, rel=1e-10), (
            f"sample {n}, c={c}: expected MMD^2/(4 C^2) = {expected}, got {got[n].item()}"
        )


def test_mmd_poly_loss_hand_value_and_c0_is_gram(gen):
    # Means 1 and 0 with C=1: 0.25 + c * 1 / (2 * 1) = 1.25 for c = 2.
    loss = mmd_poly_loss(torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), c=2.0)
    assert loss.item() == pytest.approx(1.25), (
        f"ones vs zeros, c=2: expected 1.25, got {loss.item()}"
    )
    f, t = _randn(gen, 2, 3, 4, 4), _randn(gen, 2, 3, 4, 4)
    assert torch.equal(mmd_poly_loss(f, t, c=0.0), gram_loss(f, t)), (
        "c=0 must be the Gram loss exactly"
    )


# ------------------------------------------------------------------------------------- content


@pytest.mark.parametrize("device", DEVICES)
def test_content_loss_plain_eq2_hand_value(device):
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device).reshape(1, 1, 2, 2)
    loss = content_loss(f, torch.zeros_like(f))
    assert loss.item() == pytest.approx(15.0), f"(1+4+9+16)/2: expected 15, got {loss.item()}"


def test_relevance_weights_hand_values():
    relevance = torch.zeros(1, 4, 4)
    relevance[0, :2, :2] = 1.0
    relevance[0, 2:, 2:] = -5.0  # evidence against the class: clipped to 0, cannot cancel
    expected = torch.tensor([[[4.0, 0.0], [0.0, 0.0]]])
    got = relevance_weights(relevance, (2, 2))
    assert torch.equal(got, expected), (
        f"quarter-relevant 4x4 map pooled to 2x2: expected {expected}, got {got}"
    )


def test_content_loss_relevance_weighted_hand_value():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    relevance = torch.zeros(1, 1, 4, 4)
    relevance[0, 0, :2, :2] = 1.0
    loss = content_loss(f, torch.zeros_like(f), relevance=relevance)
    assert loss.item() == pytest.approx(2.0), (
        f"weights [[4,0],[0,0]] on squares [[1,4],[9,16]]: expected 2, got {loss.item()}"
    )


@pytest.mark.parametrize("level", [1.0, 3.7, 1e-3])
def test_content_loss_uniform_relevance_reduces_to_eq2(gen, level):
    f, p = _randn(gen, 2, 5, 4, 4), _randn(gen, 2, 5, 4, 4)
    relevance = torch.full((2, 16, 16), level, dtype=torch.float64)
    weighted = content_loss(f, p, relevance=relevance, reduction="none")
    plain = 0.5 * ((f - p) ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(weighted, plain, rtol=1e-12), (
        f"uniform relevance {level}: expected plain Eq. 2 {plain}, got {weighted}"
    )
    assert torch.allclose(content_loss(f, p, reduction="none"), plain), (
        "relevance=None must be plain Eq. 2"
    )


def test_content_loss_rejects_sample_without_positive_relevance(gen):
    f = _randn(gen, 3, 2, 2, 2)
    relevance = torch.ones(3, 4, 4, dtype=torch.float64)
    relevance[1] = -1.0
    with pytest.raises(InputError, match="sample 1 has no finite positive relevance") as info:
        content_loss(f, torch.zeros_like(f), relevance=relevance)
    assert "\n" not in str(info.value), "error must be one line"


# ------------------------------------------------------------------------ multi-reference target


def test_max_reference_features_hand_maps():
    first = torch.tensor([[1.0, 5.0], [3.0, 0.0]])
    second = torch.tensor([[2.0, 4.0], [3.0, -1.0]])
    expected = torch.tensor([[2.0, 5.0], [3.0, 0.0]]).reshape(1, 2, 2)
    unbatched = torch.stack([first, second]).reshape(2, 1, 2, 2)  # (K, C, H, W)
    got = max_reference_features(unbatched)
    assert torch.equal(got, expected), (
        f"element-wise max of two maps: expected {expected}, got {got}"
    )
    batched = max_reference_features(unbatched.unsqueeze(0))  # (N, K, C, H, W)
    assert torch.equal(batched, expected.unsqueeze(0)), (
        "batched (1, 2, 1, 2, 2) must give (1, 1, 2, 2)"
    )


def test_histogram_specification_hand_values():
    # Reference histogram on 2 bins over [0.5, 3.5]: masses 3/4 in [0.5, 2) and 1/4 in [2, 3.5].
    # Mid-rank quantiles 1/8, 3/8, 5/8 -> 0.5 + q/0.75 * 1.5; 7/8 -> 2 + (7/8 - 3/4)/0.25 * 1.5.
    values = torch.tensor([3.0, 0.0, 2.0, 1.0]).reshape(1, 1, 1, 4)
    reference = torch.tensor([0.5, 0.5, 0.5, 3.5]).reshape(1, 1, 1, 1, 4)
    got = histogram_specification(values, reference, bins=2).flatten()
    expected = torch.tensor([2.75, 0.75, 1.75, 1.25])
    assert torch.allclose(got, expected), f"expected {expected.tolist()}, got {got.tolist()}"
    counts = torch.histc(got, bins=2, min=0.5, max=3.5)
    assert counts.tolist() == [3.0, 1.0], (
        f"output histogram must equal the reference's [3, 1], got {counts}"
    )


def test_histogram_specification_known_histogram_exactly_per_channel():
    # Channel 0: 8 distinct values onto references with bin masses (1/2, 0, 1/4, 1/4) on 4 bins
    # over [0, 4]; channel 1: a constant reference maps everything onto that constant.
    values = torch.stack([torch.arange(8.0), torch.arange(8.0)]).reshape(1, 2, 2, 4)
    ref0 = torch.tensor([0.0, 0.4, 0.6, 0.8, 2.5, 2.5, 3.5, 4.0])
    ref1 = torch.full((8,), 7.0)
    reference = torch.stack([ref0, ref1]).reshape(1, 1, 2, 2, 4)
    got = histogram_specification(values, reference, bins=4)
    # Quantiles (r + 1/2)/8 -> r/4 + 1/8 in the half-mass bin [0, 1), then 2.25 ... 3.75.
    expected = torch.tensor([0.125, 0.375, 0.625, 0.875, 2.25, 2.75, 3.25, 3.75])
    assert torch.allclose(got[0, 0].flatten(), expected), (
        f"channel 0: expected {expected.tolist()}, got {got[0, 0].flatten().tolist()}"
    )
    counts = torch.histc(got[0, 0], bins=4, min=0.0, max=4.0)
    assert counts.tolist() == [4.0, 0.0, 2.0, 2.0], (
        f"channel 0: expected counts [4, 0, 2, 2], got {counts.tolist()}"
    )
    assert torch.all(got[0, 1] == 7.0), (
        f"channel 1 (constant reference 7): got {got[0, 1].flatten().tolist()}"
    )
    assert torch.all(got[0, 0].flatten().diff() > 0), (
        "specification must keep the order of the values"
    )


def test_histogram_specification_ties_share_one_value():
    values = torch.tensor([5.0, 5.0, 7.0, 9.0]).reshape(1, 1, 1, 4)
    reference = torch.linspace(0.0, 1.0, 101).reshape(1, 1, 1, 1, 101)
    got = histogram_specification(values, reference, bins=100).flatten()
    # Mid-rank quantiles: 5 -> (0 + 2)/8, 7 -> (2 + 3)/8, 9 -> (3 + 4)/8 of a uniform [0, 1].
    expected = torch.tensor([0.25, 0.25, 0.625, 0.875])
    assert torch.allclose(got, expected, atol=0.01), (
        f"expected ~{expected.tolist()}, got {got.tolist()}"
    )
    assert got[0] == got[1], "tied inputs must map to one output"


def test_histogram_specification_quantile_on_a_bin_edge_skips_the_empty_bins_after_it():
    # References: 5/6 of the mass at 0, 1/6 at 10; 10 bins of width 1, bins 1..8 empty. The
    # largest of three values has quantile 5/6, exactly the mass below bin 1, so it goes to the
    # start of the next occupied bin (9), as documented. The CDF comes from integer counts, so
    # 5/6 is met exactly; float sums of 1/6 (atomics on a GPU) overshoot it and give ~1.
    values = torch.tensor([0.0, 1.0, 2.0]).reshape(1, 1, 1, 3)
    reference = torch.tensor([0.0] * 5 + [10.0]).reshape(1, 1, 1, 1, 6)
    got = histogram_specification(values, reference, bins=10).flatten()
    # Quantiles 1/6 and 1/2 fall in bin 0 (mass 5/6): 0.2 and 0.6 of its width.
    expected = torch.tensor([0.2, 0.6, 9.0])
    assert torch.allclose(got, expected, atol=1e-6), f"expected {expected.tolist()}, got {got}"


@pytest.mark.parametrize("bins", [8, 256])
def test_histogram_specification_onto_own_histogram_moves_values_less_than_one_bin(gen, bins):
    values = _randn(gen, 2, 3, 10, 10)
    got = histogram_specification(values, values.unsqueeze(1), bins=bins)
    width = (values.amax(dim=(2, 3)) - values.amin(dim=(2, 3))) / bins
    moved = (got - values).abs().amax(dim=(2, 3))
    assert torch.all(moved <= width * (1 + 1e-9)), (
        f"{bins} bins: values must move less than one bin width {width.tolist()}, "
        f"moved {moved.tolist()}"
    )


def test_multi_reference_target_single_reference_is_identity_and_k2_is_specified_max(gen):
    refs = _randn(gen, 2, 1, 3, 4, 4)
    assert torch.equal(multi_reference_target(refs), refs[:, 0]), (
        "K=1 must return the reference unchanged"
    )
    refs = _randn(gen, 2, 2, 3, 4, 4)
    expected = histogram_specification(max_reference_features(refs), refs, bins=16)
    assert torch.equal(multi_reference_target(refs, bins=16), expected), (
        "K=2: H(M(F_1, F_2), h_bar)"
    )


# ------------------------------------------------------------------------------- proposed, total


def test_proposed_style_loss_reduces_to_parents(gen):
    f = _randn(gen, 2, 3, 4, 4)
    one_ref = _randn(gen, 2, 1, 3, 4, 4)
    assert torch.equal(proposed_style_loss(f, one_ref), gram_loss(f, one_ref[:, 0])), (
        "K=1, c=0: Eq. 4"
    )
    assert torch.equal(
        proposed_style_loss(f, one_ref, c=1.5), mmd_poly_loss(f, one_ref[:, 0], c=1.5)
    ), "K=1, c=1.5: Eq. 6"
    refs = _randn(gen, 2, 3, 3, 4, 4)
    expected = mmd_poly_loss(f, multi_reference_target(refs, bins=32), c=0.5)
    assert torch.equal(proposed_style_loss(f, refs, c=0.5, bins=32), expected), (
        "K=3: MMD against Eq. 9 target"
    )


def test_total_loss_hand_value_and_per_sample_terms():
    content = {"layer2": torch.tensor(2.0)}
    style = {"relu": torch.tensor(1.0), "layer1": torch.tensor(3.0)}
    got = total_loss(content, style, alpha=1.0, beta=10.0, layer_weights={"layer1": 0.5})
    assert got.item() == pytest.approx(27.0), (
        f"2 + 10 * (1 + 0.5 * 3): expected 27, got {got.item()}"
    )
    per_sample = total_loss(
        {"layer2": torch.tensor([1.0, 2.0])}, {"relu": torch.tensor([3.0, 4.0])}, 2.0, 1.0
    )
    assert per_sample.tolist() == [5.0, 8.0], (
        f"2 * [1, 2] + [3, 4]: expected [5, 8], got {per_sample.tolist()}"
    )


LARGE = {"relu": (4, 8, 8), "layer1": (6, 4, 4), "layer2": (8, 2, 2)}
SMALL = {"relu": (2, 3, 3), "layer1": (3, 2, 2), "layer2": (2, 2, 2)}  # gradcheck: 76 inputs


def _feature_dicts(gen, shapes=LARGE, n=2, k=3):
    generated = {layer: _randn(gen, n, *shape) for layer, shape in shapes.items()}
    content = {"layer2": _randn(gen, n, *shapes["layer2"])}
    style = {
        layer: _randn(gen, n, k, *shape).abs()
        for layer, shape in shapes.items()
        if layer != "layer2"
    }
    return generated, content, style


def test_style_transfer_loss_composes_the_equations(gen):
    generated, content, style = _feature_dicts(gen)
    relevance = torch.rand(2, 16, 16, generator=gen, dtype=torch.float64)
    loss_fn = StyleTransferLoss(
        beta=100.0,
        alpha=0.5,
        style_layers=("relu", "layer1"),
        layer_weights={"relu": 0.25},
        c=0.1,
        bins=64,
    )
    got = loss_fn(generated, content, style, relevance=relevance, reduction="none")
    expected = 0.5 * content_loss(
        generated["layer2"], content["layer2"], relevance, reduction="none"
    ) + 100.0 * (
        0.25
        * proposed_style_loss(generated["relu"], style["relu"], c=0.1, bins=64, reduction="none")
        + proposed_style_loss(
            generated["layer1"], style["layer1"], c=0.1, bins=64, reduction="none"
        )
    )
    assert torch.allclose(got, expected), (
        f"expected alpha*Lc + beta*sum w_l L_ps = {expected}, got {got}"
    )
    cached = loss_fn(
        generated, content, loss_fn.style_targets(style), relevance=relevance, reduction="none"
    )
    assert torch.equal(cached, got), "precomputed style_targets must give the same loss"


def test_style_transfer_loss_defaults():
    loss_fn = StyleTransferLoss(beta=1.0)
    assert (
        loss_fn.style_layers == RESNET50_LAYERS == ("relu", "layer1", "layer2", "layer3", "layer4")
    )
    assert loss_fn.content_layers == ("layer2",) and loss_fn.alpha == 1.0 and loss_fn.c == 0.0


# ------------------------------------------------------------------------------------ gradients


def test_gradcheck_gram_and_mmd(gen):
    f = _randn(gen, 2, 3, 2, 2).requires_grad_()
    t = _randn(gen, 2, 3, 2, 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: gram_loss(a, b, reduction="none"), (f, t))
    assert torch.autograd.gradcheck(
        lambda a, b: mmd_poly_loss(a, b, c=0.7, reduction="none"), (f, t)
    )


def test_gradcheck_content_loss_with_relevance(gen):
    f = _randn(gen, 2, 3, 2, 2).requires_grad_()
    p = _randn(gen, 2, 3, 2, 2).requires_grad_()
    relevance = torch.rand(2, 1, 6, 6, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: content_loss(a, b, relevance, reduction="none"), (f, p)
    )


def test_gradcheck_proposed_total_and_callable(gen):
    f = _randn(gen, 2, 3, 3, 3).requires_grad_()
    refs = _randn(gen, 2, 2, 3, 3, 3)
    assert torch.autograd.gradcheck(
        lambda a: proposed_style_loss(a, refs, c=0.3, reduction="none"), (f,)
    )
    terms = (_randn(gen, 2).requires_grad_(), _randn(gen, 2).requires_grad_())
    assert torch.autograd.gradcheck(
        lambda a, b: total_loss({"layer2": a}, {"relu": b}, 1.0, 3.0, {"relu": 0.5}), terms
    )
    generated, content, style = _feature_dicts(gen, SMALL)
    relevance = torch.rand(2, 4, 4, generator=gen, dtype=torch.float64)
    loss_fn = StyleTransferLoss(beta=10.0, style_layers=("relu", "layer1"), c=0.2)
    targets = loss_fn.style_targets(style)
    names = list(generated)
    leaves = tuple(generated[name].clone().requires_grad_() for name in names)
    assert torch.autograd.gradcheck(
        lambda *xs: loss_fn(
            dict(zip(names, xs, strict=True)), content, targets, relevance, reduction="none"
        ),
        leaves,
    )


# ------------------------------------------------------------------------------------ bad input


def _ones(*shape, dtype=torch.float32):
    return torch.ones(*shape, dtype=dtype)


BAD_CALLS = [
    pytest.param(
        lambda: gram_loss(_ones(2, 3), _ones(2, 3)),
        InputError,
        r"features: expected a non-empty floating \(N, C, H, W\) tensor, "
        r"got torch.float32 tensor of shape \(2, 3\)",
        id="features_2d",
    ),
    pytest.param(
        lambda: gram_loss(torch.ones(1, 2, 2, 2, dtype=torch.int64), _ones(1, 2, 2, 2)),
        InputError,
        "features: expected a non-empty floating",
        id="features_int",
    ),
    pytest.param(
        lambda: gram_loss(_ones(1, 2, 2, 2), _ones(1, 3, 2, 2)),
        InputError,
        r"target_features: .*\(need batch 1, 2 channels",
        id="channel_mismatch",
    ),
    pytest.param(
        lambda: gram_loss(_ones(2, 2, 2, 2), _ones(3, 2, 2, 2)),
        InputError,
        "need batch 2 or 1",
        id="batch_mismatch",
    ),
    pytest.param(
        lambda: gram_loss(_ones(1, 1, 2, 2), _ones(1, 1, 2, 2, dtype=torch.float64)),
        InputError,
        "dtype torch.float32",
        id="dtype_mismatch",
    ),
    pytest.param(
        lambda: gram_loss(_ones(1, 1, 2, 2), _ones(1, 1, 2, 2), reduction="sum"),
        ConfigError,
        "reduction must be one of mean, none, got 'sum'",
        id="reduction",
    ),
    pytest.param(
        lambda: mmd_poly_loss(_ones(1, 1, 2, 2), _ones(1, 1, 2, 2), c=-1),
        ConfigError,
        "c must be a finite number >= 0, got -1",
        id="negative_c",
    ),
    pytest.param(
        lambda: content_loss(_ones(1, 1, 2, 2), _ones(1, 1, 3, 3)),
        InputError,
        "does not match the spatial size",
        id="content_size",
    ),
    pytest.param(
        lambda: content_loss(_ones(2, 1, 2, 2), _ones(2, 1, 2, 2), _ones(3, 4, 4)),
        InputError,
        "relevance: batch 3 does not match features' batch 2",
        id="relevance_batch",
    ),
    pytest.param(
        lambda: relevance_weights(_ones(1, 2, 4, 4), (2, 2)),
        InputError,
        "relevance: expected one channel",
        id="relevance_channels",
    ),
    pytest.param(
        lambda: max_reference_features(_ones(2, 2, 2)),
        InputError,
        r"reference_features: expected .*\(K, C, H, W\)",
        id="max_3d",
    ),
    pytest.param(
        lambda: histogram_specification(_ones(1, 2, 2, 2), _ones(1, 1, 3, 2, 2)),
        InputError,
        "does not fit values",
        id="histogram_channels",
    ),
    pytest.param(
        lambda: histogram_specification(_ones(1, 1, 2, 2), _ones(1, 1, 1, 2, 2), bins=0),
        ConfigError,
        "bins must be an integer >= 1, got 0",
        id="bins_zero",
    ),
    pytest.param(
        lambda: total_loss({}, {}, 1.0, 1.0),
        ConfigError,
        "at least one content or style term",
        id="no_terms",
    ),
    pytest.param(
        lambda: total_loss({"a": 1.0}, {"b": 1.0}, -1.0, 1.0),
        ConfigError,
        "alpha must be a finite number >= 0, got -1.0",
        id="negative_alpha",
    ),
    pytest.param(
        lambda: total_loss({"a": 1.0}, {"b": 1.0}, 1.0, 1.0, {"a": 2.0}),
        ConfigError,
        "layer_weights: 'a' is not a style layer",
        id="weight_not_style_layer",
    ),
    pytest.param(
        lambda: StyleTransferLoss(beta=float("nan")),
        ConfigError,
        "beta must be a finite number >= 0",
        id="nan_beta",
    ),
    pytest.param(
        lambda: StyleTransferLoss(beta=1.0, style_layers=[]),
        ConfigError,
        "style_layers must be a non-empty list",
        id="no_style_layers",
    ),
    pytest.param(
        lambda: StyleTransferLoss(beta=1.0, content_layers="layer2"),
        ConfigError,
        "content_layers must be a list",
        id="layers_string",
    ),
    pytest.param(
        lambda: StyleTransferLoss(beta=1.0, layer_weights={"layer9": 1.0}),
        ConfigError,
        "'layer9' is not a style layer",
        id="unknown_weight_layer",
    ),
    pytest.param(
        lambda: StyleTransferLoss(beta=1.0, style_layers=("relu",))(
            {"relu": _ones(1, 1, 2, 2)}, {}, {}
        ),
        InputError,
        r"generated: missing layer 'layer2' \(have: relu\)",
        id="missing_layer",
    ),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_bad_arguments_raise_one_line(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert "\n" not in str(info.value), f"error must be one line, got {str(info.value)!r}"
