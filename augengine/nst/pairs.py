"""Which content image is styled by which style reference(s): the augmentation plan.

The spec paper (seed 002) styles every content image with every image of its own class, itself
included: 348 benign and 452 malignant images give 348^2 + 452^2 = 121,104 + 204,304 = 325,408
augmented images (its Table 2 and classification section). Keeping pairs within a class keeps the
label of the result unambiguous.

A plan is an ``(M, 1 + K)`` int64 array: column 0 is the content image's index into ``labels``,
columns 1..K its style reference(s); one row is one generated image. Rules that enumerate pairs
return them content-major (content index ascending), references ascending within a row. An
explicit plan can come from a CSV of sample ids (:func:`read_pairs_csv`).
"""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

import numpy as np

from augengine.checks import check_choice, check_int
from augengine.errors import ConfigError, did_you_mean

RULES = ("within_class_all", "within_class_k", "explicit")

# Mixed into every per-content seed so these draws never coincide with another op's stream
# seeded from the same (job seed, sample index).
_STREAM = zlib.crc32(b"augengine.nst.plan_pairs")


def _classes(labels):
    """(class values, class id of every image, images per class) or ConfigError."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(
            f"labels must be a non-empty 1-D sequence of class labels, got shape {array.shape}"
        )
    try:
        return np.unique(array, return_inverse=True, return_counts=True)
    except TypeError as error:
        raise ConfigError(f"labels must be mutually comparable class labels: {error}") from None


def _label(value):
    """A numpy scalar as its Python value, for readable dict keys and messages."""
    return value.item() if isinstance(value, np.generic) else value


def _check_k(rule: str, k, classes, counts) -> int | None:
    if rule != "within_class_k":
        if k is not None:
            raise ConfigError(
                f"k is only used by rule 'within_class_k', got k={k!r} with rule {rule!r}"
            )
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"rule 'within_class_k' needs an integer k >= 1, got k={k!r}")
    smallest = int(np.argmin(counts))
    if k > counts[smallest] - 1:
        raise ConfigError(
            f"k={k} exceeds the {counts[smallest] - 1} other image(s) of class "
            f"{_label(classes[smallest])!r}"
        )
    return int(k)


def count_pairs(labels, rule: str = "within_class_all", k: int | None = None) -> dict:
    """Rows (generated images) per class that :func:`plan_pairs` returns, without building them.

    Parameters
    ----------
    labels : sequence (n,) of class labels
        One label per image (ints or strings), e.g. ``0`` benign / ``1`` malignant.
    rule : {"within_class_all", "within_class_k"}, optional
        ``"within_class_all"`` gives ``n_c^2`` rows for a class of ``n_c`` images (every image
        styled by every image of its class, itself included); ``"within_class_k"`` gives ``n_c``
        rows (one image per content image, styled by its k references together).
    k : int, optional
        References per content image; required by ``"within_class_k"`` only.

    Returns
    -------
    dict
        ``{class label: row count}`` in sorted label order (Python ints and labels).

    Examples
    --------
    The paper's data set (seed 002): 348 benign and 452 malignant images.

    >>> count_pairs([0] * 348 + [1] * 452)
    {0: 121104, 1: 204304}
    """
    check_choice(rule, "rule", RULES)
    if rule == "explicit":
        raise ConfigError(
            "count_pairs needs rule 'within_class_all' or 'within_class_k'; an explicit "
            "plan has len(pairs) rows"
        )
    classes, _, counts = _classes(labels)
    _check_k(rule, k, classes, counts)
    rows = counts.astype(np.int64) ** 2 if rule == "within_class_all" else counts
    return {_label(cls): int(n) for cls, n in zip(classes, rows, strict=True)}


def plan_pairs(
    labels,
    rule: str = "within_class_all",
    k: int | None = None,
    seed: int = 0,
    pairs=None,
    *,
    allow_cross_class: bool = False,
) -> np.ndarray:
    """Plan which style reference(s) each content image is styled with.

    Rules
    -----
    ``"within_class_all"`` (the paper's plan)
        Every content image with every image of its class, itself included: ``sum_c n_c^2`` rows of
        ``(content, style)``, content-major, style ascending. Check the size first with
        :func:`count_pairs`: the plan is ``16 sum_c n_c^2`` bytes.
    ``"within_class_k"``
        For each content image, ``k`` distinct references drawn from the other images of its class
        (never itself): ``n`` rows ``(content, ref_1, ..., ref_k)``, refs ascending, meant for the
        multi-reference style loss (Eqs. 7-9), one generated image per content image. For k
        single-reference images instead, :func:`split_references` the plan.
        Content ``i`` draws from its own ``numpy.random.Generator`` seeded with
        ``(seed, i, stream)``, so its references depend only on the seed, its index and its
        class, not on the other images, and any row can be replayed alone.
    ``"explicit"``
        The given ``pairs`` (``(M, 2)`` or ``(M, 1 + K)`` indices), validated and returned in the
        given order: every index in ``[0, n)``, every reference of a row in the content's class
        unless ``allow_cross_class``.

    Parameters
    ----------
    labels : sequence (n,) of class labels
        One label per image, ints or strings; indices in the plan refer to this order.
    rule : {"within_class_all", "within_class_k", "explicit"}, optional
    k : int, optional
        References per content image, ``1 <= k <= n_c - 1`` in every class; ``within_class_k`` only.
    seed : int, optional
        Non-negative job seed for ``within_class_k`` (default 0); unused by the other rules.
    pairs : array_like (M, 1 + K) of int, optional
        The plan for ``rule="explicit"``.
    allow_cross_class : bool, optional
        Let ``explicit`` rows pair images of different classes (default False).

    Returns
    -------
    ndarray (M, 1 + K), int64
        Column 0: content index; columns 1..K: style reference indices.

    Raises
    ------
    ConfigError
        Unknown rule, missing or unused ``k``/``pairs``, k larger than a class allows, a bad seed,
        or an explicit row that is out of range or crosses classes; one line naming the problem.

    Examples
    --------
    >>> plan_pairs([1, 0, 1])
    array([[0, 0],
           [0, 2],
           [1, 1],
           [2, 0],
           [2, 2]])
    >>> plan_pairs([0, 0, 0, 1, 1, 1], rule="within_class_k", k=2, seed=7).shape
    (6, 3)
    """
    check_choice(rule, "rule", RULES)
    classes, class_of, counts = _classes(labels)
    k = _check_k(rule, k, classes, counts)
    if rule != "explicit" and pairs is not None:
        raise ConfigError(f"pairs is only used by rule 'explicit', got pairs with rule {rule!r}")
    # Images of each class in ascending index order, classes one after another.
    members = np.argsort(class_of, kind="stable")
    first_member = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if rule == "within_class_all":
        return _all_within_class(class_of, counts, members, first_member)
    if rule == "within_class_k":
        return _k_within_class(class_of, counts, members, first_member, k, seed)
    return _explicit(pairs, classes, class_of, allow_cross_class)


def split_references(rows: np.ndarray) -> np.ndarray:
    """A plan of ``(M, 1 + K)`` rows as ``(M K, 2)`` single-reference rows ``(content, ref_j)``:
    K images per content image, one per reference, instead of one multi-reference image. Row
    order is kept, then reference order.

    Examples
    --------
    >>> split_references(np.array([[0, 3, 5], [1, 2, 4]])).tolist()
    [[0, 3], [0, 5], [1, 2], [1, 4]]
    """
    return np.column_stack([np.repeat(rows[:, 0], rows.shape[1] - 1), rows[:, 1:].reshape(-1)])


def _all_within_class(class_of, counts, members, first_member) -> np.ndarray:
    rows_per_content = counts[class_of].astype(np.int64)
    content = np.repeat(np.arange(class_of.size, dtype=np.int64), rows_per_content)
    block_start = np.cumsum(rows_per_content) - rows_per_content
    offset = np.arange(content.size, dtype=np.int64) - np.repeat(block_start, rows_per_content)
    style = members[np.repeat(first_member[class_of], rows_per_content) + offset]
    return np.stack([content, style.astype(np.int64)], axis=1)


def _k_within_class(class_of, counts, members, first_member, k, seed) -> np.ndarray:
    check_int(seed, "seed", 0)
    n = class_of.size
    # Position of every image within its class's member list.
    rank = np.empty(n, dtype=np.int64)
    rank[members] = np.arange(n) - np.repeat(first_member, counts)
    plan = np.empty((n, 1 + k), dtype=np.int64)
    plan[:, 0] = np.arange(n)
    for content in range(n):
        cls = class_of[content]
        rng = np.random.default_rng((int(seed), content, _STREAM))
        # Draw among the n_c - 1 others, then step over the content's own position.
        others = np.sort(rng.choice(counts[cls] - 1, size=k, replace=False))
        others += others >= rank[content]
        plan[content, 1:] = members[first_member[cls] + others]
    return plan


def _explicit(pairs, classes, class_of, allow_cross_class) -> np.ndarray:
    if pairs is None:
        raise ConfigError("rule 'explicit' needs pairs, an (M, 2) or (M, 1 + K) array of indices")
    array = np.asarray(pairs)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise ConfigError(
            f"pairs must be a non-empty (M, 2) or (M, 1 + K) array, got shape {array.shape}"
        )
    if array.dtype.kind not in "iu":
        raise ConfigError(f"pairs must hold integer indices, got dtype {array.dtype}")
    n = class_of.size
    outside = (array < 0) | (array >= n)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise ConfigError(
            f"pairs row {row}, column {column}: index {array[row, column]} is out of range [0, {n})"
        )
    array = array.astype(np.int64)
    if not allow_cross_class:
        _refuse_crossing(array, classes, class_of, lambda row, column: f"pairs row {row}",
                         lambda image: f"image {image}", "pass allow_cross_class=True to allow it")
    return array


def _refuse_crossing(rows, classes, class_of, where, name, remedy: str) -> None:
    """ConfigError for the first reference of ``rows`` outside its content image's class:
    ``where(row, column)`` locates it, ``name(index)`` names an image, ``remedy`` says how to
    allow it."""
    crossing = class_of[rows[:, 1:]] != class_of[rows[:, :1]]
    if not crossing.any():
        return
    row, column = (int(i) for i in np.argwhere(crossing)[0])
    content, style = rows[row, 0], rows[row, column + 1]
    raise ConfigError(
        f"{where(row, column + 1)}: style {name(style)} "
        f"(class {_label(classes[class_of[style]])!r}) is not in the class of content "
        f"{name(content)} ({_label(classes[class_of[content]])!r}); {remedy}"
    )


#: The two header forms of a pairing file.
PAIRS_HEADER = "content_id,style_id (or content_id,style_id_1,...,style_id_K)"


def _references_in_header(where: str, header: list[str]) -> int:
    """K, the number of style columns a pairing file's header names, or ConfigError."""
    numbered = [f"style_id_{j}" for j in range(1, len(header))]
    if len(header) >= 2 and header[0] == "content_id" and (
        header[1:] == ["style_id"] or header[1:] == numbered
    ):
        return len(header) - 1
    raise ConfigError(f"{where}: the header must be {PAIRS_HEADER}, got {','.join(header)!r}")


def _csv_records(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank records of a CSV file as ``(line number, stripped fields)``, or ConfigError."""
    try:
        # utf-8-sig: spreadsheets often start a CSV with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: pairing file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the pairing file ({error})") from None
    reader = csv.reader(io.StringIO(text))
    records = []
    try:
        for fields in reader:
            if any(field.strip() for field in fields):
                records.append((reader.line_num, [field.strip() for field in fields]))
    except csv.Error as error:
        raise ConfigError(f"{path} line {reader.line_num}: not valid CSV ({error})") from None
    return records


def _unknown_id(where: str, column: str, value: str, index: dict[str, int]) -> ConfigError:
    if not value:
        return ConfigError(f"{where}: {column} is empty")
    hint = did_you_mean(value, index)
    hint = f" ({hint})" if hint else ""
    return ConfigError(f"{where}: {column} {value!r} is not a sample id of the job's inputs{hint}")


def read_pairs_csv(
    path, sample_ids, labels, *, allow_cross_class: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read an explicit plan: a CSV naming, per generated image, its content and style image(s).

    Format
    ------
    A header, then one row per generated image, in the order the images are to be made::

        content_id,style_id              content_id,style_id_1,style_id_2,style_id_3
        benign/12:0,benign/40:0          benign/12:0,benign/40:0,benign/7:0,benign/3:0
        benign/12:0,benign/41:0          malignant/2:0,malignant/9:0,malignant/1:0,malignant/5:0

    Every field is a ``sample_id`` of the job's inputs (for ``reader: store``, the manifest's
    ``sample_id``, e.g. ``t0:0``). Fields are stripped of surrounding spaces; blank lines are
    skipped; a leading byte-order mark is ignored. A row with K references is one multi-reference
    image (Eqs. 7-9) or, with ``references: single``, K single-reference images.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    sample_ids : sequence (n,) of str
        The inputs' sample ids; returned indices refer to this order.
    labels : sequence (n,) of class labels
        One per input (named in messages, so readable names are best: ``"benign"``).
    allow_cross_class : bool, optional
        Accept references of another class than their content image (default False).

    Returns
    -------
    rows : ndarray (M, 1 + K), int64
        Column 0 the content's index into ``sample_ids``, columns 1..K the references'; in file
        order.
    lines : ndarray (M,), int64
        The file line of each row (1-based, the header is line 1 in a file without blank lines).

    Raises
    ------
    ConfigError
        One line naming the file and line: a missing, unreadable or empty file, a bad header, a
        ragged row, an empty field or unknown sample id (with the closest known id), a reference
        outside its content's class.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pairs.csv"
    >>> _ = path.write_text("content_id,style_id\\na,b\\nb,a\\n")
    >>> rows, lines = read_pairs_csv(path, ["a", "b", "c"], ["benign"] * 3)
    >>> rows.tolist(), lines.tolist()
    ([[0, 1], [1, 0]], [2, 3])
    """
    path = Path(path)
    records = _csv_records(path)
    if not records:
        raise ConfigError(f"{path}: the pairing file is empty; expected the header {PAIRS_HEADER} "
                          "and one row per generated image")
    header_line, header = records[0]
    k = _references_in_header(f"{path} line {header_line}", header)
    if len(records) == 1:
        raise ConfigError(f"{path}: no rows after the header (line {header_line})")
    index = {str(sample_id): i for i, sample_id in enumerate(sample_ids)}
    rows = np.empty((len(records) - 1, 1 + k), np.int64)
    lines = np.empty(len(records) - 1, np.int64)
    for r, (line, fields) in enumerate(records[1:]):
        where = f"{path} line {line}"
        if len(fields) != 1 + k:
            raise ConfigError(f"{where}: {len(fields)} field(s), the header has {1 + k} "
                              f"({','.join(header)})")
        for column, (name, value) in enumerate(zip(header, fields, strict=True)):
            if value not in index:
                raise _unknown_id(where, name, value, index)
            rows[r, column] = index[value]
        lines[r] = line
    if not allow_cross_class:
        classes, class_of, _ = _classes(labels)
        _refuse_crossing(rows, classes, class_of,
                         lambda row, column: f"{path} line {lines[row]}, {header[column]}",
                         lambda image: repr(sample_ids[image]),
                         "set allow_cross_class: true to allow it")
    return rows, lines
