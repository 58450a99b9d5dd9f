"""Weights in and out: load local checkpoints into the project's ResNets, read checkpoints
without running pickled code, and fingerprint weights.

Nothing here downloads anything: weights come from local files only. Training writes its
checkpoints through :mod:`augengine.train.checkpoint`; the ``augengine train classifier`` job
trains the benign/malignant classifier that NST explains.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from augengine.checksums import file_sha256
from augengine.errors import InputError
from augengine.models.resnet import resnet18, resnet50

__all__ = ["ARCHITECTURES", "load_classifier", "load_weights", "read_checkpoint",
           "recorded_metadata", "seeded", "state_sha256", "weights_sha256"]

_Built = TypeVar("_Built")

#: The ResNets by name (the classifier, the NST encoder and loss network).
ARCHITECTURES = {"resnet18": resnet18, "resnet50": resnet50}

_WRAPPER_KEYS = ("state_dict", "model")
_DDP_PREFIX = "module."
_HEAD_PREFIX = "fc."
_SHOWN = 3  # offending keys named in an error message


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _state_dict_from(checkpoint, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a raw state_dict or of a checkpoint dict holding one under "state_dict" or
    "model", with the "module." prefix of DDP/Horovod-wrapped models removed."""
    if not isinstance(checkpoint, Mapping):
        raise InputError(f"{path}: expected a state_dict or a checkpoint dict, "
                         f"found {type(checkpoint).__name__}")
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = {name: value for name, value in checkpoint.items() if isinstance(value, torch.Tensor)}
    if not state:
        raise InputError(f"{path}: no tensors found (top-level keys: {_listed(list(checkpoint))})")
    return {name.removeprefix(_DDP_PREFIX): value for name, value in state.items()}


def load_weights(model: nn.Module, path, strict: bool = True, skip_head: bool = False) -> nn.Module:
    """Load a local checkpoint into ``model`` (in place) and return ``model``.

    Accepts what torchvision, plain ``torch.save(model.state_dict())``, training scripts and
    :mod:`augengine.train` write: a raw ``state_dict``, or a dict holding it under
    ``"state_dict"`` or ``"model"``; a ``"module."`` key prefix (DDP, Horovod) is removed. The file
    is read with ``torch.load(weights_only=True)``, so it runs no pickled code.

    Parameters
    ----------
    model : nn.Module
        E.g. :func:`augengine.models.resnet50`; keeps its device and dtype.
    path : str or Path
        Local ``.pth``/``.pt`` file.
    strict : bool
        When True every key of the model must be in the file and vice versa. Shapes must always
        match.
    skip_head : bool
        Load everything except ``fc`` (which keeps its initialisation): transfer learning from an
        ImageNet checkpoint (1000 classes) to benign/malignant (2).

    Returns
    -------
    nn.Module
        ``model``, with the weights loaded.

    Raises
    ------
    InputError
        One line naming ``path``: missing or unreadable file, or the first few missing,
        unexpected and mis-shaped keys.

    Example
    -------
    >>> from augengine.models import resnet50
    >>> model = resnet50(num_classes=2)
    >>> load_weights(model, "resnet50-imagenet.pth", skip_head=True)  # doctest: +SKIP
    """
    path = Path(path)
    state = _state_dict_from(read_checkpoint(path, "weights file not found"), path)

    expected = model.state_dict()
    if skip_head:
        expected = {k: v for k, v in expected.items() if not k.startswith(_HEAD_PREFIX)}
        state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIX)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]

    problems = []
    if misshaped:
        problems.append("shape mismatch " + _listed(
            [f"{k} {tuple(state[k].shape)} in file vs {tuple(expected[k].shape)} in model"
             for k in misshaped]))
    if strict and missing:
        problems.append(f"missing keys {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_listed(unexpected)}")
    if problems:
        hint = (" (use skip_head=True to load all but fc)"
                if any(k.startswith(_HEAD_PREFIX) for k in misshaped) else "")
        raise InputError(f"{path}: weights do not fit the model: " + "; ".join(problems) + hint)

    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a ``state_dict``'s names, dtypes, shapes and bytes, in sorted-name order.

    Equal for equal weights on any device, so ranks and checkpoints can be compared by it.
    Scalars (BatchNorm's ``num_batches_tracked``) are hashed too.

    Examples
    --------
    >>> import torch
    >>> state = {"w": torch.zeros(2), "n": torch.tensor(3)}
    >>> state_sha256(state) == state_sha256({"n": torch.tensor(3), "w": torch.zeros(2)})
    True
    >>> state_sha256(state) == state_sha256({"w": torch.ones(2), "n": torch.tensor(3)})
    False
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_classifier(path) -> nn.Module:
    """A benign/malignant ResNet from a local checkpoint, in eval mode, for LRP.

    The architecture is read from the weights (Bottleneck blocks have a ``conv3``: ResNet-50;
    otherwise ResNet-18) and the class count from ``fc``; any checkpoint :func:`load_weights`
    reads works (``augengine train classifier``'s ``checkpoint.pt``, a torchvision state dict).
    """
    path = Path(path)
    state = _state_dict_from(read_checkpoint(path, "classifier checkpoint not found"), path)
    if "fc.weight" not in state:
        raise InputError(f"{path}: not a ResNet classifier (no fc.weight)")
    build = resnet50 if "layer1.0.conv3.weight" in state else resnet18
    return load_weights(build(num_classes=state["fc.weight"].shape[0]), path).eval()


def read_checkpoint(path, missing: str = "checkpoint not found", *, keys: Sequence[str] = (),
                    weights: str | None = None, kind: str = "an augengine"):
    """``torch.load`` a local file with ``weights_only=True`` (no pickled code runs), turning a
    missing or unreadable file into a one-line ``InputError`` that names it.

    Parameters
    ----------
    path : str or Path
    missing : str
        The message for a missing file (after ``"<path>: "``).
    keys : sequence of str, optional
        Keys a checkpoint dict must hold (the format of the job that wrote it).
    weights : str, optional
        The key of the state dict whose :func:`state_sha256` the file records under ``"sha256"``
        (:func:`augengine.train.checkpoint.save_checkpoint`); checked when given.
    kind : str
        Names the checkpoint in the foreign-file message, e.g. ``"an NST training"``.

    Raises
    ------
    InputError
        Missing, unreadable, foreign (a key of ``keys`` absent) or corrupted file, e.g.
        ``"run/checkpoint.pt: not an NST training checkpoint (needs keys decoder, ...)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__})"
                         ) from None
    required = (*keys, *((weights, "sha256") if weights is not None else ()))
    if required and (not isinstance(checkpoint, Mapping)
                     or any(key not in checkpoint for key in required)):
        raise InputError(f"{path}: not {kind} checkpoint (needs keys "
                         f"{', '.join(dict.fromkeys(required))})")
    if weights is not None and state_sha256(checkpoint[weights]) != checkpoint["sha256"]:
        what = "weights" if weights in ("model", "last_model") else f"{weights} weights"
        raise InputError(f"{path}: {what} do not match their recorded sha256 (corrupted)")
    return checkpoint


def recorded_metadata(path) -> dict:
    """The metadata a weights file keeps beside its state dict (e.g. ``arch``, ``num_classes``),
    or ``{}`` for other or unreadable files (:func:`load_weights` reports those).

    A training checkpoint (:mod:`augengine.train.checkpoint`) records its network's ``arch`` in
    its ``config``; it is returned as ``arch``.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_weights names the problem when it reads the file
        return {}
    if not isinstance(saved, dict):
        return {}
    settings = saved.get("config")
    if "arch" not in saved and isinstance(settings, Mapping) and settings.get("arch"):
        return {**saved, "arch": settings["arch"]}
    return saved


def weights_sha256(path) -> str | None:
    """sha256 of a local weights file (recorded so that a run can check it is given the same
    file again), or None when there is none.

    Raises
    ------
    InputError
        ``path`` given but not a file.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    return file_sha256(path)


def seeded(seed: int, build: Callable[[], _Built]) -> _Built:
    """``build()`` with the global CPU RNG seeded (random initialisation is reproducible, and the
    same on every rank), leaving the caller's RNG state untouched.

    Examples
    --------
    >>> seeded(3, lambda: torch.rand(2)).tolist() == seeded(3, lambda: torch.rand(2)).tolist()
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
