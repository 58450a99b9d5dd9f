"""A store's manifest: its schema, one typed row, the row filters every reader shares, and
which rows are originals.

Here, below :mod:`augengine.store`, :mod:`augengine.sources`, :mod:`augengine.train`,
:mod:`augengine.preview` and :mod:`augengine.ray_data`, so that the runner writes rows of one
shape (:class:`ManifestRow`); ``open_store(...).where(...)``, ``StoreDataset(where=...)``,
``ray_data.read_store(where=...)``, ``augengine preview --where`` and ``augengine train
--train-where`` select rows by one rule (:func:`rows_where`, docs/python.md "Selecting rows");
and a store read as a source, a split and an evaluation agree on what an original is
(:func:`originals_only`).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from augengine.errors import ConfigError, InputError, unknown

#: What a ``where`` may be: see :func:`rows_where`.
Where = (Mapping | list | tuple | str | Callable[[dict], bool] | None)

#: One row per written sample. Changing it changes the on-disk format: bump
#: :data:`augengine.store.SCHEMA_VERSION` with it.
MANIFEST_SCHEMA = pa.schema([
    ("index", pa.int64()),
    ("sample_id", pa.string()),
    ("input_id", pa.string()),
    ("source_id", pa.string()),
    ("source_path", pa.string()),
    ("reader", pa.string()),
    ("label", pa.int8()),
    ("variant", pa.int32()),
    ("chain", pa.string()),
    ("ops", pa.string()),
    ("seed", pa.int64()),
    ("shard", pa.int32()),
    ("has_mask", pa.bool_()),
    ("sha256", pa.string()),
    ("mask_sha256", pa.string()),
])


@dataclass(frozen=True, kw_only=True)
class ManifestRow:
    """One written sample, field for field the columns of :data:`MANIFEST_SCHEMA` (a test keeps
    the two in step).

    Rows travel from the workers to the driver and into the journal as plain dicts
    (:meth:`as_dict`), the form ``pyarrow.Table.from_pylist`` and the journal reader use.

    Attributes
    ----------
    index : int
        Row of the store's arrays.
    sample_id : str
        ``"<input_id>:<variant>"``: unique in the store.
    input_id, source_id, source_path, reader : str
        The input sample, the lesion/source it belongs to (splits are by source), its file and
        the reader that read it.
    label : int
        Class label (:data:`augengine.sources.LABELS`).
    variant : int
        Which of the job's chains made the sample.
    chain : str
        The chain as written in the job (:func:`augengine.pipeline.describe_chain`).
    ops : str
        JSON list of the ops applied, with their concrete parameters: ``[{"op": name, ...}]``.
    seed : int
        The sample's seed (:func:`augengine.pipeline.sample_seed`).
    shard : int
        ``index // shard_size``.
    has_mask : bool
    sha256, mask_sha256 : str, str or None
        :func:`augengine.store.image_sha256` of the image and of the mask (None without one).
    """

    index: int
    sample_id: str
    input_id: str
    source_id: str
    source_path: str
    reader: str
    label: int
    variant: int
    chain: str
    ops: str
    seed: int
    shard: int
    has_mask: bool
    sha256: str
    mask_sha256: str | None

    def as_dict(self) -> dict:
        """The row as ``{column: value}`` in schema order."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


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


def default_augmentation_ops() -> frozenset[str]:
    """Ops that make a variant rather than an original: the op registry's augmentations
    (:attr:`augengine.pipeline.OpSpec.augmentation`), plus style transfer (not a per-sample op).

    Reconstruction (``bmode``), ``roi_crop``, ``scan_convert``, ``resize`` and ``identity`` are
    not among them.
    """
    # Imported here: the store and the store reader use this module, and the op registry (which
    # pulls in every op) is needed only when the originals are asked for.
    from augengine.pipeline import OPS

    return frozenset({name for name, spec in OPS.items() if spec.augmentation} | {"nst"})


def _is_original(entry, row: int, augmentation_ops: frozenset[str]) -> bool:
    if entry is None or entry == "":
        return True
    if isinstance(entry, str):
        try:
            entry = json.loads(entry)
        except json.JSONDecodeError as error:
            raise InputError(f"manifest row {row}: ops is not valid JSON ({error.msg})") from None
    if not isinstance(entry, list) or not all(isinstance(s, dict) and "op" in s for s in entry):
        raise InputError(f"manifest row {row}: ops must be a JSON list of {{\"op\": name, ...}}, "
                         f"got {str(entry)[:80]}")
    return not any(step["op"] in augmentation_ops for step in entry)


def originals_only(manifest, augmentation_ops: Iterable[str] | None = None,
                   ops_column: str = "ops"):
    """Keep the manifest rows that are originals: their op chain has no augmentation op.

    Reconstruction (``bmode`` at any dynamic range), ``roi_crop``, ``scan_convert``, ``resize``
    and ``identity`` keep a row an original; any op in ``augmentation_ops`` makes it a variant.
    Use it to evaluate on un-augmented test images.

    Parameters
    ----------
    manifest : pyarrow.Table or dict of columns
        ``ops_column`` holds, per row, a JSON list ``[{"op": name, ...}, ...]`` (or the parsed
        list; null/empty means no op). Dict columns may be lists or NumPy arrays, all of one
        length.
    augmentation_ops : iterable of str
        Op names that make a variant; default :func:`default_augmentation_ops`.
    ops_column : str
        Name of the op-chain column.

    Returns
    -------
    pyarrow.Table or dict
        Same type as ``manifest``, only the original rows, in their order.

    Examples
    --------
    >>> manifest = {"sample_id": ["a", "a-flip"],
    ...             "ops": ['[{"op": "bmode", "dynamic_range_db": 50}]',
    ...                     '[{"op": "bmode", "dynamic_range_db": 50}, {"op": "flip"}]']}
    >>> originals_only(manifest)
    {'sample_id': ['a'], 'ops': ['[{"op": "bmode", "dynamic_range_db": 50}]']}
    """
    augmentation_ops = frozenset(default_augmentation_ops() if augmentation_ops is None
                                 else augmentation_ops)
    if hasattr(manifest, "column_names") and hasattr(manifest, "filter"):  # pyarrow.Table
        columns = manifest.column_names
    elif isinstance(manifest, Mapping):
        columns = list(manifest)
    else:
        raise InputError(f"manifest must be a pyarrow Table or a dict of columns, "
                         f"got {type(manifest).__name__}")
    if ops_column not in columns:
        raise InputError(f"manifest has no {ops_column!r} column (columns: {', '.join(columns)})")
    entries = manifest[ops_column]
    entries = entries.to_pylist() if hasattr(entries, "to_pylist") else list(entries)
    keep = np.array([_is_original(entry, row, augmentation_ops)
                     for row, entry in enumerate(entries)], dtype=bool)
    if not isinstance(manifest, Mapping):
        return manifest.filter(pa.array(keep))
    result = {}
    for name, values in manifest.items():
        if len(values) != keep.size:
            raise InputError(f"manifest column {name!r} has {len(values)} rows, "
                             f"{ops_column!r} has {keep.size}")
        result[name] = values[keep] if isinstance(values, np.ndarray) else \
            [value for value, kept in zip(values, keep) if kept]
    return result
