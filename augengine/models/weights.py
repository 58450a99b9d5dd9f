"""Weights in and out: load local checkpoints into the project's ResNets, and train a small
benign/malignant classifier on a store so that NST has a network to explain.

Nothing here downloads anything: weights come from local files only.
"""
from __future__ import annotations

import hashlib

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from augengine.errors import ConfigError, InputError
from augengine.models.features import imagenet_normalize
from augengine.models.resnet import resnet18, resnet50

__all__ = ["ARCHITECTURES", "FitResult", "fit_classifier", "load_classifier", "load_weights",
           "read_checkpoint", "state_sha256"]

#: Architectures :func:`fit_classifier` can train, by name.
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
    :func:`fit_classifier` write: a raw ``state_dict``, or a dict holding it under
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
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    state = _state_dict_from(checkpoint, path)

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


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_classifier` did.

    Attributes
    ----------
    out_path : Path
        The checkpoint written (``{"state_dict", "arch", "num_classes", "image_size",
        "epoch_losses"}``; :func:`load_weights` reads it).
    epoch_losses : tuple of float
        Mean training cross-entropy of each epoch (nats).
    epoch_accuracies : tuple of float
        Training accuracy of each epoch, in [0, 1], measured on the fly (training mode).
    """

    out_path: Path
    epoch_losses: tuple[float, ...]
    epoch_accuracies: tuple[float, ...]


def _open_store(store_path: Path):
    """``images`` (lazy zarr array), all ``labels`` and the sorted valid indices of a store."""
    import pyarrow.parquet as pq
    import zarr

    if not store_path.is_dir():
        raise InputError(f"{store_path}: store not found")
    # Where augengine.store.manifest_file looks (models sit below the store, so not by import):
    # records/ in a schema-3 store, beside the arrays in a schema-2 one.
    manifest_path = next((path for path in (store_path / "records" / "manifest.parquet",
                                            store_path / "manifest.parquet") if path.is_file()),
                         None)
    if manifest_path is None:
        raise InputError(f"{store_path}: no records/manifest.parquet (nor manifest.parquet "
                         "beside the arrays)")
    try:
        group = zarr.open_group(store_path, mode="r")
        images, labels = group["images"], group["labels"][:]
        indices = pq.read_table(manifest_path, columns=["index"]).column("index").to_numpy()
    except (KeyError, ValueError, OSError) as error:
        raise InputError(f"{store_path}: not a readable store ({error})") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"{store_path}: images must be (N, H, W) uint8, got {images.shape} "
                         f"{images.dtype}")
    if labels.shape != images.shape[:1]:
        raise InputError(f"{store_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    indices = np.unique(indices.astype(np.int64))
    if indices.size < 2:
        raise InputError(f"{store_path}: the manifest lists {indices.size} samples, "
                         "need at least 2")
    outside = indices[(indices < 0) | (indices >= images.shape[0])]
    if outside.size:
        raise InputError(f"{store_path}: manifest index {outside[0]} outside the "
                         f"{images.shape[0]} stored images")
    return images, labels.astype(np.int64), indices


def _batch_tensor(images, indices: np.ndarray, image_size: int | None,
                  device: torch.device) -> torch.Tensor:
    """Read ``images[indices]`` (uint8) as ImageNet-normalised ``(B, 3, S, S)`` floats."""
    pixels = images.get_orthogonal_selection((indices, slice(None), slice(None)))
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).float().div_(255.0).unsqueeze(1)
    if image_size is not None and x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)
    return imagenet_normalize(x)


def fit_classifier(store_path, out_path, arch: str = "resnet18", epochs: int = 20, *,
                   batch_size: int = 32, learning_rate: float = 1e-3, momentum: float = 0.9,
                   num_classes: int = 2, image_size: int | None = None, init_weights=None,
                   device: str | torch.device = "cpu", seed: int = 0) -> FitResult:
    """Train a ResNet classifier on a store and save its checkpoint (single process).

    Minimal by design: it exists so that NST/LRP have a benign/malignant network to explain;
    distributed training with augmentation lives in :mod:`augengine.train`. Follows the seed's
    classifier recipe (002: SGD, momentum 0.9, batch 32, cross-entropy, full fine-tuning of every
    layer) without its validation split and learning-rate schedule. Grey images are repeated to
    three channels and ImageNet-normalised (:func:`augengine.models.imagenet_normalize`).

    Parameters
    ----------
    store_path : str or Path
        Zarr v3 group with ``images`` (N, H, W) uint8 and ``labels`` (N,) integer, and
        ``manifest.parquet`` beside them; only indices listed in its ``index`` column are used.
    out_path : str or Path
        Checkpoint file to write (parent folders are created).
    arch : {"resnet18", "resnet50"}
    epochs : int
        Passes over the valid samples, each in a fresh random order.
    batch_size : int
        Images per SGD step. A trailing batch of one image is skipped (BatchNorm cannot train on a
        single 1x1 feature map).
    learning_rate : float
        SGD step size. The seed uses 1e-4 to fine-tune from ImageNet; 1e-3 suits training from
        scratch.
    momentum : float
        SGD momentum (0.9 in the seed).
    num_classes : int
        Labels must lie in ``[0, num_classes)`` (0 benign, 1 malignant).
    image_size : int or None
        Resize (bilinear, antialiased) to ``image_size x image_size``; None keeps the stored size.
    init_weights : str or Path or None
        Local checkpoint to start from, loaded with ``skip_head=True`` (e.g. ImageNet weights).
    device : str or torch.device
        Where to train, e.g. ``"cuda"``.
    seed : int
        Seeds initialisation and sample order (the global torch RNG is left as it was).

    Returns
    -------
    FitResult
        Checkpoint path and per-epoch training loss and accuracy.

    Raises
    ------
    InputError
        Missing or malformed store, empty manifest, a label outside ``[0, num_classes)``.
    ConfigError
        Unknown ``arch`` or non-positive ``epochs``/``batch_size``/``learning_rate``.

    Example
    -------
    >>> result = fit_classifier("out/dataset.zarr", "out/bus.pth", epochs=5)  # doctest: +SKIP
    >>> model = load_weights(resnet18(num_classes=2), result.out_path)  # doctest: +SKIP
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("learning_rate", learning_rate), ("num_classes", num_classes)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    store_path, out_path, device = Path(store_path), Path(out_path), torch.device(device)
    images, labels, indices = _open_store(store_path)
    bad = indices[(labels[indices] < 0) | (labels[indices] >= num_classes)]
    if bad.size:
        raise InputError(f"{store_path}: sample {bad[0]} has label {labels[bad[0]]}, outside "
                         f"[0, {num_classes}) for num_classes={num_classes}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHITECTURES[arch](num_classes=num_classes)
    if init_weights is not None:
        load_weights(model, init_weights, skip_head=True)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    order_rng = torch.Generator().manual_seed(seed)
    targets = torch.from_numpy(labels)

    losses, accuracies = [], []
    for _ in range(epochs):
        total_loss, correct, seen = 0.0, 0, 0
        order = indices[torch.randperm(indices.size, generator=order_rng).numpy()]
        for start in range(0, order.size, batch_size):
            batch = np.sort(order[start:start + batch_size])
            if batch.size < 2:
                continue
            x = _batch_tensor(images, batch, image_size, device)
            y = targets[batch].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * batch.size
            correct += int((logits.argmax(1) == y).sum())
            seen += batch.size
        losses.append(total_loss / seen)
        accuracies.append(correct / seen)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "arch": arch, "num_classes": num_classes,
                "image_size": image_size, "epoch_losses": losses}, out_path)
    return FitResult(out_path, tuple(losses), tuple(accuracies))


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
    reads works (``fit_classifier``, ``augengine train classifier``, a torchvision state dict).
    """
    path = Path(path)
    state = _state_dict_from(read_checkpoint(path, "classifier checkpoint not found"), path)
    if "fc.weight" not in state:
        raise InputError(f"{path}: not a ResNet classifier (no fc.weight)")
    build = resnet50 if "layer1.0.conv3.weight" in state else resnet18
    return load_weights(build(num_classes=state["fc.weight"].shape[0]), path).eval()


def read_checkpoint(path, missing: str = "checkpoint not found"):
    """``torch.load`` a local file with ``weights_only=True`` (no pickled code runs), turning a
    missing or unreadable file into a one-line ``InputError`` that names it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike
        raise InputError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None

