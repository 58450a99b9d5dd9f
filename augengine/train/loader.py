"""Training loaders over a store: NVIDIA DALI, and the plain PyTorch DataLoader baseline.

Both read the same way and apply the same augmentation; only the executor differs.

Reading (:class:`StoreSource`). Zarr is fast when it reads whole shards with one slice and slow
sample by sample, so the unit of reading is the store shard (``shard_size`` samples):

1. The subset (e.g. the train split, :func:`split_indices`) is grouped by store shard; only
   indices in the manifest are valid, so quarantined slots are never served.
2. Each epoch the ORDER of the shards is shuffled, seeded by ``(seed, epoch)``, and the shards
   are dealt round-robin to the ranks: rank ``r`` of ``R`` takes ``order[r::R]``. Ranks are
   disjoint and together cover the subset.
3. A rank walks its shards in buffers of ``buffer_shards`` shards and shuffles the samples
   inside each buffer, seeded by ``(seed, epoch, rank, buffer)``. A shard is read as
   ``images[start:stop]`` when its buffer is reached and dropped after it.
4. Lockstep (``even_ranks``, the default in training): whole shards make the ranks' counts
   unequal, and Horovod ranks must take the same number of steps, so every rank DROPS the tail of
   its epoch order down to the smallest rank's count (at most about one shard per rank). The
   dropped samples change every epoch with the shard order. Padding was rejected because it
   would serve some samples twice. In evaluation (``train=False``) nothing is dropped or
   shuffled: shards in store order, every sample of the subset exactly once over the ranks.

So within an epoch each sample of a rank's share is served exactly once, in batches of
``batch_size`` with a smaller last batch; all ranks see the same number of batches.

Augmentation (:mod:`augengine.train.augment`): per sample and epoch, flips, rot90, a small
rotation/zoom/shift and the resize to ``output_size`` are drawn from
``default_rng((seed, epoch, index))`` and composed into one 2x3 matrix; DALI applies it with a
single ``fn.warp_affine`` (bilinear for images, nearest for masks, so masks stay aligned), the
baseline with ``affine_grid``/``grid_sample``. Then ``x / 255`` is normalised per channel, the
grey channel replicated to 3 channels (ImageNet statistics) or kept as 1. Evaluation only resizes
(and skips the warp when the stored size is the output size).

Batches are dicts of torch tensors: ``images`` (B, C, S, S) float32, ``labels`` (B,) int64,
``indices`` (B,) int64 (store rows, for bookkeeping and tests), and with ``with_masks``
``masks`` (B, 1, S, S) uint8 0/1. One ``for`` loop over a loader is one epoch; run it to the end.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import zarr

from augengine.checks import check_int
from augengine.errors import ConfigError, InputError
from augengine.store import StoreView, open_store
from augengine.train.augment import (
    GeometryRange,
    geometry_matrix,
    identity_geometry,
    normalization_stats,
    normalize,
    sample_geometry,
    sample_rng,
    warp_affine,
)
from augengine.train.splits import assign_split

__all__ = ["DaliLoader", "StoreSource", "TorchLoader", "augment_batch", "dali_pipeline",
           "group_by_shard", "make_dali_loader", "make_torch_loader", "py_start_method",
           "rank_epoch_order", "split_indices"]


def _as_view(store) -> StoreView:
    return store if isinstance(store, StoreView) else open_store(store)


def split_indices(store, splits: Mapping[str, Sequence[str]], split: str) -> np.ndarray:
    """Store indices of the manifest rows whose source is in ``splits[split]``.

    Parameters
    ----------
    store : path or StoreView
        A finished store (:func:`augengine.store.open_store`).
    splits : mapping
        ``{"train": [...], "val": [...], "test": [...]}`` source ids, as from
        :func:`augengine.train.splits.split_by_source` or ``load_splits``.
    split : {"train", "val", "test"}

    Returns
    -------
    ndarray (n,) int64
        Sorted store indices; the ``indices`` argument of the loaders.

    Examples
    --------
    >>> split_indices("out/dataset.zarr", load_splits("splits.json"), "train")  # doctest: +SKIP
    array([   0,    1,    2, ..., 4093, 4094, 4095])
    """
    if split not in splits:
        raise ConfigError(f"split must be one of {sorted(splits)}, got {split!r}")
    view = _as_view(store)
    names = assign_split(view.manifest.column("source_id"), splits)
    rows = np.asarray(view.manifest.column("index").to_numpy(), dtype=np.int64)
    return np.sort(rows[names == split])


def group_by_shard(indices: np.ndarray, shard_size: int) -> list[np.ndarray]:
    """Split sorted store indices into one array per store shard (``index // shard_size``).

    Examples
    --------
    >>> [g.tolist() for g in group_by_shard(np.array([0, 3, 4, 9]), 4)]
    [[0, 3], [4], [9]]
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return []
    starts = np.flatnonzero(np.diff(indices // shard_size)) + 1
    return np.split(indices, starts)


def rank_epoch_order(shard_groups: Sequence[np.ndarray], seed: int, epoch: int, rank: int,
                     world_size: int, shuffle: bool = True, buffer_shards: int = 4,
                     even_ranks: bool = True) -> np.ndarray:
    """The store indices rank ``rank`` serves in ``epoch``, in order (steps 2-4 of the module).

    Parameters
    ----------
    shard_groups : sequence of ndarray
        The subset's indices per non-empty store shard, in store order (:func:`group_by_shard`).
    seed, epoch : int
        ``>= 0``. The shard order is ``default_rng((seed, epoch)).permutation``; the buffer
        shuffles use ``default_rng((seed, epoch, rank, buffer))``.
    rank, world_size : int
        ``0 <= rank < world_size <= len(shard_groups)``.
    shuffle : bool
        False: shards in store order, samples in index order (evaluation).
    buffer_shards : int
        Shards shuffled together, ``>= 1``.
    even_ranks : bool
        Drop each rank's tail down to the smallest rank's count, so all ranks take the same
        number of steps.

    Returns
    -------
    ndarray (m,) int64
        No index twice; over the ranks disjoint, covering the subset when ``even_ranks`` is off.

    Examples
    --------
    >>> groups = [np.array([0, 1]), np.array([4, 5]), np.array([8])]
    >>> rank_epoch_order(groups, 0, 0, rank=0, world_size=2, shuffle=False,
    ...                  even_ranks=False).tolist()
    [0, 1, 8]
    >>> rank_epoch_order(groups, 0, 0, rank=0, world_size=2, shuffle=False).tolist()
    [0, 1]
    """
    n_shards = len(shard_groups)
    if world_size > n_shards:
        raise ConfigError(f"world_size {world_size} exceeds the {n_shards} store shards holding "
                          "this subset: some ranks would get no data (use fewer ranks or a "
                          "smaller shard_size)")
    order = (np.random.default_rng((seed, epoch)).permutation(n_shards) if shuffle
             else np.arange(n_shards))
    mine = order[rank::world_size]
    blocks = []
    for buffer, first in enumerate(range(0, len(mine), buffer_shards)):
        block = np.concatenate([shard_groups[j] for j in mine[first:first + buffer_shards]])
        if shuffle:
            block = np.random.default_rng((seed, epoch, rank, buffer)).permutation(block)
        blocks.append(block)
    served = np.concatenate(blocks).astype(np.int64)
    if even_ranks:
        sizes = [len(shard_groups[j]) for j in order]
        served = served[:min(sum(sizes[r::world_size]) for r in range(world_size))]
    return served


class StoreSource:
    """Batches of raw samples from a store, by ``(epoch, iteration)`` alone (DALI's contract).

    A picklable callable for ``fn.external_source(batch=True, batch_info=True)``: forked or
    spawned workers open the Zarr group themselves and keep only a small cache of whole shards
    (a read buffer, not state: any batch can be asked for in any order). See the module
    docstring for the order. With ``py_num_workers > 1`` each worker reads the shards its batches touch, so a
    shard may be decoded once per worker.

    Parameters
    ----------
    store : path or StoreView
        A finished store.
    indices : sequence of int, optional
        Store rows to serve (e.g. :func:`split_indices`); default every manifest row. Each must
        be a manifest row: a quarantined or out-of-range index raises :class:`InputError`.
    batch_size : int
        Samples per batch (per rank), ``>= 1``; the last batch of an epoch may be smaller.
    rank, world_size : int
        This rank's share of the shards.
    seed : int
        ``>= 0``; shard order, buffer shuffles and augmentation derive from it and the epoch.
    train : bool
        Shuffle, drop to even ranks and draw random geometry; False: store order, every sample,
        identity geometry (only the resize to ``output_size``).
    with_masks : bool
        Also serve ``masks/`` (:class:`InputError` if the store has none).
    output_size : int
        Side of the square network input, pixels.
    geometry : GeometryRange, optional
        Ranges of the training augmentation; default ``GeometryRange()``.
    buffer_shards : int
        Shards shuffled together (each costs ``shard_size * H * W`` bytes of memory).
    even_ranks : bool, optional
        Default: ``train``.

    Examples
    --------
    >>> source = StoreSource("out/dataset.zarr", batch_size=32)          # doctest: +SKIP
    >>> batch = source.read_batch(epoch=0, iteration=0)                  # doctest: +SKIP
    >>> batch["images"].shape, batch["matrices"].shape                   # doctest: +SKIP
    ((32, 224, 224, 1), (32, 2, 3))
    """

    def __init__(self, store, indices: Sequence[int] | None = None, *, batch_size: int = 32,
                 rank: int = 0, world_size: int = 1, seed: int = 0, train: bool = True,
                 with_masks: bool = False, output_size: int = 224,
                 geometry: GeometryRange | None = None, buffer_shards: int = 4,
                 even_ranks: bool | None = None):
        view = _as_view(store)
        self.path = str(view.path)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.world_size = check_int(world_size, "world_size", 1)
        self.rank = check_int(rank, "rank", 0, self.world_size)
        self.seed = check_int(seed, "seed", 0)
        self.output_size = check_int(output_size, "output_size", 1)
        self.buffer_shards = check_int(buffer_shards, "buffer_shards", 1)
        self.train = bool(train)
        self.even_ranks = self.train if even_ranks is None else bool(even_ranks)
        self.geometry = geometry or GeometryRange()
        self.with_masks = bool(with_masks)
        if self.with_masks and "masks" not in view.group:
            raise InputError(f"{self.path}: with_masks=True but the store has no masks/ array")
        images = view.group["images"]
        self.image_shape = tuple(images.shape[1:])
        self.n_rows = images.shape[0]
        self.shard_size = int(view.attrs["shard_size"])

        manifest_rows = np.asarray(view.manifest.column("index").to_numpy(), dtype=np.int64)
        self.labels = np.full(self.n_rows, -1, dtype=np.int64)
        self.labels[manifest_rows] = view.manifest.column("label").to_numpy()
        chosen = self._check_indices(manifest_rows, indices)
        self.shard_groups = group_by_shard(chosen, self.shard_size)
        # Fails now, not in a worker, when there are more ranks than shards.
        rank_epoch_order(self.shard_groups, self.seed, 0, self.rank, self.world_size,
                         self.train, self.buffer_shards, self.even_ranks)
        self._group = None
        self._shards: OrderedDict[int, tuple] = OrderedDict()
        self._order: tuple[int, np.ndarray] | None = None

    def _check_indices(self, manifest_rows: np.ndarray, indices) -> np.ndarray:
        if indices is None:
            chosen = np.sort(manifest_rows)
        else:
            chosen = np.asarray(indices)
            if chosen.ndim != 1 or (chosen.size and not np.issubdtype(chosen.dtype, np.integer)):
                raise InputError(f"{self.path}: indices must be a 1-D sequence of integers, got "
                                 f"shape {chosen.shape} dtype {chosen.dtype}")
            chosen = np.sort(chosen.astype(np.int64))
            repeated = chosen[1:][chosen[1:] == chosen[:-1]]
            if repeated.size:
                raise InputError(f"{self.path}: sample index {repeated[0]} is given more than "
                                 f"once ({repeated.size} repeats)")
            invalid = np.setdiff1d(chosen, manifest_rows)
            if invalid.size:
                raise InputError(f"{self.path}: {invalid.size} indices are not samples of the "
                                 f"manifest (quarantined or out of range), e.g. {invalid[0]}")
        if chosen.size == 0:
            raise InputError(f"{self.path}: no samples to serve (empty indices or manifest)")
        return chosen

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_group=None, _shards=OrderedDict(), _order=None)  # per process
        return state

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The store indices this rank serves in ``epoch``, in serving order."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, rank_epoch_order(
                self.shard_groups, self.seed, epoch, self.rank, self.world_size,
                shuffle=self.train, buffer_shards=self.buffer_shards, even_ranks=self.even_ranks))
        return self._order[1]

    def num_batches(self, epoch: int) -> int:
        """Batches this rank (and, with ``even_ranks``, every rank) yields in ``epoch``."""
        return -(-len(self.epoch_indices(epoch)) // self.batch_size)

    def _shard(self, shard: int) -> tuple:
        """Whole shard ``(images, masks or None)``, read with one slice per array."""
        if shard in self._shards:
            self._shards.move_to_end(shard)
            return self._shards[shard]
        if self._group is None:
            self._group = zarr.open_group(self.path, mode="r")
        start, stop = shard * self.shard_size, min((shard + 1) * self.shard_size, self.n_rows)
        block = (self._group["images"][start:stop],
                 self._group["masks"][start:stop] if self.with_masks else None)
        self._shards[shard] = block
        # Two buffers' worth: a batch can straddle the boundary between two buffers.
        while len(self._shards) > 2 * self.buffer_shards:
            self._shards.popitem(last=False)
        return block

    def read_batch(self, epoch: int, iteration: int) -> dict[str, np.ndarray] | None:
        """Batch ``iteration`` of ``epoch``, or None past the end of the epoch.

        Returns
        -------
        dict of ndarray
            ``images`` (b, H, W, 1) uint8 (HWC, as DALI wants), ``masks`` (b, H, W, 1) uint8 with
            ``with_masks``, ``labels`` (b,) int64, ``indices`` (b,) int64, and when
            :attr:`warps` ``matrices`` (b, 2, 3) float32
            (:func:`augengine.train.augment.geometry_matrix`).
        """
        order = self.epoch_indices(epoch)
        rows = order[iteration * self.batch_size:(iteration + 1) * self.batch_size]
        if rows.size == 0:
            return None
        shard_of = rows // self.shard_size
        images = np.empty((rows.size, *self.image_shape, 1), dtype=np.uint8)
        masks = np.empty_like(images) if self.with_masks else None
        for shard in np.unique(shard_of):
            block_images, block_masks = self._shard(int(shard))
            at = np.flatnonzero(shard_of == shard)
            offsets = rows[at] - shard * self.shard_size
            images[at, ..., 0] = block_images[offsets]
            if masks is not None:
                masks[at, ..., 0] = block_masks[offsets]
        batch = {"images": images, "labels": self.labels[rows], "indices": rows.copy()}
        if masks is not None:
            batch["masks"] = masks
        if self.warps:
            out_shape = (self.output_size, self.output_size)
            batch["matrices"] = np.stack([geometry_matrix(
                sample_geometry(sample_rng(self.seed, epoch, row), self.geometry) if self.train
                else identity_geometry(), self.image_shape, out_shape) for row in rows])
        return batch

    @property
    def warps(self) -> bool:
        """Whether batches need the warp: always in training; in evaluation only to resize."""
        return self.train or self.image_shape != (self.output_size, self.output_size)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of :meth:`__call__`'s outputs, in order."""
        return ("images",) + (("masks",) if self.with_masks else ()) + \
            ("labels", "indices") + (("matrices",) if self.warps else ())

    def __call__(self, batch_info) -> tuple[np.ndarray, ...]:
        """DALI source: the :attr:`outputs` for a ``BatchInfo``; StopIteration at epoch end."""
        batch = self.read_batch(batch_info.epoch_idx, batch_info.iteration)
        if batch is None:
            raise StopIteration
        return tuple(batch[name] for name in self.outputs)


def py_start_method() -> str:
    """How DALI starts the Python workers of the parallel external source in this process.

    ``"fork"`` while no CUDA context exists: the workers start at once, import nothing and share
    the parent's memory. ``"spawn"`` once the CUDA driver is initialised (by torch, e.g. a model
    moved to the GPU, or by DALI or CuPy), because DALI refuses to fork then (a forked child
    cannot use its parent's CUDA context). Spawned workers unpickle the :class:`StoreSource`
    (importable from this module; its ``__getstate__`` drops the open store) and reopen the store.

    Returns
    -------
    {"fork", "spawn"}
    """
    from nvidia.dali.backend import IsDriverInitialized

    return "spawn" if torch.cuda.is_initialized() or IsDriverInitialized() else "fork"


def dali_pipeline(source: StoreSource, device: str = "cpu", device_id: int | None = None,
                  channels: int = 3, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, num_threads: int = 2,
                  py_num_workers: int = 1, prefetch_queue_depth: int = 2):
    """Build the DALI pipeline: read (``source``) -> one ``warp_affine`` -> normalise to CHW.

    The warp is skipped when ``source.warps`` is False (evaluation at the stored size).

    Parameters
    ----------
    source : StoreSource
        Reads and draws the per-sample matrices; its ``train`` decides augmentation.
    device : {"cpu", "gpu"}
        ``"gpu"`` copies images (and masks) to GPU ``device_id`` right after reading and runs
        the warp and normalisation there. Unverified here: the development machines have no GPU.
    device_id : int, optional
        CUDA device for ``"gpu"`` (default: the current CUDA device, e.g. Horovod's local rank
        after ``torch.cuda.set_device``). Ignored for ``"cpu"``.
    channels : {1, 3}
        3: the grey channel replicated to R, G, B.
    mean, std : sequence of float, optional
        Per channel, in [0, 1] units; default :func:`augengine.train.augment.normalization_stats`.
    num_threads : int
        DALI CPU threads for the ops.
    py_num_workers : int
        Python processes running ``source`` in parallel, started here (forked, or spawned once
        CUDA is initialised: :func:`py_start_method`); 0 runs it in the main process.
    prefetch_queue_depth : int
        Batches prepared ahead.

    Returns
    -------
    nvidia.dali.Pipeline
        Outputs: images (C, S, S) float32, [masks (S, S, 1) uint8], labels, indices (int64).
    """
    from nvidia.dali import fn, pipeline_def, types

    if device not in ("cpu", "gpu"):
        raise ConfigError(f"device must be 'cpu' or 'gpu', got {device!r}")
    mean, std = normalization_stats(channels, mean, std)
    if device == "gpu":
        from nvidia.dali.backend import GetCUDADeviceCount

        if GetCUDADeviceCount() == 0:
            raise ConfigError("device='gpu' needs a CUDA device; none was found (use 'cpu')")
        if device_id is None:
            device_id = torch.cuda.current_device() if torch.cuda.is_available() else 0
    else:
        device_id = None
    num_threads = check_int(num_threads, "num_threads", 1)
    parallel = check_int(py_num_workers, "py_num_workers", 0) > 0
    size = (source.output_size, source.output_size)
    kinds = {"images": (types.UINT8, "HWC"), "masks": (types.UINT8, "HWC"),
             "labels": (types.INT64, ""), "indices": (types.INT64, ""),
             "matrices": (types.FLOAT, "")}

    workers = {"py_num_workers": py_num_workers,
               "py_start_method": py_start_method()} if parallel else {}

    @pipeline_def(batch_size=source.batch_size, num_threads=num_threads, device_id=device_id,
                  seed=source.seed, prefetch_queue_depth=prefetch_queue_depth, **workers)
    def graph():
        nodes = dict(zip(source.outputs, fn.external_source(
            source=source, num_outputs=len(source.outputs), batch=True, batch_info=True,
            parallel=parallel, dtype=[kinds[name][0] for name in source.outputs],
            layout=[kinds[name][1] for name in source.outputs])))
        images = nodes["images"].gpu() if device == "gpu" else nodes["images"]
        if source.warps:
            images = fn.warp_affine(images, matrix=nodes["matrices"], size=size, fill_value=0,
                                    interp_type=types.INTERP_LINEAR)
        if channels == 3:
            images = fn.cat(images, images, images, axis=2)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=[255 * m for m in mean],
                                          std=[255 * s for s in std])
        outputs = [images]
        if source.with_masks:
            masks = nodes["masks"].gpu() if device == "gpu" else nodes["masks"]
            if source.warps:
                masks = fn.warp_affine(masks, matrix=nodes["matrices"], size=size, fill_value=0,
                                       interp_type=types.INTERP_NN)
            outputs.append(masks)
        return (*outputs, nodes["labels"], nodes["indices"])

    pipeline = graph()
    if parallel:
        # Now, not at build(): a forked worker started after anything (a GPU pipeline's build,
        # the training loop) creates a CUDA context would be refused by DALI.
        pipeline.start_py_workers()
    return pipeline


class DaliLoader:
    """Epochs of batches from a DALI pipeline as dicts of torch tensors (see the module doc)."""

    def __init__(self, pipeline, source: StoreSource):
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        self.source = source
        self.epoch = 0
        self._names = [name for name in source.outputs if name != "matrices"]
        self._iterator = DALIGenericIterator(pipeline, self._names, auto_reset=True,
                                             last_batch_policy=LastBatchPolicy.PARTIAL)

    def __len__(self) -> int:
        return self.source.num_batches(self.epoch)

    def __iter__(self):
        for (batch,) in self._iterator:
            if "masks" in batch:
                batch["masks"] = batch["masks"].permute(0, 3, 1, 2)  # HWC with C = 1: a view
            yield batch
        self.epoch += 1


def make_dali_loader(store, indices: Sequence[int] | None = None, batch_size: int = 32,
                     rank: int = 0, world_size: int = 1, seed: int = 0, train: bool = True,
                     with_masks: bool = False, device: str = "cpu", output_size: int = 224,
                     channels: int = 3, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, geometry: GeometryRange | None = None,
                     buffer_shards: int = 4, even_ranks: bool | None = None,
                     num_threads: int = 2, py_num_workers: int = 1,
                     device_id: int | None = None) -> DaliLoader:
    """A DALI training (or evaluation) loader over ``store``: one rank's share, epoch by epoch.

    Parameters are those of :class:`StoreSource` (reading, sharding, augmentation ranges) and
    :func:`dali_pipeline` (device, channels, normalisation, threads and workers). With Horovod:
    ``rank=hvd.rank(), world_size=hvd.size(), device_id=hvd.local_rank()``.

    Returns
    -------
    DaliLoader
        Iterate once per epoch; batches are dicts ``images`` (B, C, S, S) float32 (on the GPU
        for ``device="gpu"``), ``labels`` (B,) int64, ``indices`` (B,) int64 and, with
        ``with_masks``, ``masks`` (B, 1, S, S) uint8.

    Examples
    --------
    >>> loader = make_dali_loader("out/dataset.zarr", split_indices(...), batch_size=64,
    ...                           rank=hvd.rank(), world_size=hvd.size())   # doctest: +SKIP
    >>> for epoch in range(20):                                              # doctest: +SKIP
    ...     for batch in loader:
    ...         loss = criterion(model(batch["images"]), batch["labels"])
    """
    source = StoreSource(store, indices, batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=seed, train=train, with_masks=with_masks, output_size=output_size,
                         geometry=geometry, buffer_shards=buffer_shards, even_ranks=even_ranks)
    pipeline = dali_pipeline(source, device, device_id, channels, mean, std, num_threads,
                             py_num_workers)
    return DaliLoader(pipeline, source)


class _EpochBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``i`` is batch ``i`` of one epoch, augmented in the worker."""

    def __init__(self, source: StoreSource, epoch: int, augment: bool, mean: tuple,
                 std: tuple):
        self.source, self.epoch, self.augment = source, epoch, augment
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return self.source.num_batches(self.epoch)

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        raw = {name: torch.from_numpy(array)
               for name, array in self.source.read_batch(self.epoch, iteration).items()}
        return augment_batch(raw, self.source.output_size, self.mean, self.std) if self.augment \
            else raw


def augment_batch(raw: dict[str, torch.Tensor], output_size: int, mean: Sequence[float],
                  std: Sequence[float]) -> dict[str, torch.Tensor]:
    """The baseline's augmentation of a raw batch (:meth:`StoreSource.read_batch`), in torch.

    The same steps as the DALI pipeline, on ``raw``'s device: bilinear warp rounded to whole grey
    levels, normalise, replicate channels; masks warped nearest.
    A batch without ``matrices`` (evaluation at the stored size) is not warped.

    Returns
    -------
    dict of Tensor
        ``images`` (B, C, S, S) float32, ``labels`` and ``indices`` (B,) int64, ``masks``
        (B, 1, S, S) uint8 when ``raw`` has masks.
    """
    size = (output_size, output_size)
    matrices = raw.get("matrices")
    images = raw["images"].permute(0, 3, 1, 2).float()
    if matrices is not None:
        # DALI warps uint8 to uint8, rounding halves up; do the same so the loaders agree.
        images = torch.floor(warp_affine(images, matrices, size) + 0.5)
    batch = {"images": normalize(images, mean, std), "labels": raw["labels"].long(),
             "indices": raw["indices"].long()}
    if "masks" in raw:
        masks = raw["masks"].permute(0, 3, 1, 2)
        batch["masks"] = warp_affine(masks.float(), matrices, size, mode="nearest").to(
            torch.uint8) if matrices is not None else masks.contiguous()
    return batch


class TorchLoader:
    """The PyTorch DataLoader baseline: the same reading, order and augmentation as DALI's."""

    def __init__(self, source: StoreSource, device: torch.device, mean: tuple, std: tuple,
                 num_workers: int):
        self.source, self.device = source, device
        self.mean, self.std = mean, std
        self.num_workers = num_workers
        self.epoch = 0

    def __len__(self) -> int:
        return self.source.num_batches(self.epoch)

    def __iter__(self):
        # On a GPU the warp runs there after the copy; on the CPU in the workers, like DALI's.
        on_cpu = self.device.type == "cpu"
        dataset = _EpochBatches(self.source, self.epoch, on_cpu, self.mean, self.std)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=self.num_workers,
            pin_memory=not on_cpu, multiprocessing_context="fork" if self.num_workers else None)
        for batch in loader:
            batch = {name: tensor.to(self.device, non_blocking=True)
                     for name, tensor in batch.items()}
            yield batch if on_cpu else augment_batch(batch, self.source.output_size, self.mean,
                                                     self.std)
        self.epoch += 1


def make_torch_loader(store, indices: Sequence[int] | None = None, batch_size: int = 32,
                      rank: int = 0, world_size: int = 1, seed: int = 0, train: bool = True,
                      with_masks: bool = False, device: str | torch.device = "cpu",
                      output_size: int = 224, channels: int = 3,
                      mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                      geometry: GeometryRange | None = None, buffer_shards: int = 4,
                      even_ranks: bool | None = None, num_workers: int = 2) -> TorchLoader:
    """The PyTorch DataLoader baseline of :func:`make_dali_loader` (same arguments and batches).

    ``device`` is a torch device (``"cpu"``, ``"cuda:0"``); ``num_workers`` DataLoader worker
    processes read and, on the CPU, augment (0: in the main process).

    Examples
    --------
    >>> loader = make_torch_loader("out/dataset.zarr", batch_size=64)       # doctest: +SKIP
    >>> next(iter(loader))["images"].shape                                   # doctest: +SKIP
    torch.Size([64, 3, 224, 224])
    """
    source = StoreSource(store, indices, batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=seed, train=train, with_masks=with_masks, output_size=output_size,
                         geometry=geometry, buffer_shards=buffer_shards, even_ranks=even_ranks)
    mean, std = normalization_stats(channels, mean, std)
    num_workers = check_int(num_workers, "num_workers", 0)
    return TorchLoader(source, torch.device(device), mean, std, num_workers)
