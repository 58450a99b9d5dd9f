"""Which content image is styled by which style reference(s): the augmentation plan.

The spec paper (seed 002) styles every content image with every image of its own class, itself
included: 348 benign and 452 malignant images give 348^2 + 452^2 = 121,104 + 204,304 = 325,408
augmented images (its Table 2 and classification section). Keeping pairs within a class keeps the
label of the result unambiguous.

A plan is an ``(M, 1 + K)`` int64 array: column 0 is the content image's index into ``labels``,
columns 1..K its style reference(s); one row is one generated image. Rules that enumerate pairs
return them content-major (content index ascending), references ascending within a row.
"""

from __future__ import annotations

import zlib

import numpy as np

from augengine.errors import ConfigError

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


def _check_rule(rule) -> None:
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")


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
    _check_rule(rule)
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
        single-reference images instead, use the rows ``(content, ref_j)`` of each column j.
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
    _check_rule(rule)
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


def _all_within_class(class_of, counts, members, first_member) -> np.ndarray:
    rows_per_content = counts[class_of].astype(np.int64)
    content = np.repeat(np.arange(class_of.size, dtype=np.int64), rows_per_content)
    block_start = np.cumsum(rows_per_content) - rows_per_content
    offset = np.arange(content.size, dtype=np.int64) - np.repeat(block_start, rows_per_content)
    style = members[np.repeat(first_member[class_of], rows_per_content) + offset]
    return np.stack([content, style.astype(np.int64)], axis=1)


def _k_within_class(class_of, counts, members, first_member, k, seed) -> np.ndarray:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
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
        crossing = class_of[array[:, 1:]] != class_of[array[:, :1]]
        if crossing.any():
            row, column = np.argwhere(crossing)[0]
            content, style = array[row, 0], array[row, column + 1]
            raise ConfigError(
                f"pairs row {row}: style image {style} "
                f"(class {_label(classes[class_of[style]])!r}) "
                f"is not in the class of content image {content} "
                f"({_label(classes[class_of[content]])!r}); pass allow_cross_class=True to allow it"
            )
    return array
