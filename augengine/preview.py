"""Preview grids: a labelled PNG of samples from a store, masks drawn as outlines."""
from __future__ import annotations

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


def pick_indices(rows: list[dict], count: int) -> list[int]:
    """Spread ``count`` picks over the manifest, alternating labels so every class shows."""
    by_label: dict[int, list[int]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["index"])
    picks: list[int] = []
    labels = sorted(by_label)
    per_label = max(1, count // max(len(labels), 1))
    for label in labels:
        pool = by_label[label]
        step = max(1, len(pool) // per_label)
        picks.extend(pool[::step][:per_label])
    return sorted(picks)[:count]


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
                f"{rows[i]['chain'].split(' > ')[-1]}" for i in picks]
    colours = [_LABEL_COLOURS.get(rows[i]["label"], (255, 255, 255)) for i in picks]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_grid(images, masks, captions, colours, columns=columns).save(out)
    return out
