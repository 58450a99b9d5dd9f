"""Single-image super-resolution networks of seed 004: EDSR (Lim et al. 2017) and RDN (Zhang et
al. 2018), for grey images, upscaling x2, x3 or x4 by sub-pixel convolution.

Seed 004 (section 2.5) enhances ROI crops with both before segmentation and reports EDSR ahead
(PSNR 39.05 dB / SSIM 0.90 against 32.68 dB / 0.82 for RDN, Table 4). The defaults here are the
seed's settings: EDSR with 32 residual blocks of 256 filters, residual scaling 0.1 (trained with
an L1 loss, :mod:`augengine.train.tasks`); RDN with 16 residual dense blocks of 8 layers and
64-filter local and global feature fusion. ``edsr_small`` and ``rdn_small`` are CPU-sized.

Inputs and outputs are grey intensities scaled to [0, 1]; outputs are not clipped (clip for
display and metrics). Neither network normalises its input: the papers' RGB mean shift has no
grey counterpart worth learning around.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from augengine._xp import is_cupy
from augengine.checks import check_choice, check_positive_ints
from augengine.checksums import file_sha256
from augengine.errors import ConfigError, InputError

__all__ = ["EDSR", "NETWORKS", "RDN", "SCALES", "ResBlock", "ResidualDenseBlock", "edsr",
           "edsr_small", "load_superres", "rdn", "rdn_small", "super_resolve",
           "upsampler"]

#: Upscaling factors the sub-pixel upsamplers support.
SCALES = (2, 3, 4)


def _conv3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def upsampler(channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampling (Shi et al. 2016): 3x3 conv to ``r^2 C`` channels, PixelShuffle(r).

    x4 is two x2 stages, as in EDSR and RDN (one r = 4 stage would need 16 C channels).

    Parameters
    ----------
    channels : int
        ``C``, kept.
    scale : {2, 3, 4}

    Returns
    -------
    nn.Sequential
        ``(N, C, h, w)`` -> ``(N, C, scale h, scale w)``; ``9 r^2 C^2 + r^2 C`` parameters per
        stage.

    Example
    -------
    >>> upsampler(4, 3)(torch.zeros(1, 4, 5, 6)).shape
    torch.Size([1, 4, 15, 18])
    """
    factors = (2, 2) if int(check_choice(scale, "scale", SCALES)) == 4 else (scale,)
    layers: list[nn.Module] = []
    for r in factors:
        layers += [_conv3(channels, r * r * channels), nn.PixelShuffle(r)]
    return nn.Sequential(*layers)


def _check_input(x, channels: int, model: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels \
            or not x.is_floating_point():
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InputError(f"{model} expects floating-point images (N, {channels}, h, w), "
                         f"got {shape} {getattr(x, 'dtype', '')}".rstrip())


class ResBlock(nn.Module):
    """EDSR's residual block: ``x + s * conv(relu(conv(x)))``, no BatchNorm.

    Lim et al. drop BatchNorm (it removes the range flexibility SR needs) and scale the residual
    by ``s = 0.1`` in the wide model, which otherwise trains unstably (their section 3.1).
    """

    def __init__(self, filters: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(_conv3(filters, filters), nn.ReLU(), _conv3(filters, filters))
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class EDSR(nn.Module):
    """Enhanced deep residual network; built by :func:`edsr` (see there)."""

    def __init__(self, scale: int = 3, blocks: int = 32, filters: int = 256,
                 res_scale: float = 0.1, channels: int = 1):
        super().__init__()
        check_positive_ints(blocks=blocks, filters=filters, channels=channels)
        if not 0 < res_scale <= 1:
            raise ConfigError(f"res_scale must be in (0, 1], got {res_scale!r}")
        self.scale = int(check_choice(scale, "scale", SCALES))
        self.head = _conv3(channels, filters)
        self.body = nn.Sequential(*(ResBlock(filters, res_scale) for _ in range(blocks)),
                                  _conv3(filters, filters))
        self.tail = nn.Sequential(upsampler(filters, self.scale), _conv3(filters, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.head.in_channels, "EDSR")
        features = self.head(x)
        return self.tail(features + self.body(features))


def edsr(scale: int = 3, blocks: int = 32, filters: int = 256, res_scale: float = 0.1,
         channels: int = 1) -> EDSR:
    """EDSR (Lim et al. 2017) with seed 004's settings: 32 blocks, 256 filters, scaling 0.1.

    head 3x3 conv -> ``blocks`` x :class:`ResBlock` -> 3x3 conv, plus the head's output (global
    skip) -> :func:`upsampler` -> 3x3 conv to ``channels``. Trained with the L1 loss (Lim et al.;
    seed 004).

    Parameters
    ----------
    scale : {2, 3, 4}
        Upscaling factor (seed 004 trains EDSR at x3).
    blocks, filters : int
        Residual blocks and their width.
    res_scale : float
        Residual scaling ``s`` in (0, 1].
    channels : int
        1 for grey images.

    Returns
    -------
    EDSR
        Randomly initialised (PyTorch defaults). One-channel parameter counts with the defaults:
        x2 40,720,385; x3 43,670,785; x4 43,080,705. ``9 F^2 + F`` per 3x3 conv of width F: the
        head 2,560, each block 1,180,160, the body's last conv 590,080, the x2/x3/x4 upsampler
        2,360,320 / 5,310,720 / 4,720,640, the last conv 2,305. The paper's "43M" is its RGB
        x4 model (43,089,923 here with ``channels=3``).

    Shape
    -----
    ``(N, channels, h, w)`` float in [0, 1] -> ``(N, channels, scale h, scale w)``.

    References
    ----------
    B. Lim, S. Son, H. Kim, S. Nah, K. M. Lee, "Enhanced deep residual networks for single image
    super-resolution", CVPR Workshops 2017. Seed 004, section 2.5 (EDSR hyper-parameters).

    Example
    -------
    >>> model = edsr(scale=2, blocks=2, filters=8)
    >>> model(torch.rand(1, 1, 12, 10)).shape
    torch.Size([1, 1, 24, 20])
    """
    return EDSR(scale, blocks, filters, res_scale, channels)


def edsr_small(scale: int = 3, channels: int = 1) -> EDSR:
    """A CPU-sized EDSR: 8 blocks of 32 filters, residual scaling 1 (Lim et al.'s baseline model
    needs no scaling at this width). 194,817 parameters at x2 with one channel.

    Example
    -------
    >>> sum(p.numel() for p in edsr_small(2).parameters())
    194817
    """
    return EDSR(scale, blocks=8, filters=32, res_scale=1.0, channels=channels)


class ResidualDenseBlock(nn.Module):
    """RDN's block: ``layers`` 3x3 conv + ReLU, each fed all earlier outputs (dense), a 1x1
    local feature fusion back to ``fusion`` channels and a local residual.

    Layer ``c`` sees ``G0 + c G`` channels and adds ``G``; the fusion maps ``G0 + C G`` to ``G0``.
    """

    def __init__(self, fusion: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(_conv3(fusion + c * growth, growth), nn.ReLU()) for c in range(layers))
        self.fuse = nn.Conv2d(fusion + layers * growth, fusion, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.fuse(torch.cat(features, dim=1))


class RDN(nn.Module):
    """Residual dense network; built by :func:`rdn` (see there)."""

    def __init__(self, scale: int = 4, blocks: int = 16, layers: int = 8, fusion: int = 64,
                 growth: int = 64, channels: int = 1):
        super().__init__()
        check_positive_ints(blocks=blocks, layers=layers, fusion=fusion, growth=growth,
                            channels=channels)
        self.scale = int(check_choice(scale, "scale", SCALES))
        self.shallow = nn.ModuleList([_conv3(channels, fusion), _conv3(fusion, fusion)])
        self.blocks = nn.ModuleList(ResidualDenseBlock(fusion, growth, layers)
                                    for _ in range(blocks))
        self.fuse = nn.Sequential(nn.Conv2d(blocks * fusion, fusion, kernel_size=1),
                                  _conv3(fusion, fusion))
        self.tail = nn.Sequential(_conv3(fusion, growth), upsampler(growth, self.scale),
                                  _conv3(growth, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.shallow[0].in_channels, "RDN")
        first = self.shallow[0](x)
        features = self.shallow[1](first)
        outputs = []
        for block in self.blocks:
            features = block(features)
            outputs.append(features)
        return self.tail(first + self.fuse(torch.cat(outputs, dim=1)))


def rdn(scale: int = 4, blocks: int = 16, layers: int = 8, fusion: int = 64, growth: int = 64,
        channels: int = 1) -> RDN:
    """RDN (Zhang et al. 2018) with seed 004's settings: 16 blocks x 8 layers, 64-filter fusion.

    Two shallow 3x3 convs ``F_-1, F_0`` -> ``blocks`` x :class:`ResidualDenseBlock` -> global
    feature fusion (1x1 conv over all block outputs concatenated, then 3x3) plus ``F_-1``
    (global residual) -> 3x3 conv to ``growth`` -> :func:`upsampler` -> 3x3 conv to ``channels``
    (the authors' code's up-net). Growth rate ``G = 64`` is the paper's configuration.

    Parameters
    ----------
    scale : {2, 3, 4}
        Upscaling factor (seed 004 trains RDN at x4).
    blocks, layers : int
        ``D`` residual dense blocks of ``C`` layers.
    fusion, growth : int
        ``G0`` (local and global fusion width) and ``G`` (growth rate).
    channels : int
        1 for grey images.

    Returns
    -------
    RDN
        Randomly initialised. One-channel parameter counts with the defaults: x2 22,158,017; x3
        22,342,657; x4 22,305,729 (the paper's "22M"; 22,308,035 for RGB x4).

    Shape
    -----
    ``(N, channels, h, w)`` float in [0, 1] -> ``(N, channels, scale h, scale w)``.

    References
    ----------
    Y. Zhang, Y. Tian, Y. Kong, B. Zhong, Y. Fu, "Residual dense network for image
    super-resolution", CVPR 2018. Seed 004, section 2.5 (RDN hyper-parameters).

    Example
    -------
    >>> model = rdn(scale=3, blocks=2, layers=2, fusion=8, growth=4)
    >>> model(torch.rand(1, 1, 6, 7)).shape
    torch.Size([1, 1, 18, 21])
    """
    return RDN(scale, blocks, layers, fusion, growth, channels)


def rdn_small(scale: int = 4, channels: int = 1) -> RDN:
    """A CPU-sized RDN: 4 blocks x 4 layers, fusion 32, growth 16. 178,689 parameters at x2
    with one channel.

    Example
    -------
    >>> sum(p.numel() for p in rdn_small(2).parameters())
    178689
    """
    return RDN(scale, blocks=4, layers=4, fusion=32, growth=16, channels=channels)


#: The networks by name (``augengine train superres --model``); each takes ``scale``, ``channels``.
NETWORKS = {"edsr": edsr, "rdn": rdn, "edsr_small": edsr_small, "rdn_small": rdn_small}

#: Networks loaded by :func:`super_resolve`, keyed ``(path, sha256, device)``: a job applies one
#: checkpoint to many frames, and reading it each time would dominate.
_LOADED: OrderedDict[tuple, nn.Module] = OrderedDict()
_LOADED_MAX = 2


def load_superres(path, sha256: str | None = None) -> nn.Module:
    """The best-validation weights of an ``augengine train superres`` checkpoint, in eval mode.

    Read with :func:`~augengine.models.weights.read_checkpoint` (``weights_only``: no pickled
    code runs); the network is rebuilt from the checkpoint's ``config`` (``model``, ``scale``).

    Parameters
    ----------
    path : str or Path
        A run's ``checkpoint.pt`` (keys ``task == "superres"``, ``model``, ``config``).
    sha256 : str, optional
        The file's expected sha256; a different file is refused.

    Raises
    ------
    InputError
        Missing, unreadable or foreign file, or one whose sha256 differs (both are named).
    """
    from augengine.models.weights import read_checkpoint

    path = Path(path)
    if sha256 is not None and path.is_file() and (actual := file_sha256(path)) != sha256:
        raise InputError(f"{path}: sha256 {actual} differs from the job's {sha256}")
    checkpoint = read_checkpoint(path, "super-resolution checkpoint not found")
    config = checkpoint.get("config", {}) if isinstance(checkpoint, dict) else {}
    if checkpoint.get("task") != "superres" or config.get("model") not in NETWORKS \
            or "model" not in checkpoint:
        raise InputError(f"{path}: not an augengine train superres checkpoint (needs task "
                         f"'superres', model weights and config.model in {', '.join(NETWORKS)})")
    network = NETWORKS[config["model"]](scale=config["scale"], channels=1)
    network.load_state_dict(checkpoint["model"])
    return network.eval().requires_grad_(False)


def _network(path, sha256: str | None, device: str) -> nn.Module:
    key = (str(Path(path).resolve()), sha256, device)
    if key not in _LOADED:
        _LOADED[key] = load_superres(path, sha256).to(device)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return _LOADED[key]


def super_resolve(images, checkpoint, sha256: str | None = None, batch_size: int = 16):
    """Upscale grey 8-bit images with a trained EDSR/RDN, in batches, on their device.

    ``y = round(255 clip(f(x / 255), 0, 1))`` for the network ``f`` of ``checkpoint``
    (:func:`load_superres`, cached per process and device).

    Parameters
    ----------
    images : ndarray or cupy.ndarray, (H, W) or (N, H, W) uint8
        NumPy runs on the CPU, CuPy on its GPU (the actor's device).
    checkpoint : str or Path
    sha256 : str, optional
        Expected sha256 of the checkpoint file.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    array of the input's module, (s H, s W) or (N, s H, s W) uint8
        ``s``: the checkpoint's scale.
    """
    single = images.ndim == 2
    if images.ndim not in (2, 3) or images.dtype != np.uint8:
        raise InputError(f"super_resolve expects uint8 (H, W) or (N, H, W) images, got "
                         f"{images.dtype} {tuple(images.shape)}")
    check_positive_ints(batch_size=batch_size)
    on_gpu = is_cupy(images)
    device = "cuda" if on_gpu else "cpu"
    network = _network(checkpoint, sha256, device)
    stack = torch.as_tensor(images[None] if single else images, device=device)
    outputs = []
    with torch.no_grad():
        for start in range(0, stack.shape[0], batch_size):
            x = stack[start:start + batch_size, None].float() / 255
            y = network(x)[:, 0].clamp(0, 1) * 255
            outputs.append(torch.round(y).to(torch.uint8))
    result = torch.cat(outputs)[0] if single else torch.cat(outputs)
    if on_gpu:
        import cupy

        return cupy.asarray(result)
    return result.numpy()
