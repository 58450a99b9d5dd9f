"""Preview grids: balanced picks, readable captions, mask outlines."""
from __future__ import annotations

import json

import numpy as np

from augengine.preview import _outline, caption, pick_indices, render_grid


def test_caption_summarises_the_concrete_chain():
    ops = json.dumps([{"op": "bmode", "dynamic_range_db": 50}, {"op": "roi_crop", "margin_mm": 5},
                      {"op": "scan_convert"}, {"op": "rotate", "angle_deg": -7.4},
                      {"op": "resize", "size": [224, 224]}])
    assert caption(ops) == "50dB +5mm rot-7"
    assert caption(json.dumps([{"op": "identity"}])) == "original"


def test_picks_are_balanced_and_repeatable():
    rows = [{"index": i, "label": int(i >= 90)} for i in range(100)]
    picks = pick_indices(rows, 8)
    assert picks == pick_indices(rows, 8)
    labels = [int(i >= 90) for i in picks]
    assert labels.count(0) == 4 and labels.count(1) == 4, picks


def test_outline_is_the_boundary():
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    outline = _outline(mask)
    assert outline.sum() == 8 and not outline[3, 3]


def test_render_grid_size():
    images = [np.full((32, 32), 100, np.uint8)] * 5
    grid = render_grid(images, None, ["a\nb"] * 5, [(255, 255, 255)] * 5, columns=4, tile=50)
    assert grid.size == (200, 2 * 80)


def test_caption_skips_history_and_names_style_transfer():
    ops = json.dumps([{"op": "from_store", "ops": []}, {"op": "nst", "style_id": "b"},
                      {"op": "srad", "iterations": 10}])
    assert caption(ops) == "nst srad10"
