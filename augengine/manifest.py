"""Row filters over a store's manifest, shared by the store's readers and the training jobs.

Here, below both :mod:`augengine.store` and :mod:`augengine.train`, so that ``open_store(...)
.where(...)`` and ``augengine train --train-where`` select rows by one rule.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from augengine.errors import ConfigError


def rows_where(manifest, where: Sequence[tuple[str, object]]) -> np.ndarray:
    """Boolean mask of the manifest rows whose op chain meets every ``op.param == value``.

    Parameters
    ----------
    manifest : pyarrow.Table
        With an ``ops`` column: per row a JSON list ``[{"op": name, param: value, ...}, ...]``.
    where : sequence of (str, value)
        ``("bmode.dynamic_range_db", 40)``: the row applied op ``bmode`` with
        ``dynamic_range_db`` 40. Numbers compare as numbers (``"40"`` matches ``40``); several
        conditions must all hold. Empty: every row.

    Returns
    -------
    ndarray (n_rows,) bool

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = pa.table({"ops": ['[{"op": "bmode", "dynamic_range_db": 40}]',
    ...                           '[{"op": "bmode", "dynamic_range_db": 60}]']})
    >>> rows_where(table, [("bmode.dynamic_range_db", "40")]).tolist()
    [True, False]
    """
    conditions = []
    for key, value in where:
        op, dot, param = str(key).partition(".")
        if not (op and dot and param):
            raise ConfigError(f"a row filter needs the form op.param=value, got {key!r}")
        conditions.append((op, param, _comparable(value)))
    keep = np.ones(manifest.num_rows, dtype=bool)
    if not conditions:
        return keep
    for row, entry in enumerate(manifest.column("ops").to_pylist()):
        steps = json.loads(entry) if entry else []
        keep[row] = all(any(step.get("op") == op and param in step
                            and _comparable(step[param]) == value for step in steps)
                        for op, param, value in conditions)
    return keep


def _comparable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
