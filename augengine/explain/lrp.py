"""Layer-wise relevance propagation (LRP) for the project's ResNets.

LRP (Bach et al. 2015; Montavon, Samek and Mueller 2018) explains one logit ``f(x)`` by passing
relevance ``R`` backwards layer by layer, each layer splitting the relevance of its outputs among
its inputs in proportion to their contributions, so that (seed 002, Eq. 10-13)

    sum_i R_i^(l) = sum_j R_j^(l+1) = ... = f(x).

Seed 002 explains its ResNet50 with the alpha-beta rule (Eq. 16) and uses the input relevance to
weight its NST content loss. Here (zennit's ``EpsilonAlpha2Beta1Flat`` composite, written out for
the ResNet structure because zennit cannot be installed, see ENVIRONMENT.md):

* BatchNorm is first folded into the convolution before it (:func:`fold_batchnorm`);
* every convolution: alpha-beta rule (:func:`alpha_beta_rule`, alpha=2, beta=1);
* the dense ``fc`` layer: epsilon rule (:func:`epsilon_rule`);
* the first convolution (pixels): flat rule (:func:`flat_rule`) or z^B (:func:`zb_rule`);
* residual additions: z-rule, relevance split in proportion to the two branches
  (:func:`residual_split`);
* max pooling: winner-take-all (:func:`max_pool_rule`); global average pooling: z-rule
  (:func:`global_avg_pool_rule`); ReLU passes relevance unchanged.

The alpha-beta and flat/z^B rules ignore biases, so they conserve relevance exactly (wherever a
unit has contributions of both signs); the epsilon rule at ``fc`` gives the share of the bias and of
``epsilon`` away, so with the default rules ``sum(R_input) = f(x) - b_fc[target]`` up to
``epsilon``.

Sign: the walk starts from the logit itself, ``R = f(x)``, not from a unit relevance. The epsilon
rule at ``fc`` then gives each pooled feature ``k`` the relevance ``a_k w_k f / (f + eps sign f)
~ a_k w_k``, its own contribution to the logit: positive when it raises the class's logit,
whatever the sign of ``f(x)``; the rules below pass relevance on in proportion to contributions,
so the convention carries down to the pixels (for LRP-0 exactly: gradient x input). So positive
relevance is evidence for the class and negative evidence against it, also for a negative logit
(an image the model scores against the class); the sign of the total ``f(x) - b_fc`` says which
way the evidence adds up. A unit start (``R = 1`` at the logit) divides every relevance by
``f(x)`` and so flips the whole map whenever the logit is negative: that unit-start map correlates
-1 with this one for a negative logit (issue 11). The class's log-odds would explain another
quantity (the class against the others, through every logit) and is not used.

Every rule is written out as ``R_in = a * J^T (R_out / z)``: one forward product for the
denominators ``z`` and one transposed product (``conv2d_input``, ``s @ W``), so nothing here needs
autograd and everything runs wherever the model and the input are (CPU or GPU).

Precision. :func:`lrp_layers` (and so :func:`lrp`) runs inside
:func:`augengine.precision.full_float32`: cuDNN's default TF32 for float32 convolutions on
Ampere/Hopper (relative error about 5e-4 per product) would be amplified by the divisions by ``z``.
With TF32 off the GPU forms the same float32 products as the CPU (results then differ by summation
order; not yet measured on a GPU); float64 never uses TF32. The individual rules run under
whatever the caller has set.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.models.resnet import Bottleneck, ResNet
from augengine.precision import full_float32

__all__ = [
    "alpha_beta_rule",
    "epsilon_rule",
    "flat_rule",
    "fold_batchnorm",
    "global_avg_pool_rule",
    "lrp",
    "lrp_layers",
    "max_pool_rule",
    "residual_split",
    "zb_rule",
]

#: Guard added to the denominators of the z-rules (residual add, average pooling): a numerical
#: safeguard against 0/0, far too small to change a relevance (unlike ``epsilon`` of the epsilon
#: rule, which is a modelling choice).
_Z_GUARD = 1e-9

_LAYER_RULES = ("alpha_beta", "epsilon")
_FIRST_RULES = ("flat", "zb", "alpha_beta", "epsilon")


# --------------------------------------------------------------------------------------------
# Linear algebra shared by the rules
# --------------------------------------------------------------------------------------------

def _check_layer(layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ConfigError(f"LRP needs zero-padded convolutions with numeric padding, got "
                              f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}")
    elif not isinstance(layer, nn.Linear):
        raise ConfigError(f"LRP rules apply to nn.Conv2d and nn.Linear, got {type(layer).__name__}")


def _forward(layer: nn.Module, a: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    """``layer`` applied to ``a`` with substituted parameters: sum_i a_i w_ij (+ b_j)."""
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(a, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(a, weight, bias)


def _transpose(layer: nn.Module, s: torch.Tensor, weight: torch.Tensor,
               input_shape: torch.Size) -> torch.Tensor:
    """``c_i = sum_j w_ij s_j``: the transpose of the bias-free map of ``_forward``."""
    if isinstance(layer, nn.Conv2d):
        return torch.nn.grad.conv2d_input(input_shape, weight, s, layer.stride, layer.padding,
                                          layer.dilation, layer.groups)
    return s @ weight


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0.

    For rules whose contributions all share the sign of their sum (alpha-beta parts, flat, z^B):
    the fractions ``z_ij / z_j`` lie in [0, 1], so an exact division is safe and keeps relevance
    conserved; a zero sum means every contribution is zero.
    """
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1), 0)


def _stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = +1``."""
    return z + epsilon * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _check_alpha_beta(alpha: float, beta: float) -> None:
    if beta < 0 or abs(alpha - beta - 1.0) > 1e-9:
        raise ConfigError(f"alpha - beta must equal 1 with beta >= 0 (relevance conservation), "
                          f"got alpha={alpha}, beta={beta}")


# --------------------------------------------------------------------------------------------
# Rules: one function per layer kind; ``activation`` is the layer input, ``relevance`` the
# relevance of its output; each returns the relevance of its input (shape of ``activation``),
# outside autograd: relevance is a result, not something to differentiate.
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def epsilon_rule(layer: nn.Module, activation: torch.Tensor, relevance: torch.Tensor,
                 epsilon: float = 1e-6) -> torch.Tensor:
    """LRP-epsilon for a convolution or dense layer.

    ``R_i = sum_j a_i w_ij / (z_j + epsilon sign(z_j)) R_j`` with ``z_j = sum_i a_i w_ij + b_j``
    (Bach et al. 2015; Montavon et al. 2018). Conservative up to the share ``b_j / z_j`` of the bias
    and the ``epsilon`` absorption; ``epsilon -> 0`` on a bias-free layer is the z-rule.

    Parameters
    ----------
    layer : nn.Conv2d or nn.Linear
    activation : Tensor (N, C_in, H, W) or (N, D_in)
        Input of ``layer``.
    relevance : Tensor (N, C_out, H', W') or (N, D_out)
        Relevance of the output of ``layer``.
    epsilon : float
        Stabiliser (>= 0), in the units of ``z``.

    Returns
    -------
    Tensor, shape and dtype of ``activation``

    Example
    -------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
    >>> epsilon_rule(layer, torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0]]), epsilon=0.0)
    tensor([[ 3., -2.]])
    """
    _check_layer(layer)
    if epsilon < 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon}")
    z = _forward(layer, activation, layer.weight, layer.bias)
    return activation * _transpose(layer, _divide(relevance, _stabilize(z, epsilon)),
                                   layer.weight, activation.shape)


@torch.no_grad()
def alpha_beta_rule(layer: nn.Module, activation: torch.Tensor, relevance: torch.Tensor,
                    alpha: float = 2.0, beta: float = 1.0) -> torch.Tensor:
    """LRP-alpha-beta (seed 002, Eq. 16) for a convolution or dense layer.

    ``R_i = sum_j (alpha z_ij^+ / sum_i' z_i'j^+  -  beta z_ij^- / sum_i' z_i'j^-) R_j`` with
    ``z_ij = a_i w_ij``, ``(.)^+ = max(., 0)``, ``(.)^- = min(., 0)``, and ``alpha - beta = 1``.
    For ``a >= 0`` (any input after a ReLU) ``z_ij^+ = a_i w_ij^+`` as printed in the seed; for
    signed inputs ``z_ij^+ = a_i^+ w_ij^+ + a_i^- w_ij^-``. (The seed prints the negative term
    without its ``beta``, which equals the ``alpha=2, beta=1`` it uses.) Biases are left out of
    the sums, as in Eq. 16, so the rule conserves relevance exactly for every unit that has both
    positive and negative contributions; a missing part drops its term.

    Parameters
    ----------
    layer : nn.Conv2d or nn.Linear
    activation : Tensor (N, C_in, H, W) or (N, D_in)
        Input of ``layer``.
    relevance : Tensor (N, C_out, H', W') or (N, D_out)
        Relevance of the output of ``layer``.
    alpha, beta : float
        Weights of the positive and negative parts; ``alpha - beta = 1``, ``beta >= 0``.

    Returns
    -------
    Tensor, shape and dtype of ``activation``

    Example
    -------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
    >>> alpha_beta_rule(layer, torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0]]))
    tensor([[ 2., -1.]])
    """
    _check_layer(layer)
    _check_alpha_beta(alpha, beta)
    w_pos, w_neg = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
    shape = activation.shape
    # (input part, its weights in z^+, its weights in z^-): z^+ pairs a^+ with w^+ and a^- with
    # w^-, z^- the opposite. Inputs after a ReLU have no a^-, and skipping it halves the work.
    terms = [(activation.clamp(min=0), w_pos, w_neg)]
    if bool((activation < 0).any()):
        terms.append((activation.clamp(max=0), w_neg, w_pos))

    def share(which: int) -> torch.Tensor:
        s = _divide(relevance, sum(_forward(layer, term[0], term[which]) for term in terms))
        return sum(term[0] * _transpose(layer, s, term[which], shape) for term in terms)

    return alpha * share(1) - beta * share(2)


@torch.no_grad()
def flat_rule(layer: nn.Module, activation: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Flat rule for the pixel layer: each output spreads its relevance evenly over its receptive
    field, ``R_i = sum_j R_j / |{i' -> j}|`` (weights and pixel values ignored).

    Zero padding is not part of the input, so border units share among fewer pixels and relevance
    is conserved exactly. Gives smooth input heatmaps (zennit's ``Flat``).

    Parameters
    ----------
    layer : nn.Conv2d or nn.Linear
    activation : Tensor (N, C_in, H, W) or (N, D_in)
        Input of ``layer``; only its shape is used.
    relevance : Tensor
        Relevance of the output of ``layer``.

    Returns
    -------
    Tensor, shape and dtype of ``activation``

    Example
    -------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 1)
    >>> flat_rule(layer, torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0]]))
    tensor([[0.5000, 0.5000]])
    """
    _check_layer(layer)
    ones = torch.ones_like(layer.weight)
    field_size = _forward(layer, torch.ones_like(activation), ones)
    return _transpose(layer, _divide(relevance, field_size), ones, activation.shape)


@torch.no_grad()
def zb_rule(layer: nn.Module, activation: torch.Tensor, relevance: torch.Tensor,
            low, high) -> torch.Tensor:
    """z^B rule for the pixel layer, with input bounded by ``low <= x <= high``.

    ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / sum_i' (x_i' w_i'j - l_i' w_i'j^+ -
    h_i' w_i'j^-) R_j`` (Montavon et al. 2017, deep Taylor decomposition). Every term is >= 0, so
    the rule is conservative and never flips signs.

    Parameters
    ----------
    layer : nn.Conv2d or nn.Linear
    activation : Tensor (N, C, H, W) or (N, D)
        The (normalised) input image.
    relevance : Tensor
        Relevance of the output of ``layer``.
    low, high : float or Tensor broadcastable to ``activation``
        Bounds of the input domain, e.g. ``imagenet_normalize`` of 0 and of 1, shape (1, 3, 1, 1).

    Returns
    -------
    Tensor, shape and dtype of ``activation``

    Raises
    ------
    InputError
        Input outside ``[low, high]``.

    Example
    -------
    >>> import torch
    >>> layer = torch.nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
    >>> zb_rule(layer, torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0]]), low=0.0, high=1.0)
    tensor([[0.5000, 0.5000]])
    """
    _check_layer(layer)
    options = {"dtype": activation.dtype, "device": activation.device}
    low = torch.as_tensor(low, **options).expand_as(activation)
    high = torch.as_tensor(high, **options).expand_as(activation)
    slack = 1e-4 * (high - low).abs()
    if bool(((activation < low - slack) | (activation > high + slack)).any()):
        raise InputError(f"zb_rule: input outside its bounds [{float(low.min()):.4g}, "
                         f"{float(high.max()):.4g}] (values {float(activation.min()):.4g} .. "
                         f"{float(activation.max()):.4g}); pass the bounds of the normalised input")
    w = layer.weight
    w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
    z = _forward(layer, activation, w) - _forward(layer, low, w_pos) - _forward(layer, high, w_neg)
    s = _divide(relevance, z)
    shape = activation.shape
    return (activation * _transpose(layer, s, w, shape) - low * _transpose(layer, s, w_pos, shape)
            - high * _transpose(layer, s, w_neg, shape))


@torch.no_grad()
def residual_split(branch: torch.Tensor, shortcut: torch.Tensor,
                   relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-rule at a residual addition ``y = branch + shortcut``: each summand gets the share of the
    relevance of ``y`` it contributed, ``R_b = b / y * R``, ``R_s = s / y * R`` (``R_b + R_s = R``).

    Parameters
    ----------
    branch, shortcut, relevance : Tensor (N, C, H, W)
        The two summands and the relevance of their sum (ReLU after the sum passes it unchanged).

    Returns
    -------
    (Tensor, Tensor)
        Relevance of ``branch`` and of ``shortcut``.

    Example
    -------
    >>> import torch
    >>> residual_split(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([2.0]))
    (tensor([1.5000]), tensor([0.5000]))
    """
    s = relevance / _stabilize(branch + shortcut, _Z_GUARD)
    return branch * s, shortcut * s


@torch.no_grad()
def max_pool_rule(pool: nn.MaxPool2d, activation: torch.Tensor,
                  relevance: torch.Tensor) -> torch.Tensor:
    """Winner-take-all through max pooling: each window's relevance goes to its maximum (the unit
    that alone produced the output; Montavon et al. 2018). Overlapping windows add up.

    Parameters
    ----------
    pool : nn.MaxPool2d
    activation : Tensor (N, C, H, W)
        Input of ``pool``.
    relevance : Tensor (N, C, H', W')
        Relevance of its output.

    Returns
    -------
    Tensor (N, C, H, W)

    Example
    -------
    >>> import torch
    >>> max_pool_rule(torch.nn.MaxPool2d(2), torch.tensor([[[[1.0, 4.0], [2.0, 3.0]]]]),
    ...               torch.tensor([[[[5.0]]]]))
    tensor([[[[0., 5.],
              [0., 0.]]]])
    """
    _, winners = F.max_pool2d(activation, pool.kernel_size, pool.stride, pool.padding,
                              pool.dilation, ceil_mode=pool.ceil_mode, return_indices=True)
    result = torch.zeros_like(activation).flatten(2)
    result.scatter_add_(2, winners.flatten(2), relevance.flatten(2))
    return result.view_as(activation)


@torch.no_grad()
def global_avg_pool_rule(activation: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """z-rule through global average pooling: ``R_i = (a_i / n) / mean(a) R`` per channel, i.e.
    in proportion to each position's share of the channel sum.

    Parameters
    ----------
    activation : Tensor (N, C, H, W)
        Input of the pooling (``n = H W``).
    relevance : Tensor (N, C, 1, 1) or (N, C)
        Relevance of the pooled features.

    Returns
    -------
    Tensor (N, C, H, W)

    Example
    -------
    >>> import torch
    >>> global_avg_pool_rule(torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[2.0]]))
    tensor([[[[0.5000, 1.5000]]]])
    """
    total = activation.sum(dim=(2, 3), keepdim=True)
    return activation * (relevance.reshape(total.shape) / _stabilize(total, _Z_GUARD))


# --------------------------------------------------------------------------------------------
# ResNet: BatchNorm folding and the backward walk
# --------------------------------------------------------------------------------------------

def _named_blocks(net: ResNet):
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for index, block in enumerate(getattr(net, stage)):
            yield f"{stage}.{index}", block


def _block_convs(block: nn.Module) -> list[nn.Conv2d]:
    convs = [block.conv1, block.conv2]
    return convs + [block.conv3] if isinstance(block, Bottleneck) else convs


def _require_resnet(model) -> None:
    if not isinstance(model, ResNet):
        raise InputError(f"LRP explains augengine.models ResNets (resnet18/resnet50), got "
                         f"{type(model).__name__}")


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # In float64 so that the folded network matches the original to rounding of the final cast.
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(dtype))
    conv.bias = nn.Parameter(((bias - mean) * scale + shift).to(dtype))


def fold_batchnorm(model: ResNet) -> ResNet:
    """An eval-mode copy of a ResNet with every BatchNorm folded into the convolution before it.

    With BN in eval mode, ``bn(conv(x)) = w' * x + b'`` where, per output channel,
    ``w' = w gamma / sqrt(var + eps)`` and ``b' = (b - mean) gamma / sqrt(var + eps) + beta``
    (running statistics). The BatchNorm modules become ``nn.Identity``; outputs are unchanged up
    to floating-point rounding. LRP rules then see one affine layer per convolution.

    Parameters
    ----------
    model : ResNet
        :func:`augengine.models.resnet18` or ``resnet50``, any mode; left untouched.

    Returns
    -------
    ResNet
        A new model in eval mode, same device and dtype; its ``state_dict`` has conv biases and no
        BN entries.

    Example
    -------
    >>> import torch
    >>> from augengine.models import resnet18
    >>> model = resnet18().eval()
    >>> x = torch.rand(1, 3, 32, 32)
    >>> torch.allclose(fold_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)
    True
    """
    _require_resnet(model)
    folded = copy.deepcopy(model).eval()
    pairs = [(folded, "conv1", "bn1")]
    for _, block in _named_blocks(folded):
        pairs += [(block, f"conv{k}", f"bn{k}") for k in range(1, len(_block_convs(block)) + 1)]
        if block.downsample is not None:
            pairs.append((block.downsample, "0", "1"))
    with torch.no_grad():
        for parent, conv_name, bn_name in pairs:
            bn = getattr(parent, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                _fold_into(getattr(parent, conv_name), bn)
                setattr(parent, bn_name, nn.Identity())
    return folded


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _targets(target, batch: int, num_classes: int, device) -> torch.Tensor:
    target = torch.as_tensor(target, device=device)
    target = target.expand(batch) if target.ndim == 0 else target.reshape(-1)
    if target.numel() != batch or target.is_floating_point():
        raise InputError(f"target must be an int or {batch} integer class indices, got "
                         f"{target.numel()} values of dtype {target.dtype}")
    target = target.long()
    outside = target[(target < 0) | (target >= num_classes)]
    if outside.numel():
        raise InputError(f"target {int(outside[0])} out of range for {num_classes} classes")
    return target


def _check_input(x, net: ResNet) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InputError(f"LRP expects a batch of images (N, C, H, W), got {shape}")
    weight = net.conv1.weight
    if x.shape[1] != weight.shape[1]:
        raise InputError(f"LRP input has {x.shape[1]} channels, the model expects "
                         f"{weight.shape[1]}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise InputError(f"LRP input is {x.dtype} on {x.device}, the model {weight.dtype} on "
                         f"{weight.device}")


def _block_relevance(block: nn.Module, inputs: list[torch.Tensor], branch: torch.Tensor,
                     shortcut: torch.Tensor, relevance: torch.Tensor, layer_rule) -> torch.Tensor:
    """Relevance of a residual block's input from that of its output."""
    r_branch, r_shortcut = residual_split(branch, shortcut, relevance)
    for conv, activation in zip(reversed(_block_convs(block)), reversed(inputs)):
        r_branch = layer_rule(conv, activation, r_branch)
    if block.downsample is not None:
        r_shortcut = layer_rule(block.downsample[0], inputs[0], r_shortcut)
    return r_branch + r_shortcut


@full_float32()
def lrp_layers(model: ResNet, x: torch.Tensor, target, rule: str = "alpha_beta",
               alpha: float = 2.0, beta: float = 1.0, *, first_rule: str | None = None,
               epsilon: float = 1e-6, input_bounds=None) -> "OrderedDict[str, torch.Tensor]":
    """LRP relevance at every stage of a ResNet, from the explained logit down to the input.

    Same parameters as :func:`lrp`. Use it to check conservation layer by layer.

    Returns
    -------
    OrderedDict name -> Tensor
        Relevance of the *output* of each module, in backward order: ``"fc"`` (N, classes; the
        target logit, zeros elsewhere), ``"avgpool"`` (N, C, 1, 1), every block ``"layer4.2"`` ..
        ``"layer1.0"`` (its output after the final ReLU), ``"maxpool"``, ``"relu"`` (the stem) and
        ``"input"`` (shape of ``x``). Names are those of :func:`augengine.models.feature_extractor`.
    """
    _require_resnet(model)
    if rule not in _LAYER_RULES:
        raise ConfigError(f"rule must be one of {_LAYER_RULES}, got {rule!r}")
    first_rule = first_rule or ("flat" if rule == "alpha_beta" else "epsilon")
    if first_rule not in _FIRST_RULES:
        raise ConfigError(f"first_rule must be one of {_FIRST_RULES}, got {first_rule!r}")
    _check_alpha_beta(alpha, beta)
    if epsilon < 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon}")
    if _has_batchnorm(model):
        net = fold_batchnorm(model)
    elif model.training:
        # A folded model is used as it is; in training mode its dropout (if any) would be live.
        raise InputError("LRP got a BatchNorm-free (folded) ResNet in training mode; call .eval()")
    else:
        net = model
    _check_input(x, net)
    target = _targets(target, x.shape[0], net.fc.out_features, x.device)

    rules = {"alpha_beta": partial(alpha_beta_rule, alpha=alpha, beta=beta),
             "epsilon": partial(epsilon_rule, epsilon=epsilon),
             "flat": flat_rule}
    if first_rule == "zb":
        if input_bounds is None:
            dims = tuple(range(1, x.ndim))
            input_bounds = (x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True))
        rules["zb"] = partial(zb_rule, low=input_bounds[0], high=input_bounds[1])
    layer_rule = rules[rule]

    with torch.no_grad():
        x = x.detach()
        stem = net.relu(net.conv1(x))
        a = net.maxpool(stem)
        records = []
        for name, block in _named_blocks(net):
            inputs, convs = [a], _block_convs(block)
            for conv in convs[:-1]:
                inputs.append(block.relu(conv(inputs[-1])))
            branch = convs[-1](inputs[-1])
            shortcut = a if block.downsample is None else block.downsample(a)
            records.append((name, block, inputs, branch, shortcut))
            a = block.relu(branch + shortcut)
        pooled = net.avgpool(a)
        logits = net.fc(pooled.flatten(1))

        rows = torch.arange(x.shape[0], device=x.device)
        relevance = torch.zeros_like(logits)
        relevance[rows, target] = logits[rows, target]
        result = OrderedDict(fc=relevance)
        relevance = epsilon_rule(net.fc, pooled.flatten(1), relevance, epsilon)
        result["avgpool"] = relevance = relevance.view_as(pooled)
        relevance = global_avg_pool_rule(a, relevance)
        for name, block, inputs, branch, shortcut in reversed(records):
            result[name] = relevance
            relevance = _block_relevance(block, inputs, branch, shortcut, relevance, layer_rule)
        result["maxpool"] = relevance
        result["relu"] = relevance = max_pool_rule(net.maxpool, stem, relevance)
        result["input"] = rules[first_rule](net.conv1, x, relevance)
    return result


def lrp(model: ResNet, x: torch.Tensor, target, rule: str = "alpha_beta", alpha: float = 2.0,
        beta: float = 1.0, *, first_rule: str | None = None, epsilon: float = 1e-6,
        input_bounds=None) -> torch.Tensor:
    """Input relevance of a ResNet's logit ``target`` by layer-wise relevance propagation.

    Starts from ``R = f_target(x)`` at the logit and propagates it with the rules listed in the
    module docstring (seed 002, Eq. 10-16): alpha-beta at every convolution, epsilon at ``fc``,
    flat (or z^B) at the pixels, z-rule at residual adds, winner-take-all at max pooling. Positive
    ``R`` marks pixels that speak for the class (raise its logit), negative ones against it,
    whatever the sign of the logit (module docstring, "Sign": a unit start would flip the map for
    negative logits).

    Parameters
    ----------
    model : ResNet
        :func:`augengine.models.resnet18`/``resnet50``, explained as in eval mode (BatchNorm with
        its running statistics). BatchNorm is folded on every call; pass
        ``fold_batchnorm(model)`` once to skip that copy when explaining many batches.
    x : Tensor (N, C, H, W), floating point
        Network input (e.g. :func:`augengine.models.imagenet_normalize` of grey images), on the
        model's device and in its dtype.
    target : int or sequence/Tensor of N ints
        Class explained, one for all samples or one per sample.
    rule : {"alpha_beta", "epsilon"}
        Rule of the convolutions; ``"epsilon"`` applies the epsilon rule to every layer (with
        ``first_rule`` defaulting to it too).
    alpha, beta : float
        Alpha-beta weights (Eq. 16); ``alpha - beta = 1`` is enforced.
    first_rule : {"flat", "zb", "alpha_beta", "epsilon"} or None
        Rule of the first convolution. None: ``"flat"`` with ``rule="alpha_beta"`` (zennit's
        EpsilonAlpha2Beta1Flat), ``"epsilon"`` with ``rule="epsilon"``.
    epsilon : float
        Stabiliser of the epsilon rule (``fc``, and every layer with ``rule="epsilon"``).
    input_bounds : (low, high) or None
        Input domain for ``first_rule="zb"``: floats or tensors broadcastable to ``x`` (for
        ImageNet-normalised [0, 1] images: ``imagenet_normalize`` of zeros and of ones,
        (1, 3, 1, 1)).
        None takes each sample's own minimum and maximum.

    Returns
    -------
    Tensor, shape, dtype and device of ``x``
        Relevance per input element; sum over channels for a per-pixel map. Sums to
        ``f_target(x) - b_fc[target]`` (alpha-beta conserves exactly where each unit has inputs
        of both signs; the epsilon rule gives the bias share away), negative when the evidence
        against the class outweighs that for it.

    Raises
    ------
    InputError
        ``x`` not (N, C, H, W) on the model's device/dtype, ``target`` out of range, a model that
        is not a project ResNet.
    ConfigError
        Unknown rule, ``alpha - beta != 1``, negative ``epsilon``.

    Example
    -------
    >>> import torch
    >>> from augengine.models import resnet18
    >>> model = resnet18(num_classes=2).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> relevance = lrp(model, x, target=1)
    >>> relevance.shape
    torch.Size([2, 3, 32, 32])
    """
    return lrp_layers(model, x, target, rule, alpha, beta, first_rule=first_rule, epsilon=epsilon,
                      input_bounds=input_bounds)["input"]
