"""Preview grids: a labelled PNG of samples from a store, masks drawn as outlines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from augengine.sources import LABEL_NAMES
from augengine.store import open_store

_LABEL_COLOURS = {0: (80, 200, 120), 1: (235, 80, 80), 2: (120, 160, 255)}


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (a pixel set whose 4-neighbourhood is not all set)."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def pick_indices(rows: list[dict], count: int, seed: int = 0) -> list[int]:
    """A fixed random pick of ``count`` samples, balanced over labels so every class shows."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["index"])
    per_label = max(1, count // max(len(by_label), 1))
    picks = [int(i) for label in sorted(by_label)
             for i in sorted(rng.choice(by_label[label], min(per_label, len(by_label[label])),
                                        replace=False))]
    return picks[:count]


_CAPTION = {
    "bmode": lambda p: f"{p['dynamic_range_db']:g}dB",
    "roi_crop": lambda p: f"+{p['margin_mm']:g}mm" if p.get("margin_mm") is not None
    else f"+{p['margin_px']}px",
    "flip": lambda p: f"flip-{p['axis'][0]}",
    "rotate": lambda p: f"rot{p['angle_deg']:+.0f}",
    "rotate90": lambda p: f"rot{90 * p['k']}",
    "translate": lambda p: f"shift{p['dy_px']:+.0f},{p['dx_px']:+.0f}",
    "scale": lambda p: f"x{p['factor']:.2f}",
    "gaussian_blur": lambda p: f"blur{p['sigma']:g}",
    "jpeg": lambda p: f"jpeg{p['quality']}",
}


def caption(ops_json: str) -> str:
    """A compact summary of a sample's concrete op chain, e.g. ``50dB +5mm rot-7``."""
    parts = []
    for step in json.loads(ops_json):
        name = step.pop("op")
        if name in _CAPTION:
            parts.append(_CAPTION[name](step))
        elif name not in ("identity", "scan_convert", "resize"):
            parts.append(name)
    return " ".join(parts) or "original"


def render_grid(images, masks, captions, colours, columns: int = 8, tile: int = 160) -> Image.Image:
    """Tile images (with optional mask outlines) and draw a caption bar under each."""
    rows = -(-len(images) // columns)
    caption_h = 30
    grid = Image.new("RGB", (columns * tile, rows * (tile + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for k, image in enumerate(images):
        rgb = np.repeat(image[..., None], 3, axis=2)
        if masks is not None and masks[k] is not None and masks[k].any():
            rgb[_outline(masks[k])] = (255, 220, 0)
        x, y = (k % columns) * tile, (k // columns) * (tile + caption_h)
        grid.paste(Image.fromarray(rgb).resize((tile, tile), Image.BILINEAR), (x, y))
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + caption_h - 1], fill=(0, 0, 0))
        for line, text in enumerate(captions[k].split("\n")[:2]):
            draw.text((x + 3, y + tile + 2 + 13 * line), text[:26], fill=colours[k])
    return grid


def preview_store(path: str | Path, out: str | Path, count: int = 32, columns: int = 8) -> Path:
    """Write a labelled grid of ``count`` samples of the store at ``path`` to the PNG ``out``."""
    view = open_store(path)
    rows = {r["index"]: r for r in view.manifest.to_pylist()}
    picks = pick_indices(list(rows.values()), count)
    images = [view.group["images"][i] for i in picks]
    masks = [view.group["masks"][i] for i in picks] if "masks" in view.group else None
    captions = [f"{LABEL_NAMES.get(rows[i]['label'], rows[i]['label'])} #{i}\n"
                f"{caption(rows[i]['ops'])}" for i in picks]
    colours = [_LABEL_COLOURS.get(rows[i]["label"], (255, 255, 255)) for i in picks]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_grid(images, masks, captions, colours, columns=columns).save(out)
    return out
