"""Augmentation plans: the paper's within-class all-pairs count, k-reference draws, explicit."""

from __future__ import annotations

import numpy as np
import pytest

from augengine.errors import ConfigError
from augengine.nst import count_pairs, plan_pairs
from augengine.nst.pairs import read_pairs_csv, split_references

PAPER_LABELS = ["benign"] * 348 + ["malignant"] * 452


@pytest.mark.parametrize(
    "labels",
    [
        PAPER_LABELS,
        [0] * 348 + [1] * 452,
        np.random.default_rng(3).permutation([0] * 348 + [1] * 452),
    ],
    ids=["strings", "ints", "shuffled"],
)
def test_within_class_all_reproduces_the_papers_325408(labels):
    counts = count_pairs(labels)
    assert sorted(counts.values()) == [121_104, 204_304], (
        f"expected 348^2 and 452^2 rows, got {counts}"
    )
    plan = plan_pairs(labels)
    assert plan.shape == (325_408, 2) and plan.dtype == np.int64, (
        f"800 images: expected (325408, 2) int64 = 348^2 + 452^2, got {plan.shape} {plan.dtype}"
    )
    labels = np.asarray(labels)
    assert np.all(labels[plan[:, 0]] == labels[plan[:, 1]]), "every pair must stay within its class"
    key = plan[:, 0] * len(labels) + plan[:, 1]
    assert np.all(np.diff(key) > 0), "rows must be content-major, style ascending, none repeated"


def test_within_class_all_small_plan_content_major_style_ascending():
    plan = plan_pairs([1, 0, 1, 0, 0])
    expected = np.array(
        [
            [0, 0],
            [0, 2],
            [1, 1],
            [1, 3],
            [1, 4],
            [2, 0],
            [2, 2],
            [3, 1],
            [3, 3],
            [3, 4],
            [4, 1],
            [4, 3],
            [4, 4],
        ]
    )
    assert np.array_equal(plan, expected), (
        f"labels [1, 0, 1, 0, 0]: expected\n{expected}\ngot\n{plan}"
    )
    assert count_pairs([1, 0, 1, 0, 0]) == {0: 9, 1: 4}, (
        "classes of 3 and 2 images give 9 and 4 pairs"
    )


def test_within_class_k_draws_distinct_same_class_references_never_self():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 4)[np.random.default_rng(0).permutation(16)]
    plan = plan_pairs(labels, rule="within_class_k", k=3, seed=11)
    assert plan.shape == (16, 4) and plan.dtype == np.int64, (
        f"16 images, k=3: expected (16, 4) int64, got {plan.shape}"
    )
    assert np.array_equal(plan[:, 0], np.arange(16)), (
        "column 0 must list every content image in order"
    )
    for row in plan:
        content, refs = row[0], row[1:]
        assert content not in refs, f"content {content} must not be its own reference: {refs}"
        assert np.all(labels[refs] == labels[content]), (
            f"content {content}: references {refs} leave its class"
        )
        assert np.all(np.diff(refs) > 0), (
            f"content {content}: references {refs} must be distinct and ascending"
        )
    assert count_pairs(labels, "within_class_k", k=3) == {0: 7, 1: 5, 2: 4}, (
        "one row per content image"
    )


def test_within_class_k_is_replayable_per_content_image():
    labels = [0] * 40 + [1] * 40
    plan = plan_pairs(labels, rule="within_class_k", k=5, seed=4)
    assert np.array_equal(plan, plan_pairs(labels, rule="within_class_k", k=5, seed=4)), (
        "same seed, same plan"
    )
    other = plan_pairs(labels, rule="within_class_k", k=5, seed=5)
    assert not np.array_equal(plan, other), (
        "another seed must give another plan (40-image classes, k=5)"
    )
    # Content 3's draw depends only on (seed, 3, its class): appending images of the other class
    # leaves it unchanged.
    grown = plan_pairs(labels + [1] * 10, rule="within_class_k", k=5, seed=4)
    assert np.array_equal(grown[:40], plan[:40]), (
        "rows of class 0 must not change when class 1 grows"
    )


def test_within_class_k_uses_every_other_image_when_k_is_class_size_minus_one():
    plan = plan_pairs([0, 0, 0, 1, 1], rule="within_class_k", k=1, seed=0)
    assert plan[3, 1] == 4 and plan[4, 1] == 3, (
        f"class 1 has two images, each must reference the other: {plan}"
    )
    full = plan_pairs([0, 0, 0], rule="within_class_k", k=2, seed=9)
    assert np.array_equal(full, [[0, 1, 2], [1, 0, 2], [2, 0, 1]]), (
        f"k = n_c - 1 takes all others: {full}"
    )


def test_explicit_pairs_validated_and_returned_as_given():
    labels = ["b", "m", "b", "m"]
    plan = plan_pairs(labels, rule="explicit", pairs=[[2, 0], [1, 3], [0, 0]])
    assert plan.dtype == np.int64 and plan.tolist() == [[2, 0], [1, 3], [0, 0]], (
        f"explicit order kept: {plan}"
    )
    multi = plan_pairs(labels, rule="explicit", pairs=np.array([[1, 3, 1]], dtype=np.int32))
    assert multi.dtype == np.int64 and multi.shape == (1, 3), "(M, 1 + K) rows are accepted"
    crossing = plan_pairs(labels, rule="explicit", pairs=[[0, 1]], allow_cross_class=True)
    assert crossing.tolist() == [[0, 1]], (
        "allow_cross_class=True must accept a benign/malignant pair"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(
            dict(labels=[0, 1], rule="all_pairs"),
            "rule must be one of within_class_all, within_class_k, explicit, got 'all_pairs'",
            id="rule",
        ),
        pytest.param(
            dict(labels=[], rule="within_class_all"),
            r"labels must be a non-empty 1-D sequence",
            id="no_labels",
        ),
        pytest.param(
            dict(labels=[[0, 1]], rule="within_class_all"), r"got shape \(1, 2\)", id="labels_2d"
        ),
        pytest.param(
            dict(labels=[0, 0], rule="within_class_all", k=2),
            "k is only used by rule 'within_class_k'",
            id="k_unused",
        ),
        pytest.param(
            dict(labels=[0, 0], rule="within_class_all", pairs=[[0, 1]]),
            "pairs is only used by rule 'explicit'",
            id="pairs_unused",
        ),
        pytest.param(
            dict(labels=[0, 0], rule="within_class_k"),
            r"needs an integer k >= 1, got k=None",
            id="k_missing",
        ),
        pytest.param(
            dict(labels=[0, 0], rule="within_class_k", k=True),
            "needs an integer k >= 1",
            id="k_bool",
        ),
        pytest.param(
            dict(labels=["b", "b", "b", "m", "m"], rule="within_class_k", k=2),
            "k=2 exceeds the 1 other image\\(s\\) of class 'm'",
            id="k_too_large",
        ),
        pytest.param(
            dict(labels=[0, 0, 0], rule="within_class_k", k=1, seed=-1),
            "seed must be an integer >= 0, got -1",
            id="seed_negative",
        ),
        pytest.param(
            dict(labels=[0, 0, 0], rule="within_class_k", k=1, seed=None),
            "seed must be an integer >= 0, got None",
            id="seed_none",
        ),
        pytest.param(
            dict(labels=[0, 0], rule="explicit"), "rule 'explicit' needs pairs", id="pairs_missing"
        ),
        pytest.param(
            dict(labels=[0, 0], rule="explicit", pairs=[0, 1]), r"got shape \(2,\)", id="pairs_1d"
        ),
        pytest.param(
            dict(labels=[0, 0], rule="explicit", pairs=[[0.0, 1.0]]),
            "integer indices, got dtype float64",
            id="pairs_float",
        ),
        pytest.param(
            dict(labels=[0] * 800, rule="explicit", pairs=[[0, 1], [3, 812]]),
            r"pairs row 1, column 1: index 812 is out of range \[0, 800\)",
            id="out_of_range",
        ),
        pytest.param(
            dict(labels=[0, 0, 1], rule="explicit", pairs=[[0, 1], [2, 0]]),
            r"pairs row 1: style image 0 \(class 0\) is not in the class of content image 2 \(1\)",
            id="cross_class",
        ),
    ],
)
def test_bad_arguments_raise_one_line_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        plan_pairs(**kwargs)
    assert "\n" not in str(info.value), f"error must be one line, got {str(info.value)!r}"


def test_count_pairs_rejects_explicit_and_bad_k():
    with pytest.raises(ConfigError, match="an explicit plan has len\\(pairs\\) rows"):
        count_pairs([0, 1], "explicit")
    with pytest.raises(ConfigError, match="k=3 exceeds the 2 other image"):
        count_pairs([0, 0, 0], "within_class_k", k=3)


IDS = ["b0:0", "b1:0", "b2:0", "m0:0", "m1:0"]
NAMES = ["benign"] * 3 + ["malignant"] * 2


def test_read_pairs_csv_keeps_file_order_with_k_reference_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    # A spreadsheet's byte-order mark, padded fields and a blank line are tolerated.
    path.write_text("\ufeffcontent_id, style_id_1, style_id_2\nb2:0,b0:0,b1:0\n\n"
                    "m1:0 , m0:0,m1:0\nb0:0,b2:0,b2:0\n", encoding="utf-8")
    rows, lines = read_pairs_csv(path, IDS, NAMES)
    assert rows.dtype == np.int64 and rows.tolist() == [[2, 0, 1], [4, 3, 4], [0, 2, 2]], (
        f"rows in file order, ids mapped to input positions: {rows.tolist()}"
    )
    assert lines.tolist() == [2, 4, 5], f"file lines of the rows (line 3 is blank): {lines}"


def test_read_pairs_csv_allows_cross_class_only_when_asked(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("content_id,style_id\nb0:0,m0:0\n")
    with pytest.raises(ConfigError, match="set allow_cross_class: true"):
        read_pairs_csv(path, IDS, NAMES)
    rows, _ = read_pairs_csv(path, IDS, NAMES, allow_cross_class=True)
    assert rows.tolist() == [[0, 3]]


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("", r"pairs.csv: the pairing file is empty; expected the header", id="empty"),
        pytest.param("\n \n", "the pairing file is empty", id="blank"),
        pytest.param("content_id,style_id\n", r"no rows after the header \(line 1\)",
                     id="header_only"),
        pytest.param("content,style\nb0:0,b1:0\n",
                     "line 1: the header must be content_id,style_id .*got 'content,style'",
                     id="bad_header"),
        pytest.param("content_id,style_id_1,style_id_3\nb0:0,b1:0,b2:0\n",
                     "line 1: the header must be", id="header_gap"),
        pytest.param("content_id,style_id\nb0:0,b1:0\nb1:0,b0:0,b2:0\n",
                     r"line 3: 3 field\(s\), the header has 2 \(content_id,style_id\)",
                     id="ragged"),
        pytest.param("content_id,style_id\nb0:0,b1:0\nb1:0\n", r"line 3: 1 field\(s\)",
                     id="short_row"),
        pytest.param("content_id,style_id\nb0:0,b1\n",
                     r"line 2: style_id 'b1' is not a sample id of the job's inputs "
                     r"\(did you mean 'b1:0'\?\)", id="unknown"),
        pytest.param("content_id,style_id\n,b1:0\n", "line 2: content_id is empty", id="empty_id"),
        pytest.param("content_id,style_id_1,style_id_2\nm0:0,m1:0,b1:0\n",
                     r"line 2, style_id_2: style 'b1:0' \(class 'benign'\) is not in the class "
                     r"of content 'm0:0' \('malignant'\); set allow_cross_class: true",
                     id="cross_class"),
    ],
)
def test_read_pairs_csv_errors_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_pairs_csv(path, IDS, NAMES)
    assert "\n" not in str(info.value), f"error must be one line, got {str(info.value)!r}"


def test_read_pairs_csv_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="none.csv: pairing file not found"):
        read_pairs_csv(tmp_path / "none.csv", IDS, NAMES)


def test_split_references_gives_one_pair_per_reference_in_row_order():
    plan = plan_pairs([0, 0, 0, 1, 1, 1], rule="within_class_k", k=2, seed=7)
    pairs = split_references(plan)
    assert pairs.shape == (12, 2) and pairs.dtype == np.int64
    assert pairs.tolist() == [[row[0], ref] for row in plan.tolist() for ref in row[1:]], (
        f"each row's references in order, rows in order: {pairs.tolist()}"
    )
