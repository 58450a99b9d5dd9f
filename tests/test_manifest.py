"""The manifest's one row shape, its schema, and what an original is."""
from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import pyarrow as pa
import pytest

import augengine.manifest
from augengine.errors import InputError
from augengine.manifest import MANIFEST_SCHEMA, ManifestRow, originals_only
from augengine.train import AUGMENTATION_OPS


def _row(**changes) -> ManifestRow:
    fields = dict(index=7, sample_id="case1:2", input_id="case1", source_id="lesion1",
                  source_path="data/case1.png", reader="busi", label=1, variant=2,
                  chain="bmode -> flip", ops='[{"op": "flip"}]', seed=123, shard=0,
                  has_mask=True, sha256="a" * 64, mask_sha256="b" * 64)
    return ManifestRow(**{**fields, **changes})


def test_docstring_examples():
    result = doctest.testmod(augengine.manifest)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} examples failed"


def test_row_fields_are_the_schema_columns_in_order():
    names = [field.name for field in dataclasses.fields(ManifestRow)]
    assert names == MANIFEST_SCHEMA.names, f"ManifestRow {names} != schema {MANIFEST_SCHEMA.names}"


def test_row_round_trips_through_the_schema():
    rows = [_row().as_dict(), _row(index=8, has_mask=False, mask_sha256=None).as_dict()]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    assert table.schema == MANIFEST_SCHEMA
    assert table.to_pylist() == rows, "row 7 or 8 changed on the way through Parquet's types"


def test_row_takes_named_fields_only():
    with pytest.raises(TypeError):
        ManifestRow(7, "case1:2")  # positional: a row must name its columns
    with pytest.raises(TypeError, match="mask_sha256"):
        _row().__class__(**{k: v for k, v in _row().as_dict().items() if k != "mask_sha256"})


def test_augmentation_ops_are_the_registry_augmentations_and_nst():
    assert "nst" in AUGMENTATION_OPS and "flip" in AUGMENTATION_OPS
    assert not {"bmode", "roi_crop", "resize", "identity"} & AUGMENTATION_OPS


OPS = [
    '[{"op": "bmode", "dynamic_range_db": 40}, {"op": "roi_crop", "margin_mm": 5}]',
    '[{"op": "bmode", "dynamic_range_db": 40}, {"op": "flip", "axis": "horizontal"}]',
    '[{"op": "resize", "size": [224, 224]}]',
    '[{"op": "srad", "iterations": 10}]',
    None,
    '[{"op": "nst", "style": "b12"}, {"op": "resize", "size": [224, 224]}]',
]


def test_originals_only_dict_and_table():
    manifest = {"sample_id": [f"s{i}" for i in range(6)], "ops": OPS,
                "label": np.array([0, 1, 0, 1, 0, 1])}
    originals = originals_only(manifest)
    assert originals["sample_id"] == ["s0", "s2", "s4"], originals["sample_id"]
    assert originals["label"].tolist() == [0, 0, 0]
    table = originals_only(pa.table(manifest))
    assert table.column("sample_id").to_pylist() == ["s0", "s2", "s4"]
    custom = originals_only(manifest, augmentation_ops={"flip"})
    assert custom["sample_id"] == ["s0", "s2", "s3", "s4", "s5"], "only flip counts as variant"


def test_originals_only_errors():
    with pytest.raises(InputError, match="manifest row 1: ops is not valid JSON"):
        originals_only({"ops": ["[]", "[{oops"]})
    with pytest.raises(InputError, match="no 'ops' column"):
        originals_only({"sample_id": ["a"]})
    with pytest.raises(InputError, match="manifest row 0: ops must be a JSON list"):
        originals_only({"ops": ['{"op": "flip"}']})
    with pytest.raises(InputError, match="column 'label' has 1 rows"):
        originals_only({"ops": ["[]", "[]"], "label": [0]})
