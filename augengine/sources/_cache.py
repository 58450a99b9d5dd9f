"""The readers' cache for files that hold many samples (an OASBUD ``.mat``, a DICOM cine).

Each sample of such a file is loaded on its own (one ``SampleRef`` per scan or frame), in order,
so keeping the last file read turns N reads of one file into one. The key holds the file's
modification time and size besides its path, so a file rewritten between two loads is read again.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, TypeVar

from augengine.errors import InputError

T = TypeVar("T")


def cached_per_file(read: Callable[[str], T]) -> Callable[..., T]:
    """Decorate ``read(path)`` so the result for the last file read is kept.

    The decorated function takes ``(path, at=None)``: ``at`` names the file in the one-line
    :class:`~augengine.errors.InputError` raised when it cannot be opened (default: the path).
    ``cache_info()`` and ``cache_clear()`` are those of the underlying ``functools.lru_cache``.
    ``read`` must name only the file in its messages: every sample of the file shares an entry.
    """
    @functools.lru_cache(maxsize=1)
    def cached(path: str, mtime_ns: int, size: int) -> T:
        return read(path)

    @functools.wraps(read)
    def wrapper(path, at: str | None = None) -> T:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise InputError(f"{at or path}: cannot open ({error.strerror})") from None
        return cached(str(path), stat.st_mtime_ns, stat.st_size)

    wrapper.cache_info = cached.cache_info
    wrapper.cache_clear = cached.cache_clear
    return wrapper
