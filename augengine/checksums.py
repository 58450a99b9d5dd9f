"""The one file checksum: what stores, manifests and jobs pin files by."""
from __future__ import annotations

import hashlib


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
