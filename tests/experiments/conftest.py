"""Tiny data of every source kind the experiments read with ``--data``: an OASBUD-layout .mat and
its .npz files (simulated), a BUSI folder, DICOM folders and a store of originals."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _lesion_image(rng, malignant: bool, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Speckle with a dark ellipse: wide for benign, tall for malignant (a learnable cue)."""
    rows, cols = np.mgrid[:size, :size]
    a, b = (8, 16) if malignant else (16, 8)
    inside = ((rows - size / 2) / a) ** 2 + ((cols - size / 2) / b) ** 2 <= 1
    image = rng.rayleigh(60, (size, size))
    image[inside] *= 0.3
    return np.clip(image, 0, 255).astype(np.uint8), inside


@pytest.fixture(scope="session")
def busi_dir(tmp_path_factory):
    """4 benign + 4 malignant 48 x 48 PNG images with their masks, in the BUSI layout."""
    root = tmp_path_factory.mktemp("busi")
    rng = np.random.default_rng(3)
    for label in ("benign", "malignant"):
        (root / label).mkdir()
        for k in range(4):
            image, mask = _lesion_image(rng, label == "malignant")
            Image.fromarray(image).save(root / label / f"{label} ({k}).png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / label / f"{label} ({k})_mask.png")
    return root


@pytest.fixture(scope="session")
def dicom_dir(tmp_path_factory):
    """2 benign + 2 malignant DICOM images, labelled by their folders."""
    from tests.sources.test_dicom import write_dicom

    root = tmp_path_factory.mktemp("dicom")
    rng = np.random.default_rng(5)
    for label in ("benign", "malignant"):
        for k in range(2):
            write_dicom(root / label / f"scan{k}.dcm",
                        _lesion_image(rng, label == "malignant")[0], pixel_spacing=(0.1, 0.1))
    return root


@pytest.fixture(scope="session")
def phantoms_8_8(tmp_path_factory):
    """8 + 8 simulated scans (4 lesions per class, two scans each): ``phantoms.mat`` and
    ``npz/``."""
    from augengine.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("exp-phantoms")
    simulate_dataset(8, 8, out, seed=4)
    return out
