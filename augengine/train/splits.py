"""Leak-free train/val/test splits: by source (and by group), never by augmented sample.

Augmentation multiplies one scan into many variants (three dynamic ranges x three ROI margins x
flips, style transfers, ...). Splitting those variants at random puts near-copies of one lesion
on both sides and inflates every test metric, so the unit of splitting is the *source* (all scans
of one lesion, ``Sample.source_id``) and, when known, the *group* (e.g. the patient): Byra et al.
evaluate with patient-specific folds for exactly this reason. Split files hold source ids only;
:func:`assign_split` maps any manifest (originals or augmented) onto them.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from augengine.checks import check_int, check_number
from augengine.errors import ConfigError, InputError
from augengine.manifest import default_augmentation_ops, originals_only  # noqa: F401

#: Split names, in the order of ``fractions``.
SPLITS = ("train", "val", "test")

#: Re-exported from :mod:`augengine.manifest`, their home: what an original is is manifest
#: knowledge, shared with the store reader below this package.
AUGMENTATION_OPS = default_augmentation_ops()


def _column(name: str, values) -> list:
    if hasattr(values, "to_pylist"):  # pyarrow Array / ChunkedArray
        values = values.to_pylist()
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def _source_ids(name: str, values) -> list[str]:
    ids = _column(name, values)
    for row, source in enumerate(ids):
        if source is None or source == "":
            raise InputError(f"{name}[{row}] is empty: every sample needs a source id")
    return [str(source) for source in ids]


def _check_fractions(fractions) -> tuple[float, float, float]:
    values = tuple(fractions) if isinstance(fractions, Iterable) else (fractions,)
    if len(values) != len(SPLITS):
        raise ConfigError(f"fractions must give (train, val, test), got {len(values)} values")
    values = tuple(check_number(value, f"fractions: {name}", nonnegative=True)
                   for name, value in zip(SPLITS, values))
    if abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(f"fractions must sum to 1 (train + val + test), got {sum(values):g}")
    return values


def _per_source(name: str, ids: list[str], values) -> dict[str, object]:
    column = _column(name, values)
    if len(column) != len(ids):
        raise InputError(f"{name} has {len(column)} entries but source_ids has {len(ids)}")
    value_of: dict[str, object] = {}
    for source, value in zip(ids, column):
        if value_of.setdefault(source, value) != value:
            raise InputError(f"source {source!r} has two {name}: {value_of[source]!r} and "
                             f"{value!r}; all samples of one source must agree")
    return value_of


def split_by_source(source_ids, fractions=(0.70, 0.15, 0.15), seed: int = 0, groups=None,
                    labels=None) -> dict[str, list[str]]:
    """Split sources (and groups of sources) into train/val/test, stratified by label.

    Every source id lands in exactly one split, and so does every source of one group, so no
    sample, variant, lesion or patient is seen on two sides.

    Rounding: sources are dealt out one *unit* (a group, or a source with no group) at a time, per
    label in a seeded random order, each unit to the split whose quota ``f_k * n_label`` (sources
    of that label) is furthest from met; ties go to the split furthest from its overall quota
    ``f_k * n``, then to train, val, test in that order. With one source per unit this is
    largest-remainder rounding: each split gets ``floor`` or ``ceil`` of ``f_k * n_label``
    sources of every label, so each split keeps the class ratio up to that rounding. A unit of
    ``g`` sources can overshoot a quota by less than ``g``. A split with fraction 0 stays empty.

    Parameters
    ----------
    source_ids : sequence of str, length n_rows
        Source id per row, e.g. the ``source_id`` column of a manifest (repeats allowed: one row
        per sample or variant). Ids are compared as strings.
    fractions : (float, float, float)
        Fractions of sources for train, val, test; each >= 0, summing to 1.
    seed : int
        Seed of the shuffle (``numpy.random.default_rng``), >= 0. Same inputs and seed, same
        splits, whatever the row order.
    groups : sequence, length n_rows, optional
        Group per row (patient id, lesion id); ``None`` where unknown, making that source its
        own group. All rows of one source must give the same group.
    labels : sequence, length n_rows, optional
        Class label per row, for stratification. All rows of one source must agree; a group
        with mixed labels is stratified by its most common label (counted over its sources,
        ties to the first label in sorted order).

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, sorted lists of source ids.

    Raises
    ------
    ConfigError
        Bad ``fractions`` or ``seed``.
    InputError
        Empty ``source_ids``, an empty id, misaligned ``groups``/``labels``, or a source with two
        groups or two labels.

    Examples
    --------
    >>> ids = [f"lesion{i}" for i in range(10) for _ in range(3)]     # 3 variants per source
    >>> splits = split_by_source(ids, seed=1)
    >>> [len(splits[name]) for name in ("train", "val", "test")]       # 7, 1.5, 1.5 rounded
    [7, 2, 1]
    """
    shares = _check_fractions(fractions)
    check_int(seed, "seed", 0)
    ids = _source_ids("source_ids", source_ids)
    if not ids:
        raise InputError("source_ids is empty: nothing to split")
    group_of = _per_source("groups", ids, groups) if groups is not None else {}
    label_of = _per_source("labels", ids, labels) if labels is not None else {}

    units: dict[tuple[str, str], list[str]] = defaultdict(list)
    for source in sorted(set(ids)):
        group = group_of.get(source)
        units[("group", str(group)) if group is not None else ("source", source)].append(source)

    strata: dict[object, list[tuple[str, str]]] = defaultdict(list)
    for key in sorted(units):
        counts = Counter(label_of.get(source) for source in units[key])
        top = max(counts.values())
        strata[min((lab for lab, c in counts.items() if c == top), key=repr)].append(key)

    rng = np.random.default_rng(seed)
    n_total = len(set(ids))
    overall = [0] * len(SPLITS)
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for label in sorted(strata, key=repr):
        keys = strata[label]
        n_label = sum(len(units[key]) for key in keys)
        assigned = [0] * len(SPLITS)
        for index in rng.permutation(len(keys)):
            members = units[keys[index]]
            # Rounded so that float noise in f_k * n cannot decide a tie.
            best = max(range(len(SPLITS)), key=lambda k: (
                round(shares[k] * n_label - assigned[k], 9),
                round(shares[k] * n_total - overall[k], 9), -k))
            assigned[best] += len(members)
            overall[best] += len(members)
            splits[SPLITS[best]].extend(members)
    return {name: sorted(members) for name, members in splits.items()}


def _check_splits(splits, where: str) -> dict[str, str]:
    """Validate a splits mapping and return ``{source id: split name}``."""
    if not isinstance(splits, Mapping) or set(splits) != set(SPLITS):
        found = sorted(splits) if isinstance(splits, Mapping) else type(splits).__name__
        raise InputError(f"{where}: expected exactly the keys train, val, test; got {found}")
    split_of: dict[str, str] = {}
    for name in SPLITS:
        members = splits[name]
        if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
            raise InputError(f"{where}: {name} must be a list of source ids, "
                             f"got {type(members).__name__}")
        for source in members:
            if not isinstance(source, str) or not source:
                raise InputError(f"{where}: {name} holds {source!r}, not a source id string")
            if source in split_of:
                raise InputError(f"{where}: source {source!r} is in both {split_of[source]} "
                                 f"and {name}")
            split_of[source] = name
    return split_of


def assign_split(manifest_source_ids, splits: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Name the split of every manifest row from its source id.

    Parameters
    ----------
    manifest_source_ids : sequence of str, length n_rows
        Source id per row (e.g. ``table.column("source_id")``).
    splits : mapping
        ``{"train": [...], "val": [...], "test": [...]}`` as from :func:`split_by_source` or
        :func:`load_splits`.

    Returns
    -------
    ndarray of str (``<U5``), shape (n_rows,)
        ``"train"``, ``"val"`` or ``"test"`` per row; ``names == "train"`` is a row mask.

    Raises
    ------
    InputError
        A row whose source is in no split (the split file is stale for this manifest), or a
        source listed in two splits.

    Examples
    --------
    >>> assign_split(["a", "b", "a"], {"train": ["a"], "val": ["b"], "test": []}).tolist()
    ['train', 'val', 'train']
    """
    split_of = _check_splits(splits, "splits")
    ids = _source_ids("manifest_source_ids", manifest_source_ids)
    missing = [source for source in ids if source not in split_of]
    if missing:
        raise InputError(f"{len(missing)} of {len(ids)} manifest rows have a source in no split, "
                         f"e.g. {missing[0]!r}: the splits were made for another manifest")
    return np.array([split_of[source] for source in ids], dtype="<U5")


def summarize_splits(splits: Mapping[str, Sequence[str]], source_ids, labels=None) -> dict:
    """Count sources, samples and (optionally) samples per label in each split.

    Parameters
    ----------
    splits : mapping
        ``{"train": [...], "val": [...], "test": [...]}``.
    source_ids : sequence of str, length n_rows
        Source id per manifest row.
    labels : sequence, length n_rows, optional
        Label per row.

    Returns
    -------
    dict
        ``{split: {"sources": int, "samples": int, "samples_per_label": {str(label): n}}}``
        (``samples_per_label`` only with ``labels``); JSON-ready, the ``splits_summary`` of
        :func:`augengine.train.report.write_report`.

    Examples
    --------
    >>> splits = {"train": ["a"], "val": ["b"], "test": []}
    >>> summary = summarize_splits(splits, ["a", "a", "b"], labels=[1, 1, 0])
    >>> summary["train"]
    {'sources': 1, 'samples': 2, 'samples_per_label': {'1': 2}}
    """
    names = assign_split(source_ids, splits)
    summary = {name: {"sources": len(splits[name]), "samples": int(np.sum(names == name))}
               for name in SPLITS}
    if labels is not None:
        column = _column("labels", labels)
        if len(column) != len(names):
            raise InputError(f"labels has {len(column)} entries but source_ids has {len(names)}")
        for name in SPLITS:
            counts = Counter(str(label) for label, row in zip(column, names) if row == name)
            summary[name]["samples_per_label"] = dict(sorted(counts.items()))
    return summary


def save_splits(path, splits: Mapping[str, Sequence[str]]) -> Path:
    """Write splits as JSON, exactly ``{"train": [ids], "val": [ids], "test": [ids]}``.

    Lists are sorted, so the same splits give the same bytes. Returns the path written.
    """
    _check_splits(splits, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {name: sorted(splits[name]) for name in SPLITS}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def load_splits(path) -> dict[str, list[str]]:
    """Read a splits file written by :func:`save_splits`; InputError naming the file if bad.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "splits.json")
    >>> load_splits(save_splits(path, {"train": ["b", "a"], "val": [], "test": ["c"]}))
    {'train': ['a', 'b'], 'val': [], 'test': ['c']}
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read splits file ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    _check_splits(document, str(path))
    return {name: list(document[name]) for name in SPLITS}
