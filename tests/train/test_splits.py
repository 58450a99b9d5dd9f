"""Splits by source: no leakage across splits, stratification, determinism, file round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from augengine.errors import ConfigError, InputError
from augengine.train.splits import (
    SPLITS,
    assign_split,
    load_splits,
    save_splits,
    split_by_source,
    summarize_splits,
)


def _manifest(rng, n_groups=24):
    """Rows = augmented variants; 1-4 sources per patient group, 3-9 variants per source."""
    source_ids, groups, labels = [], [], []
    for g in range(n_groups):
        for s in range(int(rng.integers(1, 5))):
            label = int(rng.random() < 0.35)
            for _ in range(int(rng.integers(3, 10))):
                source_ids.append(f"p{g:02d}/lesion{s}")
                groups.append(f"patient{g:02d}")
                labels.append(label)
    order = rng.permutation(len(source_ids))  # variants arrive interleaved, as from a cluster
    return ([source_ids[i] for i in order], [groups[i] for i in order],
            [labels[i] for i in order])


def test_no_source_or_group_in_two_splits(rng):
    source_ids, groups, labels = _manifest(rng)
    splits = split_by_source(source_ids, seed=3, groups=groups, labels=labels)
    seen = [source for name in SPLITS for source in splits[name]]
    assert len(seen) == len(set(seen)), "a source id appears in two splits"
    assert set(seen) == set(source_ids), "every source must be assigned to a split"
    names = assign_split(source_ids, splits)
    group_splits = {}
    for group, name in zip(groups, names):
        group_splits.setdefault(group, set()).add(str(name))
    leaked = {g: s for g, s in group_splits.items() if len(s) > 1}
    assert not leaked, f"patient groups in two splits: {leaked}"
    for source, name in zip(source_ids, names):
        assert source in splits[name], f"variant of {source} assigned to {name}, source is not"


def test_every_split_gets_sources_from_groups(rng):
    source_ids, groups, labels = _manifest(rng, n_groups=40)
    splits = split_by_source(source_ids, seed=0, groups=groups, labels=labels)
    n = len(set(source_ids))
    for name, share in zip(SPLITS, (0.70, 0.15, 0.15)):
        # Groups hold up to 4 sources, so a quota can be missed by a few sources, not more.
        assert abs(len(splits[name]) - share * n) <= 4, \
            f"{name}: {len(splits[name])} sources, expected about {share * n:.1f} of {n}"


def test_stratified_counts_are_largest_remainder():
    # 30 positive and 70 negative sources, one per unit: train 21 + 49; val/test split the
    # remaining 4.5 + 4.5 positives and 10.5 + 10.5 negatives as 4/5 and 10/11 either way.
    source_ids = [f"s{i:03d}" for i in range(100) for _ in range(2)]
    labels = [int(i < 30) for i in range(100) for _ in range(2)]
    splits = split_by_source(source_ids, seed=7, labels=labels)
    positives = {f"s{i:03d}" for i in range(30)}
    counts = {name: (len(set(splits[name]) & positives), len(set(splits[name]) - positives))
              for name in SPLITS}
    assert counts["train"] == (21, 49), f"train (pos, neg): expected (21, 49), got {counts}"
    assert {counts["val"][0], counts["test"][0]} == {4, 5}, f"val/test positives: {counts}"
    assert {counts["val"][1], counts["test"][1]} == {10, 11}, f"val/test negatives: {counts}"
    assert counts["val"][0] + counts["val"][1] in (15, 16), counts


def test_small_hand_case_rounding():
    # 10 sources, quotas 7, 1.5, 1.5: train takes 7; val and test tie at 1.5 and the tie goes to
    # val first, so val 2 and test 1.
    splits = split_by_source([f"lesion{i}" for i in range(10)], seed=1)
    assert [len(splits[name]) for name in SPLITS] == [7, 2, 1], splits


def test_deterministic_and_row_order_free(rng):
    source_ids, groups, labels = _manifest(rng)
    first = split_by_source(source_ids, seed=11, groups=groups, labels=labels)
    again = split_by_source(source_ids, seed=11, groups=groups, labels=labels)
    assert first == again, "same inputs and seed must give the same splits"
    order = rng.permutation(len(source_ids))
    shuffled = split_by_source([source_ids[i] for i in order], seed=11,
                               groups=[groups[i] for i in order],
                               labels=[labels[i] for i in order])
    assert shuffled == first, "row order must not change the splits"
    other = split_by_source(source_ids, seed=12, groups=groups, labels=labels)
    assert other != first, "seeds 11 and 12 gave identical splits of 24 patient groups"
    assert all(first[name] == sorted(first[name]) for name in SPLITS), "lists must be sorted"


def test_zero_fraction_split_stays_empty():
    splits = split_by_source([f"s{i}" for i in range(9)], fractions=(0.8, 0.2, 0.0))
    assert splits["test"] == [], f"test fraction 0: expected no sources, got {splits['test']}"
    assert len(splits["train"]) == 7 and len(splits["val"]) == 2, "9 * (0.8, 0.2) = 7.2, 1.8"


def test_unknown_group_means_own_group():
    source_ids = ["a", "b", "c", "d"]
    splits = split_by_source(source_ids, fractions=(0.5, 0.5, 0.0), groups=["g", "g", None, None])
    together = [name for name in SPLITS if "a" in splits[name]]
    assert "b" in splits[together[0]], f"a and b share group g: {splits}"
    assert len(splits["train"]) == 2 and len(splits["val"]) == 2, splits


def test_pyarrow_and_numpy_columns():
    table = pa.table({"source_id": ["x", "y", "x", "z"], "label": [0, 1, 0, 1]})
    splits = split_by_source(table.column("source_id"), labels=table.column("label"))
    assert sorted(sum(splits.values(), [])) == ["x", "y", "z"]
    names = assign_split(np.array(["x", "y", "x", "z"]), splits)
    assert names.dtype == np.dtype("<U5") and names.shape == (4,)


@pytest.mark.parametrize("fractions, words", [
    ((0.7, 0.2, 0.2), "sum to 1"),
    ((0.8, 0.3, -0.1), "test must be a finite number >= 0, got -0.1"),
    ((0.5, float("nan"), 0.5), "val must be"),
    ((0.5, 0.5), "(train, val, test)"),
    (0.7, "got 1 values"),
], ids=["sum", "negative", "nan", "two-values", "scalar"])
def test_bad_fractions(fractions, words):
    with pytest.raises(ConfigError) as info:
        split_by_source(["a", "b"], fractions=fractions)
    assert words in str(info.value), f"expected {words!r} in {info.value}"


@pytest.mark.parametrize("kwargs, error, words", [
    ({"source_ids": ["a"], "seed": -1}, ConfigError, "seed"),
    ({"source_ids": []}, InputError, "empty"),
    ({"source_ids": ["a", None]}, InputError, "source_ids[1] is empty"),
    ({"source_ids": ["a", "a"], "labels": [0, 1]}, InputError, "source 'a' has two labels"),
    ({"source_ids": ["a", "a"], "groups": ["p1", "p2"]}, InputError, "two groups"),
    ({"source_ids": ["a", "b"], "labels": [0]}, InputError, "labels has 1 entries"),
], ids=["seed", "empty", "none-id", "two-labels", "two-groups", "misaligned"])
def test_bad_inputs(kwargs, error, words):
    with pytest.raises(error) as info:
        split_by_source(**kwargs)
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_assign_split_rejects_stale_or_overlapping_splits():
    stale = "1 of 3 manifest rows have a source in no split, e.g. 'c'"
    with pytest.raises(InputError, match=stale):
        assign_split(["a", "b", "c"], {"train": ["a"], "val": ["b"], "test": []})
    with pytest.raises(InputError, match="'a' is in both train and test"):
        assign_split(["a"], {"train": ["a"], "val": [], "test": ["a"]})


def test_summarize_splits_counts():
    splits = {"train": ["a", "b"], "val": ["c"], "test": []}
    summary = summarize_splits(splits, ["a", "a", "b", "c", "c", "c"], labels=[0, 0, 1, 1, 1, 1])
    assert summary["train"] == {"sources": 2, "samples": 3, "samples_per_label": {"0": 2, "1": 1}}
    assert summary["val"] == {"sources": 1, "samples": 3, "samples_per_label": {"1": 3}}
    assert summary["test"] == {"sources": 0, "samples": 0, "samples_per_label": {}}


def test_save_load_round_trip_exact_json(tmp_path, rng):
    source_ids, groups, labels = _manifest(rng)
    splits = split_by_source(source_ids, groups=groups, labels=labels)
    path = save_splits(tmp_path / "run" / "splits.json", splits)
    document = json.loads(path.read_text())
    assert list(document) == ["train", "val", "test"], f"keys: {list(document)}"
    assert document == splits
    assert load_splits(path) == splits


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ('{"train": [], "val": []}', "expected exactly the keys train, val, test"),
    ('{"train": ["a"], "val": ["a"], "test": []}', "'a' is in both train and val"),
    ('{"train": [1], "val": [], "test": []}', "not a source id string"),
], ids=["syntax", "missing-key", "overlap", "non-string"])
def test_load_bad_file_names_it(tmp_path, text, words):
    path = tmp_path / "splits.json"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_splits(path)
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_fraction_rounding_never_exceeds_ceiling():
    # Property over many seeds and sizes with one source per unit: floor <= count <= ceil.
    for n in (3, 7, 20, 41):
        for seed in range(5):
            splits = split_by_source([f"s{i}" for i in range(n)], seed=seed)
            for name, share in zip(SPLITS, (0.70, 0.15, 0.15)):
                count = len(splits[name])
                assert math.floor(share * n + 1e-9) <= count <= math.ceil(share * n - 1e-9), \
                    f"n={n} seed={seed} {name}: {count} not within rounding of {share * n:.2f}"
