"""A store as a Ray Data ``Dataset``: one read task and one block per shard, so users can
``map_batches`` their own models over a store on a cluster (docs/ray_data.md).

Ray Data imports pandas, which augengine does not otherwise use; the ``ray[data]`` requirement
in pyproject brings it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from augengine.manifest import Where, rows_where
from augengine.store import open_store


def _read_shard(path: str, start: int, stop: int, rows: list[dict], with_masks: bool):
    """The block of one shard: its arrays are read once, as a whole, on the worker."""
    import zarr
    from ray.data.block import BlockAccessor

    group = zarr.open_group(path, mode="r")
    offsets = [row["index"] - start for row in rows]
    images = group["images"][start:stop][offsets]
    # A store written without masks still gives every row a mask, all zero, so that batches
    # have one schema; the manifest's has_mask says which samples have a real one.
    masks = group["masks"][start:stop][offsets] if with_masks else np.zeros_like(images)
    return [BlockAccessor.batch_to_block({
        "image": images, "mask": masks,
        "label": np.array([row["label"] for row in rows], np.int64),
        "sample_id": np.array([row["sample_id"] for row in rows], object),
        "source_id": np.array([row["source_id"] for row in rows], object)})]


def _datasource(path: Path, where: Where):
    """A ``ray.data.Datasource`` with one read task per shard that holds a kept row."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    view = open_store(path)
    shard_size = int(view.attrs["shard_size"])
    n_samples, height, width = view.group["images"].shape
    with_masks = "masks" in view.group
    by_shard: dict[int, list[dict]] = {}
    for row in view.manifest.filter(rows_where(view.manifest, where)).to_pylist():
        by_shard.setdefault(row["index"] // shard_size, []).append(row)
    row_bytes = 2 * height * width + 64  # image and mask, plus the label and ids roughly

    class StoreDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return row_bytes * sum(len(rows) for rows in by_shard.values())

        # Ray asks for ``parallelism`` tasks; a shard is the store's unit of reading (one file
        # per array), so the shards decide, whatever Ray asks.
        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for shard, rows in sorted(by_shard.items()):
                start = shard * shard_size
                stop = min(start + shard_size, n_samples)
                metadata = BlockMetadata(num_rows=len(rows), size_bytes=row_bytes * len(rows),
                                         input_files=None, exec_stats=None)
                tasks.append(ReadTask(
                    lambda a=(str(path), start, stop, rows, with_masks): _read_shard(*a),
                    metadata, per_task_row_limit=per_task_row_limit))
            return tasks

    return StoreDatasource(), len(by_shard)


def read_store(path: str | Path, where: Where = None):
    """The samples of the store at ``path`` as a ``ray.data.Dataset``, one block per shard.

    Parameters
    ----------
    path : str or Path
        A finished store (``augengine run``); it must be readable at the same path by every
        node of the cluster (a shared file system).
    where : optional
        Which manifest rows to read, in any form of :func:`augengine.manifest.rows_where`:
        ``{"label": 1}``, ``"bmode.dynamic_range_db=40"``, ``["label=1", "chain~rotate"]`` or a
        function of a row dict. It runs on the driver over the manifest; shards left with no
        row have no block.

    Returns
    -------
    ray.data.Dataset
        Rows ``{"image": (H, W) uint8, "mask": (H, W) uint8 (all zero where the sample has no
        mask), "label": int64, "sample_id": str, "source_id": str}``; a block holds its shard's
        rows in store order (blocks keep store order when
        ``ray.data.DataContext.get_current().execution_options.preserve_order`` is set).
    """
    import ray.data

    datasource, shards = _datasource(Path(path), where)
    # Without the override Ray splits the blocks of few read tasks to reach its parallelism.
    return ray.data.read_datasource(datasource, override_num_blocks=max(shards, 1))
