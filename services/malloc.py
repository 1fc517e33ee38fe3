"""Large buffers go back to the operating system as soon as Python frees them (glibc's malloc).

glibc serves allocations above its mmap threshold (128 KiB at first) with mmap and frees them with munmap, but it
raises that threshold to the size of any such block that is freed, up to 32 MiB. After the first 8 MiB upload part
is freed, later parts then come from the heap and per-thread arenas, whose freed memory glibc seldom gives back: an
upload service sending parts from several threads grew by ~100 MiB for 256 MiB received through it
(tests/test_upload_process.py), against ~50 MiB with the threshold pinned. Pinning it (mallopt(M_MMAP_THRESHOLD))
also turns the dynamic adjustment off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
LARGE = 1024 * 1024  # blocks of at least this many bytes are mapped (and unmapped on free) on their own

_pinned = False


def return_large_buffers_to_os(threshold: int = LARGE) -> bool:
    """Pins glibc's mmap threshold at `threshold` bytes, once per process; False where there is no glibc."""
    global _pinned
    if _pinned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: their allocators behave differently anyway
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _pinned = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    if not _pinned:
        log.warning("mallopt(M_MMAP_THRESHOLD) was refused; large buffers may stay in the heap")
    return _pinned
