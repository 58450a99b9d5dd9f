"""Load the trained feed-forward style-transfer network for generation.

A decoder checkpoint of :func:`augengine.nst.training.train_feedforward` holds the decoder and
the settings it was trained with; :func:`load_style_net` rebuilds the same encoder (its weights
file checked by sha256, or the same seeded random one) and loads the decoder into it. Training
builds its starting network with the same :func:`build_style_net`, so the two cannot drift apart.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from augengine.checksums import file_sha256
from augengine.errors import ConfigError, InputError
from augengine.models import ARCHITECTURES, load_weights
from augengine.models.weights import read_checkpoint, state_sha256
from augengine.nst.feedforward import StyleNet

__all__ = [
    "build_style_net",
    "load_checkpoint",
    "load_style_net",
    "recorded_metadata",
    "seeded",
    "weights_sha256",
]


def weights_sha256(path) -> str | None:
    """sha256 of a weights file, None for None; a missing file is an ``InputError`` naming it."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    return file_sha256(path)


def seeded(seed: int, build):
    """``build()`` with the global CPU RNG seeded (random initialisation is reproducible, and the
    same on every rank), leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def recorded_metadata(weights) -> dict:
    """The metadata :func:`augengine.models.fit_classifier` saves beside the state dict (``arch``,
    ``num_classes``), or ``{}`` for other or unreadable files (``load_weights`` reports those)."""
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_weights names the problem when it reads the file
        return {}
    return saved if isinstance(saved, dict) else {}


def _build_encoder(config: dict, encoder_weights):
    if encoder_weights is not None:
        recorded = recorded_metadata(encoder_weights).get("arch", config["arch"])
        if recorded != config["arch"]:
            raise ConfigError(f"{encoder_weights}: holds a {recorded} (recorded in the file), "
                              f"arch is {config['arch']!r}; train with arch={recorded!r}")
    model = seeded(config["seed"], lambda: ARCHITECTURES[config["arch"]]())
    if encoder_weights is None:
        warnings.warn(
            "no encoder_weights given: the style encoder is randomly initialised (no weights are "
            "downloaded); pass a local ImageNet checkpoint for the paper's features",
            stacklevel=3,
        )
    else:
        load_weights(model, encoder_weights, skip_head=True)
    return model


def build_style_net(config: dict, encoder_weights) -> StyleNet:
    """The :class:`StyleNet` of a training ``config`` (``arch``, ``layer``, ``seed``) with a
    seeded, untrained decoder: what training starts from and a checkpoint's decoder fills."""
    encoder = _build_encoder(config, encoder_weights)
    return seeded(config["seed"] + 1, lambda: StyleNet(encoder, layer=config["layer"]))


def load_checkpoint(path) -> dict:
    """Read a training checkpoint and check its decoder against the recorded sha256.

    Raises
    ------
    InputError
        Missing, unreadable or corrupted file (one line naming it).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    keys = ("decoder", "optimizer", "epoch", "config", "epoch_losses", "sha256")
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in keys):
        raise InputError(f"{path}: not an NST training checkpoint (needs keys {', '.join(keys)})")
    if state_sha256(checkpoint["decoder"]) != checkpoint["sha256"]:
        raise InputError(f"{path}: decoder weights do not match their recorded sha256 (corrupted)")
    return checkpoint


def load_style_net(checkpoint_path, encoder_weights=None, device="cpu") -> StyleNet:
    """The trained :class:`StyleNet` of a checkpoint, for :func:`augengine.nst.generate.generate`.

    Parameters
    ----------
    checkpoint_path : str or Path
        ``out_dir/checkpoint.pt`` of :func:`augengine.nst.training.train_feedforward`.
    encoder_weights : str or Path, optional
        The same local encoder checkpoint the decoder was trained with (checked by sha256);
        None when it was trained on the seeded random encoder.
    device : str or torch.device, optional

    Raises
    ------
    ConfigError
        ``encoder_weights`` is not the file the decoder was trained with.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint["config"]
    if weights_sha256(encoder_weights) != config["encoder_sha256"]:
        raise ConfigError(
            f"{checkpoint_path}: the decoder was trained with encoder weights of sha256 "
            f"{str(config['encoder_sha256'])[:12]}, not {encoder_weights}"
        )
    net = build_style_net(config, encoder_weights)
    net.decoder.load_state_dict(checkpoint["decoder"])
    return net.to(device).eval()
