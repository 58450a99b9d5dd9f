"""A store as a PyTorch ``Dataset`` of sample dicts, for users' own training code.

Items follow MONAI's dictionary convention, so MONAI dictionary transforms (``keys=["image",
"mask"]``) and torchvision v2 transforms (which pass a dict's tensors through) plug in:

* ``image``: float32 tensor (1, H, W) in [0, 1], the stored uint8 divided by 255: channel first,
  as MONAI and torchvision expect, and already the float they compute in;
* ``mask``: uint8 tensor (1, H, W) of 0/1 (all zeros for a sample without a mask); absent when the
  store has no ``masks/`` array;
* ``label``: int (0 benign, 1 malignant, 2 normal); ``sample_id``, ``source_id``: str.

Reading: Zarr reads a whole shard far faster than its samples one by one, so an item's whole
shard is read once and kept while the next items fall in it. Sequential indices (a DataLoader
without ``shuffle``, or with a sampler that walks shards) then read each shard once per worker;
each DataLoader worker holds its own one-shard cache.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import zarr

from augengine.errors import ConfigError
from augengine.store import open_store
from augengine.train.splits import SPLITS, assign_split, load_splits, split_by_source


class StoreDataset(torch.utils.data.Dataset):
    """The written samples of a store, optionally filtered and narrowed to one split.

    Parameters
    ----------
    path : str or Path
        A finished store (``augengine run``).
    where : optional
        Row filter, as every reader takes it (:func:`augengine.manifest.rows_where`):
        ``{"bmode.dynamic_range_db": 40}``, ``"label=1"``, ``["label=1", "chain~rotate"]``.
    split : {"train", "val", "test"}, optional
        Keep the rows of this split. Splits are by source (every variant of one lesion on one
        side), made over the whole store before ``where`` filters it, so filters never move a
        source between splits.
    transform : callable, optional
        Applied to each item dict; returns the item.
    splits : mapping or path, optional
        The source ids of each split (a ``splits.json`` of a training run, or
        :func:`augengine.train.splits.split_by_source`'s result). Default:
        ``split_by_source`` of the store's sources with ``fractions`` and ``seed``, stratified by
        label, as ``augengine train`` splits by default.
    fractions : (train, val, test)
    seed : int

    Examples
    --------
    >>> data = StoreDataset("out/dataset.zarr", split="train")              # doctest: +SKIP
    >>> data[0]["image"].shape, data[0]["label"]                             # doctest: +SKIP
    (torch.Size([1, 224, 224]), 1)
    """

    def __init__(self, path, where=None, split: str | None = None,
                 transform: Callable[[dict], dict] | None = None,
                 splits: Mapping[str, Sequence[str]] | str | Path | None = None,
                 fractions=(0.70, 0.15, 0.15), seed: int = 0):
        view = open_store(path)
        manifest = view.manifest
        keep = np.ones(manifest.num_rows, dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
            sources = manifest.column("source_id").to_pylist()
            if splits is None:
                splits = split_by_source(sources, fractions, seed,
                                         labels=manifest.column("label").to_pylist())
            elif not isinstance(splits, Mapping):
                splits = load_splits(splits)
            keep &= assign_split(sources, splits) == split
        if where is not None:
            keep &= np.isin(view.indices, view.where(where).indices)
        rows = manifest.filter(keep)
        self.path = str(view.path)
        self.transform = transform
        self.shard_size = int(view.attrs["shard_size"])
        self.has_masks = view.masks is not None
        self.indices = np.asarray(rows.column("index").to_numpy(), dtype=np.int64)
        self.labels = rows.column("label").to_pylist()
        self.sample_ids = rows.column("sample_id").to_pylist()
        self.source_ids = rows.column("source_id").to_pylist()
        self._group = None
        self._shard: tuple[int, np.ndarray, np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self):
        # A worker (forked or spawned) opens the group itself and starts with an empty cache.
        return {**self.__dict__, "_group": None, "_shard": None}

    def _read_shard(self, shard: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self._group is None:
            self._group = zarr.open_group(self.path, mode="r")
        start = shard * self.shard_size
        stop = start + self.shard_size
        images = self._group["images"][start:stop]
        masks = self._group["masks"][start:stop] if self.has_masks else None
        return images, masks

    def __getitem__(self, item: int) -> dict:
        index = int(self.indices[item])
        shard = index // self.shard_size
        if self._shard is None or self._shard[0] != shard:
            self._shard = (shard, *self._read_shard(shard))
        _, images, masks = self._shard
        row = index - shard * self.shard_size
        sample = {"image": torch.from_numpy(images[row][None].astype(np.float32) / 255.0),
                  "label": self.labels[item], "sample_id": self.sample_ids[item],
                  "source_id": self.source_ids[item]}
        if masks is not None:
            sample["mask"] = torch.from_numpy(masks[row][None].copy())
        return self.transform(sample) if self.transform is not None else sample
