"""LRP rules on layers small enough to compute by hand (numbers worked out in the comments)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.explain import (
    alpha_beta_rule,
    epsilon_rule,
    flat_rule,
    global_avg_pool_rule,
    max_pool_rule,
    residual_split,
    zb_rule,
)

D = torch.float64


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight, dtype=D)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(D)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=D))
    return layer


# The tiny network: x = (1, 2) -> dense1 (W1 = [[2, -1], [1, 1]], b1 = [0.5, -1]) -> ReLU
# -> h = (0.5, 2) -> dense2 (W2 = [[4, -0.5]], b2 = [0.25]) -> f(x) = 2 - 1 + 0.25 = 1.25.
X = torch.tensor([[1.0, 2.0]], dtype=D)
DENSE1 = _linear([[2.0, -1.0], [1.0, 1.0]], [0.5, -1.0])
DENSE2 = _linear([[4.0, -0.5]], [0.25])


def _forward():
    h = torch.relu(DENSE1(X)).detach()
    return h, DENSE2(h).detach()


def _close(got, want, what):
    want = torch.tensor(want, dtype=D)
    assert torch.allclose(got, want, atol=1e-12), \
        f"{what}: got {got.tolist()}, expected {want.tolist()}"


def test_tiny_network_forward_is_as_computed_by_hand():
    h, f = _forward()
    _close(h, [[0.5, 2.0]], "hidden activations")
    _close(f, [[1.25]], "logit")


def test_epsilon_rule_by_hand():
    h, f = _forward()
    # dense2: z = 1.25 (bias included); R_h = (0.5*4, 2*(-0.5)) / 1.25 * 1.25 = (2, -1).
    r_h = epsilon_rule(DENSE2, h, f, epsilon=0.0)
    _close(r_h, [[2.0, -1.0]], "epsilon rule, dense2")
    # dense1: unit 1: z = 0.5, contributions (2, -2), s = 2 / 0.5 = 4 -> (8, -8);
    #         unit 2: z = 2, contributions (1, 2), s = -1 / 2 -> (-0.5, -1). Sum: (7.5, -9).
    _close(epsilon_rule(DENSE1, X, r_h, epsilon=0.0), [[7.5, -9.0]], "epsilon rule, dense1")


def test_epsilon_stabiliser_absorbs_relevance():
    h, f = _forward()
    # epsilon = 0.25: denominator 1.25 + 0.25 = 1.5, R_h = (2, -1) * 1.25 / 1.5.
    _close(epsilon_rule(DENSE2, h, f, epsilon=0.25), [[2.0 / 1.2, -1.0 / 1.2]], "epsilon 0.25")


def test_alpha_beta_rule_by_hand():
    h, f = _forward()
    # dense2: z+ = 0.5*4 = 2, z- = 2*(-0.5) = -1; R_h = (2 * 2/2 * 1.25, -1 * (-1)/(-1) * 1.25)
    #         = (2.5, -1.25): conserved (sum 1.25), the bias 0.25 gets nothing.
    r_h = alpha_beta_rule(DENSE2, h, f, alpha=2.0, beta=1.0)
    _close(r_h, [[2.5, -1.25]], "alpha-beta, dense2")
    # dense1: unit 1: contributions (2, -2): R = 2.5 -> (2 * 2/2 * 2.5, -1 * 1 * 2.5) = (5, -2.5);
    #         unit 2: contributions (1, 2), no negative part (beta term dropped):
    #         R = -1.25 -> 2 * (1/3, 2/3) * (-1.25) = (-5/6, -5/3). Sum: (25/6, -25/6).
    _close(alpha_beta_rule(DENSE1, X, r_h), [[25 / 6, -25 / 6]], "alpha-beta, dense1")


def test_alpha_beta_with_alpha_1_beta_0_is_the_positive_z_rule():
    h, f = _forward()
    # Only positive contributions: dense2 has one (0.5*4), so it takes everything.
    _close(alpha_beta_rule(DENSE2, h, f, alpha=1.0, beta=0.0), [[1.25, 0.0]], "alpha=1, beta=0")


def test_alpha_beta_on_signed_input_pairs_negative_input_with_negative_weight():
    # x = (-1, 2), w = (1, 1): z_ij = (-1, 2): z+ = 2 (from x2), z- = -1 (from x1).
    layer = _linear([[1.0, 1.0]])
    r = alpha_beta_rule(layer, torch.tensor([[-1.0, 2.0]], dtype=D), torch.tensor([[3.0]], dtype=D))
    _close(r, [[-3.0, 6.0]], "alpha-beta, signed input")  # (-beta * 3, alpha * 3)


def test_alpha_beta_requires_alpha_minus_beta_one():
    h, f = _forward()
    with pytest.raises(ConfigError, match="alpha - beta must equal 1.*alpha=3.0, beta=1.0"):
        alpha_beta_rule(DENSE2, h, f, alpha=3.0, beta=1.0)


def test_flat_rule_spreads_evenly():
    # Each unit of dense1 sees both inputs: R_h = (2.5, -1.25) -> (2.5 - 1.25) / 2 each.
    _close(flat_rule(DENSE1, X, torch.tensor([[2.5, -1.25]], dtype=D)), [[0.625, 0.625]], "flat")


def test_flat_rule_on_a_padded_convolution_counts_only_real_pixels():
    # 3x3 kernel, padding 1, 3x3 input: the centre output sees all 9 pixels, the corner output
    # (0, 0) only the 2x2 block of real pixels (the rest is padding).
    conv = nn.Conv2d(1, 1, kernel_size=3, padding=1).to(D)
    relevance = torch.zeros(1, 1, 3, 3, dtype=D)
    relevance[0, 0, 1, 1], relevance[0, 0, 0, 0] = 9.0, 4.0
    r = flat_rule(conv, torch.rand(1, 1, 3, 3, dtype=D), relevance)
    _close(r, [[[[2.0, 2.0, 1.0], [2.0, 2.0, 1.0], [1.0, 1.0, 1.0]]]], "flat, padded conv")


def test_zb_rule_by_hand():
    # Bounds [0, 3]. Unit 1, w = (2, -1): terms x w - l w+ - h w- = (2 - 0, -2 + 3) = (2, 1);
    # R = 2.5 -> (5/3, 5/6). Unit 2, w = (1, 1): terms (1, 2); R = -1.25 -> (-5/12, -5/6).
    # Sum: (5/4, 0), conserved (1.25).
    r = zb_rule(DENSE1, X, torch.tensor([[2.5, -1.25]], dtype=D), low=0.0, high=3.0)
    _close(r, [[1.25, 0.0]], "z^B")


def test_zb_rule_rejects_input_outside_its_bounds():
    with pytest.raises(InputError, match="outside its bounds"):
        zb_rule(DENSE1, X, torch.tensor([[1.0, 1.0]], dtype=D), low=0.0, high=1.0)


def test_residual_split_by_hand():
    r_branch, r_short = residual_split(torch.tensor([3.0, -1.0], dtype=D),
                                       torch.tensor([1.0, 3.0], dtype=D),
                                       torch.tensor([2.0, 4.0], dtype=D))
    # y = (4, 2): branch shares (3/4, -1/2), shortcut (1/4, 3/2).
    _close(r_branch, [1.5, -2.0], "residual split, branch")
    _close(r_short, [0.5, 6.0], "residual split, shortcut")


def test_max_pool_winner_take_all_adds_over_overlapping_windows():
    # Row (1, 3, 2), windows 1x2 with stride 1: both windows pick the 3.
    pool = nn.MaxPool2d(kernel_size=(1, 2), stride=1)
    r = max_pool_rule(pool, torch.tensor([[[[1.0, 3.0, 2.0]]]], dtype=D),
                      torch.tensor([[[[4.0, 5.0]]]], dtype=D))
    _close(r, [[[[0.0, 9.0, 0.0]]]], "max pool")


def test_global_average_pool_proportional():
    r = global_avg_pool_rule(torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]]], dtype=D),
                             torch.tensor([[2.0]], dtype=D))
    _close(r, [[[[0.25, 0.75], [0.0, 1.0]]]], "global average pool")  # 2 * (1, 3, 0, 4) / 8


def _as_dense(conv: nn.Conv2d, shape) -> nn.Linear:
    """The dense layer computing the same map as ``conv`` on flattened inputs of ``shape``."""
    basis = torch.eye(int(torch.tensor(shape).prod()), dtype=D).reshape(-1, *shape)
    with torch.no_grad():
        columns = torch.nn.functional.conv2d(basis, conv.weight, None, conv.stride, conv.padding,
                                             conv.dilation, conv.groups).flatten(1)
    dense = nn.Linear(columns.shape[0], columns.shape[1]).to(D)
    with torch.no_grad():
        dense.weight.copy_(columns.T)
        out_shape = conv(torch.zeros(1, *shape, dtype=D)).shape[1:]
        dense.bias.copy_(conv.bias.view(-1, 1, 1).expand(out_shape).flatten())
    return dense


@pytest.mark.parametrize("rule", ["epsilon", "alpha_beta", "zb"])
@pytest.mark.parametrize(("stride", "padding", "groups"), [(1, 1, 1), (2, 1, 1), (2, 0, 2)])
def test_convolution_matches_its_dense_equivalent(rng, rule, stride, padding, groups):
    # The conv path (transposed products with stride/padding/groups) against plain matrices.
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=stride, padding=padding, groups=groups).to(D)
    shape = (4, 7, 7)
    x = torch.from_numpy(rng.uniform(-1, 1, size=(2, *shape)))
    dense = _as_dense(conv, shape)
    relevance = torch.from_numpy(rng.normal(size=(2, *conv(x).shape[1:])))
    apply = {"epsilon": lambda layer, a, r: epsilon_rule(layer, a, r, epsilon=1e-3),
             "alpha_beta": alpha_beta_rule,
             "zb": lambda layer, a, r: zb_rule(layer, a, r, low=-1.0, high=1.0)}[rule]
    got = apply(conv, x, relevance)
    want = apply(dense, x.flatten(1), relevance.flatten(1)).view_as(x)
    assert torch.allclose(got, want, atol=1e-10), \
        f"{rule} stride={stride} padding={padding}: max |conv - dense| " \
        f"{(got - want).abs().max():.2e}"
