"""What the benchmarks need to run on a bare GPU machine (torch, CuPy, NumPy, SciPy, Pillow,
PyArrow, PyYAML; no zarr, pydantic or pydicom): the store replaced by the write floor, and the
hardware named.

``augengine.nst`` imports ``augengine.store`` (zarr) through its training module, and the runner
imports it and the store reader, so without zarr nothing of the style or production path would
import. :func:`store_or_floor` puts stand-ins in their place: a ``write_shard`` doing the floor
of the same work (each image compressed alone, one file per shard), labelled as such. pydantic
and pydicom have no stand-in (the job model and the source readers need them): carry their
wheels (``benchmarks/gpu_wheels.sh``).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import types
from pathlib import Path

import numpy as np


def _compressor():
    """(label, compress) for the floor: zstd level 3 as the store uses, zlib where no zstd
    binding is installed (Python >= 3.14 has one in the standard library)."""
    try:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=3)
        return "zstd-3", compressor.compress
    except ImportError:
        pass
    try:
        from compression import zstd

        return "zstd-3", lambda data: zstd.compress(data, level=3)
    except ImportError:
        import zlib

        return "zlib-3 (no zstd binding installed)", lambda data: zlib.compress(data, 3)


def write_floor(path, start: int, images: np.ndarray, labels: np.ndarray,
                masks: np.ndarray | None) -> None:
    """The floor of ``store.write_shard``: every image and mask compressed alone and the shard's
    bytes written to one file (the checksums are the runner's writer's, before it)."""
    _, compress = _compressor()
    parts = [compress(np.ascontiguousarray(a).tobytes()) for a in images]
    if masks is not None:
        parts += [compress(np.ascontiguousarray(m).tobytes()) for m in masks]
    parts.append(np.ascontiguousarray(labels).tobytes())
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"shard-{start}.bin").write_bytes(b"".join(parts))


def store_or_floor() -> str:
    """Import ``augengine.store``, or, when zarr or PyArrow is missing, put the floor in its
    place and a store reader that says it cannot read (the benchmarks' sources are image files).
    Returns what a shard write does, for the summary."""
    try:
        import augengine.sources.store  # noqa: F401
        import augengine.store  # noqa: F401
        return "augengine.store.write_shard (Zarr v3, zstd-3)"
    except ImportError as error:
        missing = error.name or str(error)

    def unreadable(*args, **kwargs):
        raise ImportError(f"the store reader needs {missing}, which is not installed")

    label, _ = _compressor()
    stand_ins = {
        "augengine.store": {"write_shard": write_floor, "open_store": unreadable,
                            "image_sha256": lambda image: hashlib.sha256(
                                np.ascontiguousarray(image).tobytes()).hexdigest()},
        "augengine.sources.store": {"discover_store": unreadable, "load_store": unreadable},
    }
    for name, attributes in stand_ins.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    return f"floor, not the store ({missing} missing): each image {label} alone, one file per shard"


def hardware(device: str) -> str:
    """The processor the figures come from, named for the reader."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    emulated = ", CuPy emulated (tests/cuda_emulator)" if device == "emulated" else ""
    return f"CPU {model}, {os.cpu_count()} cores{emulated}"
