"""Preview grids: a labelled PNG of samples from a store, masks drawn as outlines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from augengine.errors import ConfigError, InputError
from augengine.manifest import rows_where
from augengine.sources import LABEL_NAMES
from augengine.store import open_store

_LABEL_COLOURS = {0: (80, 200, 120), 1: (235, 80, 80), 2: (120, 160, 255)}
_COLOUR_NAMES = {0: "green", 1: "red", 2: "blue"}  # the legend's words for _LABEL_COLOURS
MAX_COUNT = 1024  # 1024 tiles of 160 px make a 1280 x 24000 PNG already: nobody looks past
DEFAULT_COUNT = 32


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
    if count < 1:
        raise ConfigError(f"count: must be >= 1 (samples to show), got {count}")
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
    "nst": lambda p: "nst",
    "srad": lambda p: f"srad{p['iterations']}",
    "srad_series": lambda p: f"srad-s{p['scale']}",
}


# What each caption token means, for the legend; same keys as _CAPTION.
_MEANING = {
    "bmode": "NNdB = B-mode dynamic range",
    "roi_crop": "+NNmm / +NNpx = ROI crop margin",
    "flip": "flip-x/y = flipped along that axis",
    "rotate": "rotN = rotated N degrees",
    "rotate90": "rotNN = rotated by quarter turns",
    "translate": "shiftDY,DX = translated by pixels",
    "scale": "xF = scaled by F",
    "gaussian_blur": "blurS = Gaussian blur of sigma S",
    "jpeg": "jpegQ = JPEG quality Q",
    "nst": "nst = neural style transfer",
    "srad": "sradN = SRAD despeckle, N iterations",
    "srad_series": "srad-sS = SRAD series at scale S",
}


def caption(ops_json: str) -> str:
    """A compact summary of a sample's concrete op chain, e.g. ``50dB +5mm rot-7``."""
    parts = []
    for step in json.loads(ops_json):
        name = step.pop("op")
        if name in _CAPTION:
            parts.append(_CAPTION[name](step))
        elif name not in ("identity", "scan_convert", "resize", "from_store"):
            parts.append(name)
    return " ".join(parts) or "original"


def legend(rows: list[dict]) -> list[str]:
    """Legend lines for the captions of ``rows`` (manifest rows): the caption's two lines, the
    label colours, and the meaning of each chain token that the shown samples use."""
    used = {step["op"] for row in rows for step in json.loads(row["ops"])}
    colours = ", ".join(f"{LABEL_NAMES.get(label, label)} {_COLOUR_NAMES[label]}"
                        for label in sorted({row["label"] for row in rows})
                        if label in _COLOUR_NAMES)
    tokens = [_MEANING[op] for op in _CAPTION if op in used]
    return ["Caption: line 1 = label #index (the row in the store's arrays), line 2 = the op "
            "chain applied (\"original\": none); yellow outline = lesion mask; caption colour = "
            f"label ({colours})"] + (["Chain: " + "; ".join(tokens)] if tokens else [])


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines no wider than ``width`` pixels."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line]


def render_grid(images, masks, captions, colours, columns: int = 8, tile: int = 160,
                title: str | None = None, notes: list[str] = ()) -> Image.Image:
    """Tile grey (H, W) or RGB (H, W, 3) uint8 images (with optional mask outlines) and draw a
    caption bar under each; ``title`` and ``notes`` (e.g. the legend) go in a band above."""
    rows = -(-len(images) // columns)
    caption_h = 30
    width = columns * tile
    title_font, note_font = _font(18), _font(13)
    header = ([(line, title_font, 24) for line in _wrap(title, title_font, width - 12)]
              if title else [])
    header += [(line, note_font, 17) for note in notes
               for line in _wrap(note, note_font, width - 12)]
    header_h = sum(height for _, _, height in header) + (10 if header else 0)
    grid = Image.new("RGB", (width, header_h + rows * (tile + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    y = 5
    for text, font, height in header:
        draw.text((6, y), text, fill=(235, 235, 235), font=font)
        y += height
    for k, image in enumerate(images):
        rgb = image.copy() if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        if masks is not None and masks[k] is not None and masks[k].any():
            rgb[_outline(masks[k])] = (255, 220, 0)
        x, y = (k % columns) * tile, header_h + (k // columns) * (tile + caption_h)
        grid.paste(Image.fromarray(rgb).resize((tile, tile), Image.BILINEAR), (x, y))
        draw.rectangle([x, y + tile, x + tile - 1, y + tile + caption_h - 1], fill=(0, 0, 0))
        for line, text in enumerate(captions[k].split("\n")[:2]):
            draw.text((x + 3, y + tile + 2 + 13 * line), text[:26], fill=colours[k])
    return grid


def preview_store(path: str | Path, out: str | Path, count: int | None = None, columns: int = 8,
                  seed: int = 0, where=None) -> Path:
    """Write a labelled grid of samples of the store at ``path`` to the PNG ``out``, with a title
    (job name, store, counts) and a legend of the captions.

    ``count`` samples (default: 32, or all when fewer) are picked by :func:`pick_indices` with
    ``seed``; ``where`` keeps only the rows it accepts (any form of
    :func:`augengine.manifest.rows_where`; its errors are named ``--where``). More
    than :data:`MAX_COUNT`, or an explicit ``count`` above the rows there are, is refused.
    """
    if count is not None and count > MAX_COUNT:
        raise ConfigError(f"count: at most {MAX_COUNT} samples in one preview, got {count}")
    view = open_store(path)
    every = view.manifest.to_pylist()
    keep = rows_where(view.manifest, where, name="--where")
    rows = {r["index"]: r for r, kept in zip(every, keep) if kept}
    if not rows:
        raise ConfigError(f"{path}: no sample matches --where" if where is not None
                          else f"{path}: the store holds no samples")
    if count is not None and count > len(rows):
        held = "match --where" if where is not None else "the store holds"
        raise ConfigError(f"count: {count} is more than the {len(rows)} samples that {held}")
    # The default is not capped at the rows there are: pick_indices takes what each label has,
    # and the same request keeps the pick that previews made before --seed.
    picks = pick_indices(list(rows.values()), DEFAULT_COUNT if count is None else count, seed)
    images = [view.group["images"][i] for i in picks]
    masks = [view.group["masks"][i] for i in picks] if "masks" in view.group else None
    captions = [f"{LABEL_NAMES.get(rows[i]['label'], rows[i]['label'])} #{i}\n"
                f"{caption(rows[i]['ops'])}" for i in picks]
    colours = [_LABEL_COLOURS.get(rows[i]["label"], (255, 255, 255)) for i in picks]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    name = view.attrs.get("job", {}).get("name", "?")
    matching = f", {len(rows)} match --where" if where is not None else ""
    title = (f"{name}: {view.path} - {len(picks)} shown of {len(every)} samples{matching}, "
             f"seed {seed}")
    render_grid(images, masks, captions, colours, columns=columns, title=title,
                notes=legend([rows[i] for i in picks])).save(out)
    return out


def _rows_by_sample_id(view) -> dict[str, int]:
    table = view.manifest.select(["sample_id", "index"])
    return dict(zip(table["sample_id"].to_pylist(), table["index"].to_pylist()))


def _relevance_maps(classifier_path: str, images: list[np.ndarray], labels: list[int]):
    """LRP relevance of each content image for its own class, from a local classifier."""
    import torch

    from augengine.explain import lrp
    from augengine.models import imagenet_normalize, load_classifier

    model = load_classifier(classifier_path)
    x = torch.from_numpy(np.stack(images)).float().div(255).unsqueeze(1)
    relevance = lrp(model, imagenet_normalize(x), torch.tensor(labels))
    return relevance.sum(dim=1).numpy()


def _nst_record(ops_json: str) -> dict | None:
    return next((step for step in json.loads(ops_json) if step["op"] == "nst"), None)


def _mosaic(images: list[np.ndarray]) -> np.ndarray:
    """One image as is; several (same shape) as a 2 x 2 mosaic of the first four, blanks after."""
    if len(images) == 1:
        return images[0]
    blank = np.zeros_like(images[0])
    a, b, c, d = (images + [blank] * 3)[:4]
    return np.block([[a, b], [c, d]])


def preview_nst(path: str | Path, out: str | Path, count: int = 6,
                classifier: str | None = None, seed: int = 0) -> Path:
    """Rows of content | style | result (| LRP relevance of the content) for a style-transfer
    store; contents and styles are read from the store the job read them from. A multi-reference
    sample (``style_ids``) shows its first four references as a 2 x 2 mosaic in the style tile."""
    from augengine.explain import relevance_heatmap

    view = open_store(path)
    rows = [r for r in view.manifest.to_pylist() if _nst_record(r["ops"]) is not None]
    if not rows:
        raise InputError(f"{path}: no style-transfer samples (no 'nst' op in the manifest)")
    source = open_store(view.attrs["job"]["sources"][0]["path"])
    source_index = _rows_by_sample_id(source)
    picks = [rows[i] for i in pick_indices(
        [{"index": k, "label": r["label"]} for k, r in enumerate(rows)], count, seed)]
    tiles, captions, colours = [], [], []
    contents, labels = [], []
    for row in picks:
        nst = _nst_record(row["ops"])
        content = source.group["images"][source_index[nst["content_id"]]]
        style_ids = nst.get("style_ids") or [nst["style_id"]]
        styles = [source.group["images"][source_index[i]] for i in style_ids]
        result = view.group["images"][row["index"]]
        contents.append(content)
        labels.append(row["label"])
        tiles += [content, _mosaic(styles), result]
        colour = _LABEL_COLOURS.get(row["label"], (255, 255, 255))
        style_caption = (f"style\n{style_ids[0]}" if len(style_ids) == 1
                         else f"{len(style_ids)} styles\n{style_ids[0]}, ...")
        captions += [f"content\n{nst['content_id']}", style_caption,
                     f"result #{row['index']}\n{caption(row['ops'])}"]
        colours += [colour] * 3
    columns = 3
    if classifier is not None:
        maps = _relevance_maps(classifier, contents, labels)
        heat = [relevance_heatmap(m, c) for m, c in zip(maps, contents)]
        tiles = [t for k in range(len(picks)) for t in (*tiles[3 * k:3 * k + 3], heat[k])]
        captions = [c for k in range(len(picks))
                    for c in (*captions[3 * k:3 * k + 3], "LRP relevance\nof the content")]
        colours = [c for k in range(len(picks)) for c in (*colours[3 * k:3 * k + 3], colours[3 * k])]
        columns = 4
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_grid(tiles, None, captions, colours, columns=columns).save(out)
    return out
