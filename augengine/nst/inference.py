"""Load the trained feed-forward style-transfer network for generation.

A decoder checkpoint of :func:`augengine.train.nst_decoder.train_decoder` holds the decoder and
the settings it was trained with: ``{"decoder", "optimizer", "epoch", "config", "epoch_losses",
"sha256"}``, where ``config`` holds ``arch``, ``layer``, ``seed`` and the encoder file's
``encoder_sha256``, and ``sha256`` is :func:`~augengine.models.weights.state_sha256` of the
decoder (the format of :mod:`augengine.train.checkpoint`). :func:`load_style_net` rebuilds the
same encoder (its weights file checked by sha256, or the same seeded random one) and loads the
decoder into it. Training builds its starting network with the same :func:`build_style_net`, so
the two cannot drift apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from augengine.errors import ConfigError
from augengine.models import ARCHITECTURES, load_weights
from augengine.models.weights import read_checkpoint, recorded_metadata, seeded, weights_sha256
from augengine.nst.feedforward import StyleNet

__all__ = [
    "build_style_net",
    "load_checkpoint",
    "load_style_net",
]


def _build_encoder(config: Mapping, encoder_weights):
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


def build_style_net(config: Mapping, encoder_weights) -> StyleNet:
    """The :class:`StyleNet` of a training ``config`` (``arch``, ``layer``, ``seed``) with a
    seeded, untrained decoder: what training starts from and a checkpoint's decoder fills."""
    encoder = _build_encoder(config, encoder_weights)
    return seeded(config["seed"] + 1, lambda: StyleNet(encoder, layer=config["layer"]))


def load_checkpoint(path) -> dict:
    """Read a training checkpoint and check its decoder against the recorded sha256.

    Raises
    ------
    InputError
        Missing, unreadable, foreign or corrupted file (one line naming it).
    """
    return read_checkpoint(path, keys=("decoder", "optimizer", "epoch", "config",
                                       "epoch_losses"),
                           weights="decoder", kind="an NST training")


def load_style_net(checkpoint_path, encoder_weights=None, device="cpu") -> StyleNet:
    """The trained :class:`StyleNet` of a checkpoint, for :func:`augengine.nst.generate.generate`.

    Parameters
    ----------
    checkpoint_path : str or Path
        ``out_dir/checkpoint.pt`` of :func:`augengine.train.nst_decoder.train_decoder`.
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
