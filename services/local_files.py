"""'Make this object available locally': a path (local store), a presigned URL (S3), or a temporary copy."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.ports import ObjectStore


@contextmanager
def available_locally(store: ObjectStore, key: str, *, url_ok: bool = True, expires_in: int = 3600) -> Iterator[str]:
    """Yields something ffmpeg/PyAV can open without loading the object into memory."""
    path = store.local_path(key)
    if path is not None and path.is_file():
        yield str(path)
        return
    url = store.presign_get(key, expires_in) if url_ok else None
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="reelhouse-") as directory:
        copy = Path(directory) / "source"
        with store.open(key) as source, copy.open("wb") as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
        yield str(copy)
