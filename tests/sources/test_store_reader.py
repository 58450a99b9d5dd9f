"""Reading an earlier store: history is carried forward, the dynamic range found however deep."""
from augengine.sources.store import _dynamic_range


def test_dynamic_range_is_found_through_earlier_stores():
    first = [{"op": "bmode", "dynamic_range_db": 40}, {"op": "resize", "size": [64, 64]}]
    second = [{"op": "from_store", "ops": first}, {"op": "flip", "axis": "vertical"}]
    third = [{"op": "from_store", "ops": second}, {"op": "nst"}]
    assert _dynamic_range(first) == 40
    assert _dynamic_range(third) == 40
    assert _dynamic_range([{"op": "identity"}]) is None
