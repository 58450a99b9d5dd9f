"""BUSI-layout image folders: B-mode images with lesion masks, one folder per class.

Layout (Breast Ultrasound Images dataset, Al-Dhabyani et al. 2020)::

    root/benign/x.png           image
    root/benign/x_mask.png      its lesion mask
    root/benign/x_mask_1.png    further masks of the same image (several lesions); OR-ed together
    root/malignant/...
    root/normal/...             masks are all zero

Folder names (case-insensitive) give the label (``LABELS``). Images may be 8- or 16-bit, grey,
grey+alpha, RGB, RGBA or palette; they become grey uint8 (see :func:`to_gray_uint8`: BT.601
luma, 16-bit levels mapped by ``round(v / 257)``). Pillow reads 16-bit RGB PNGs as 8-bit RGB.
A mask pixel is in the ROI when it is non-zero after the same conversion. BUSI has no pixel
spacing, so ``meta["spacing_mm"]`` is ``None``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from augengine.errors import InputError
from augengine.sources._image import to_gray_uint8
from augengine.sources._sample import LABELS, Sample, SampleRef
from augengine.sources.validate import validate_sample, where

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MASK = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$")

__all__ = ["discover_busi", "load_busi", "read_busi"]


def read_busi(root) -> list[Sample]:
    """Read every image and its masks from a BUSI-layout folder.

    Parameters
    ----------
    root : str or Path
        Folder holding ``benign/``, ``malignant/`` and/or ``normal/``.

    Returns
    -------
    list of Sample
        Sorted by folder then file name; ``sample_id = source_id = "benign/x"``, ``image``
        (H, W) uint8, ``roi`` (H, W) bool (None when an image has no mask file), ``meta`` with
        ``path``, ``mask_paths``, ``mode`` (Pillow's pixel format) and ``spacing_mm = None``.

    Raises
    ------
    InputError
        Unknown folder name (the message lists the allowed ones), empty class folder, a mask
        without its image, unreadable/non-image file, mask size different from image size.

    Example
    -------
    >>> samples = read_busi("Dataset_BUSI_with_GT")                   # doctest: +SKIP
    >>> samples[0].sample_id, samples[0].image.dtype                  # doctest: +SKIP
    ('benign/benign (1)', dtype('uint8'))
    """
    return [load_busi(ref) for ref in discover_busi(root)]


def discover_busi(root) -> list[SampleRef]:
    """List BUSI images and their mask files from file names alone (nothing is decoded)."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise InputError(f"{root}: not a directory (BUSI layout needs benign/, malignant/, "
                         f"normal/ folders)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    allowed = ", ".join(LABELS)
    for folder in folders:
        if folder.name.lower() not in LABELS:
            raise InputError(f"{folder}: unknown class folder {folder.name!r}; allowed: {allowed}")
    if not folders:
        raise InputError(f"{root}: no class folders; expected some of {allowed}")
    refs = []
    for folder in folders:
        refs.extend(_folder_refs(folder))
    return refs


def load_busi(ref: SampleRef) -> Sample:
    """Decode one BUSI image and OR its masks; check every mask has the image's size."""
    image_path = Path(ref.path)
    at = where(image_path, ref.sample_id)
    pixels, mode = _read_pixels(image_path, at)
    image = to_gray_uint8(pixels, _max_value(mode), at)
    mask_paths = [image_path.with_name(name) for name in json.loads(ref.key)["masks"]]
    roi = None
    for mask_path in mask_paths:
        mask_pixels, mask_mode = _read_pixels(mask_path, where(mask_path, ref.sample_id))
        if mask_pixels.shape[:2] != image.shape:
            raise InputError(f"{mask_path}: mask size {mask_pixels.shape[1]}x"
                             f"{mask_pixels.shape[0]} differs from image {image_path} size "
                             f"{image.shape[1]}x{image.shape[0]} (width x height)")
        mask = to_gray_uint8(mask_pixels, _max_value(mask_mode), str(mask_path)) != 0
        roi = mask if roi is None else roi | mask
    meta = {"path": str(image_path), "mask_paths": [str(p) for p in mask_paths], "mode": mode,
            "spacing_mm": None}
    return validate_sample(Sample(sample_id=ref.sample_id, source_id=ref.source_id,
                                  label=ref.label, image=image, roi=roi, meta=meta))


def _folder_refs(folder: Path) -> list[SampleRef]:
    label = LABELS[folder.name.lower()]
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images: dict[str, Path] = {}
    for path in files:
        if _MASK.match(path.stem):
            continue
        if path.stem in images:
            raise InputError(f"{path}: another image of the same name, {images[path.stem].name}, "
                             f"is in {folder}; sample ids must be unique")
        images[path.stem] = path
    masks: dict[str, list[str]] = {stem: [] for stem in images}
    for path in files:
        match = _MASK.match(path.stem)
        if match is None:
            continue
        if match["image"] not in images:
            raise InputError(f"{path}: mask without its image {match['image']}.* in {folder}")
        masks[match["image"]].append(path.name)
    if not images:
        raise InputError(f"{folder}: class folder holds no images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    name = folder.name.lower()
    return [SampleRef(reader="busi", path=str(path), key=json.dumps({"masks": masks[stem]}),
                      sample_id=f"{name}/{stem}", source_id=f"{name}/{stem}", label=label,
                      has_roi=bool(masks[stem]))
            for stem, path in images.items()]


def _read_pixels(path: Path, at: str) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if img.mode == "PA" else "RGB")
            return np.asarray(img), img.mode
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        raise InputError(f"{at}: cannot read as an image ({reason})") from None


def _max_value(mode: str) -> int:
    # Pillow's integer modes "I;16*" and "I" hold 16-bit PNG/TIFF levels.
    return 65535 if mode.startswith("I") else 255
