"""One checkpoint format for every training job: how it is written, read and resumed.

A checkpoint is one ``torch.save`` file, ``checkpoint.pt`` in the run directory: a dict of state
dicts, tensors and plain data, with nothing that needs pickled code to rebuild, so it is read back
with ``torch.load(weights_only=True)`` (:func:`augengine.models.weights.read_checkpoint`). Each job
names the keys its checkpoint holds and the one state dict -- its weights -- whose
:func:`~augengine.models.weights.state_sha256` is recorded under ``"sha256"``; a foreign or
corrupted file is refused in one line naming it. Files are written beside their target and renamed
over it (:func:`atomic_save`), so a crash never leaves half a checkpoint. A resumed run must have
the settings the checkpoint records, except those its job declares resumable
(:func:`check_resumable`). Each finished epoch adds one JSON line to ``log.jsonl``
(:func:`append_log`).

The jobs: the store-trained networks (:mod:`augengine.train.loop`: classifier, segmenter, quality,
super-resolution) and the style-transfer decoder (:mod:`augengine.train.nst_decoder`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import torch

from augengine.errors import ConfigError
from augengine.models.weights import state_sha256

__all__ = ["CHECKPOINT", "LOG", "append_log", "atomic_save", "check_resumable", "cpu_state",
           "save_checkpoint"]

#: The checkpoint's file name in a run directory.
CHECKPOINT = "checkpoint.pt"
#: The per-epoch log's file name in a run directory.
LOG = "log.jsonl"


def atomic_save(obj, path) -> None:
    """``torch.save(obj)`` to ``path`` through a ``.partial`` file renamed over it: readers see
    the old file or the new one, never a half-written one.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_save({"epoch": 1}, folder / "checkpoint.pt")
    >>> sorted(p.name for p in folder.iterdir())
    ['checkpoint.pt']
    """
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s ``state_dict`` on the CPU (unchanged by later training steps)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}


def save_checkpoint(path, checkpoint: Mapping, weights: str) -> None:
    """Write ``checkpoint`` atomically, adding ``"sha256"``: the fingerprint of its weights.

    Parameters
    ----------
    path : str or Path
    checkpoint : mapping
        State dicts, tensors and plain data (what ``torch.load(weights_only=True)`` reads).
    weights : str
        The key of the state dict that :func:`~augengine.models.weights.read_checkpoint` checks
        against the recorded sha256 when the file is read back.
    """
    atomic_save({**checkpoint, "sha256": state_sha256(checkpoint[weights])}, path)


def check_resumable(saved: Mapping, current: Mapping, resumable: Collection[str], path,
                    hint: str) -> None:
    """Refuse to resume a checkpoint trained with other settings.

    Parameters
    ----------
    saved, current : mapping
        The settings the checkpoint recorded, and this run's.
    resumable : collection of str
        Settings a resumed run may change (e.g. ``epochs``).
    path : str or Path
        The checkpoint, named in the message.
    hint : str
        What to do instead, ending the message.

    Raises
    ------
    ConfigError
        The first differing setting (in name order), e.g. ``"run/checkpoint.pt: was trained
        with lr=0.0001, this run has lr=0.5; <hint>"``.

    Examples
    --------
    >>> check_resumable({"lr": 0.1, "epochs": 2}, {"lr": 0.1, "epochs": 5}, {"epochs"}, "c.pt",
    ...                 "use another out_dir")
    >>> check_resumable({"lr": 0.1}, {"lr": 0.5}, {"epochs"}, "c.pt", "hint")
    Traceback (most recent call last):
    augengine.errors.ConfigError: c.pt: was trained with lr=0.1, this run has lr=0.5; hint
    """
    for key in sorted(set(saved) | set(current)):
        if key not in resumable and saved.get(key) != current.get(key):
            raise ConfigError(f"{path}: was trained with {key}={saved.get(key)!r}, this run has "
                              f"{key}={current.get(key)!r}; {hint}")


def append_log(run_dir, record: Mapping) -> None:
    """Add ``record`` as one JSON line to ``run_dir/log.jsonl``."""
    with (Path(run_dir) / LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps(dict(record)) + "\n")
