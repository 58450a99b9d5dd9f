"""Row filters over a store's manifest: the one ``where`` of every reader.

Here, below :mod:`augengine.store`, :mod:`augengine.train`, :mod:`augengine.preview` and
:mod:`augengine.ray_data`, so that ``open_store(...).where(...)``, ``StoreDataset(where=...)``,
``ray_data.read_store(where=...)``, ``augengine preview --where`` and ``augengine train
--train-where`` select rows by one rule (docs/python.md, "Selecting rows").
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import numpy as np

from augengine.errors import ConfigError, unknown

#: What a ``where`` may be: see :func:`rows_where`.
Where = (Mapping | list | tuple | str | Callable[[dict], bool] | None)


def conditions_of(where, name: str = "where") -> list[tuple[str, str, object]]:
    """The ``(key, sign, value)`` conditions of a ``where`` given as a mapping, pairs or
    ``KEY=VALUE`` / ``KEY~TEXT`` texts (:func:`rows_where`); ``sign`` is ``=`` or ``~``."""
    if where is None:
        return []
    if isinstance(where, str):
        where = [where]
    items = where.items() if isinstance(where, Mapping) else where
    found = []
    for item in items:
        if isinstance(item, str):
            key, sign, value = min((item.partition(s) for s in "=~"), key=lambda p: len(p[0]))
            if not (key and sign):
                raise ConfigError(f"{name}: expected COLUMN=VALUE, COLUMN~TEXT or "
                                  f"OP.PARAM=VALUE, got {item!r}")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            (key, value), sign = item, "="
        else:
            raise ConfigError(f"{name}: a condition is 'KEY=VALUE', 'KEY~TEXT' or a pair "
                              f"(KEY, VALUE), got {item!r}")
        found.append((str(key), sign, value))
    return found


def rows_where(manifest, where: Where, name: str = "where") -> np.ndarray:
    """Boolean mask of the manifest rows that meet every condition of ``where``.

    Parameters
    ----------
    manifest : pyarrow.Table
        A store's manifest (docs/store.md); ``ops`` holds per row a JSON list
        ``[{"op": name, param: value, ...}, ...]``.
    where : mapping, sequence, str, callable or None
        Conditions, all of which must hold:

        - ``{"label": 1, "bmode.dynamic_range_db": 40}`` (or pairs ``[("label", 1), ...]``):
          a manifest column equal to a value, or ``op.param``: the row applied op ``op`` with
          ``param`` equal to the value;
        - texts ``"label=1"``, ``"bmode.dynamic_range_db=40"``, ``"chain~rotate"``, as
          ``augengine preview --where`` takes them: ``=`` equal, ``~`` the text occurs in the
          value (its ``str``);
        - a function of a row (a dict of the columns) returning True to keep it.

        Numbers compare as numbers (``"40"`` matches ``40``), ``true``/``false`` as booleans.
        None or empty: every row.
    name : str
        What the messages call the filter (``--where`` on the command line).

    Returns
    -------
    ndarray (n_rows,) bool

    Raises
    ------
    ConfigError
        A malformed condition, or a key that is neither a column nor ``op.param`` (one line,
        with "did you mean").

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = pa.table({"label": [0, 1],
    ...                   "ops": ['[{"op": "bmode", "dynamic_range_db": 40}]',
    ...                           '[{"op": "bmode", "dynamic_range_db": 60}]']})
    >>> rows_where(table, [("bmode.dynamic_range_db", "40")]).tolist()
    [True, False]
    >>> rows_where(table, {"label": 1}).tolist(), rows_where(table, "label~0").tolist()
    ([False, True], [True, False])
    """
    n = manifest.num_rows
    if callable(where):
        return np.fromiter((bool(where(row)) for row in manifest.to_pylist()), bool, n)
    keep = np.ones(n, dtype=bool)
    for key, sign, value in conditions_of(where, name):
        op, dot, param = key.partition(".")
        if dot and op and param:
            cells = [_op_values(entry, op, param) for entry in manifest.column("ops").to_pylist()]
        elif key in manifest.column_names:
            cells = [[cell] for cell in manifest.column(key).to_pylist()]
        else:
            raise ConfigError(f"{name}: {unknown('manifest column', key, manifest.column_names)}"
                              " (or give op.param to match an op's parameter)")
        keep &= [any(_matches(cell, sign, value) for cell in values) for values in cells]
    return keep


def _op_values(entry: str | None, op: str, param: str) -> list:
    """The values ``param`` took in each application of ``op`` in a row's chain."""
    return [step[param] for step in (json.loads(entry) if entry else [])
            if step.get("op") == op and param in step]


def _matches(stored, sign: str, value) -> bool:
    if sign == "~":
        return str(value) in str(stored)
    return _comparable(stored) == _comparable(value)


def _comparable(value):
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return float(value.lower() == "true")
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
