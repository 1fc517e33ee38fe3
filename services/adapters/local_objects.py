"""Object store on a local directory: atomic writes (temp file + rename), keys confined to the root."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from services.ports.metadata import new_id
from services.ports.objects import (
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    InvalidKey,
    MultipartUploads,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    check_parts,
    guess_content_type,
    validate_key,
    validate_prefix,
)

_CHUNK = 1024 * 1024


class _RangeReader(io.RawIOBase):
    """Reads at most `length` bytes of an open file, then reports end of stream."""

    def __init__(self, file: BinaryIO, length: int | None):
        self._file = file
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if self._left is not None:
            view = view[: max(self._left, 0)]
        if not len(view):
            return 0
        n = self._file.readinto(view)
        if self._left is not None:
            self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class LocalObjectStore(ObjectStore, MultipartUploads):
    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root = self.root.resolve()
        self._tmp = self.root / ".tmp"
        self._parts = self.root / ".multipart"
        self._tmp.mkdir(exist_ok=True)
        self._parts.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # A symlink planted inside the root must not lead out of it.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"invalid object key {key!r}")
        return path

    def _write_atomically(self, path: Path, source: BinaryIO | bytes, digest=None) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> ObjectInfo:
        path = self._path(key)
        self._write_atomically(path, data)
        return self.stat(key)

    def open(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if start < 0 or (end is not None and end < start - 1):
            raise ValueError(f"bad range {start}-{end}")
        try:
            file = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        file.seek(start)
        return io.BufferedReader(_RangeReader(file, None if end is None else end - start + 1), _CHUNK)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        return self._info(key, st)

    @staticmethod
    def _info(key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"',
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            content_type=guess_content_type(key),
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return  # a prefix, or a name below an object: no such object, nothing to delete
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = validate_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        # Like _path: nothing reached through a symlink leading out of the root is an object.
        if not base.is_dir() or not base.resolve().is_relative_to(self.root):
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(base):
            # Keys never have hidden segments, so hidden names (.tmp, .multipart, .DS_Store) are not objects.
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and path.resolve().is_relative_to(self.root):
                    try:
                        found.append(self._info(key, path.stat()))
                    except FileNotFoundError:
                        continue
        # Sorted by whole key ("a/b/c" < "a/b_x" < "a/z"), as S3 lists; a directory walk alone is not.
        yield from sorted(found, key=lambda info: info.key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def staging_path(self, name: str) -> Path | None:
        validate_key(name)
        directory = self.root / ".uploads"
        directory.mkdir(exist_ok=True)
        return directory / name

    def adopt(self, key: str, path: Path) -> ObjectInfo:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)  # same filesystem as the staging dir: an atomic rename, no copy
        return self.stat(key)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"{self.root} is not writable")

    # Multipart: parts are files under .multipart/<upload_id>/, joined on completion.
    def _upload_dir(self, key: str, upload_id: str) -> Path:
        validate_key(upload_id)
        directory = self._parts / upload_id
        try:
            if (directory / "key").read_text() != key:
                raise ObjectNotFound(f"multipart upload {upload_id} is not for {key}")
        except FileNotFoundError:
            raise ObjectNotFound(f"no multipart upload {upload_id}") from None
        return directory

    def create_multipart(self, key: str, content_type: str | None = None) -> str:
        validate_key(key)
        upload_id = new_id()
        # Built aside and renamed into place, so a lister never sees an upload without its key file.
        staging = Path(tempfile.mkdtemp(dir=self._tmp, prefix="mpu-"))
        try:
            (staging / "key").write_text(key)
            staging.rename(self._parts / upload_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview | BinaryIO) -> str:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise ValueError(f"part numbers run from 1 to {MAX_PART_NUMBER}")
        directory = self._upload_dir(key, upload_id)
        digest = hashlib.md5(usedforsecurity=False)
        self._write_atomically(directory / f"{part_number:05d}.part", data, digest)
        return f'"{digest.hexdigest()}"'

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        directory = self._upload_dir(key, upload_id)
        parts = check_parts(parts)
        files = []
        for index, (number, etag) in enumerate(parts):
            part = directory / f"{number:05d}.part"
            if not part.is_file():
                raise ValueError(f"part {number} was never uploaded")
            # S3 refuses parts under 5 MiB but the last: refuse them here too, so code developed against this
            # store cannot break on S3.
            if index < len(parts) - 1 and part.stat().st_size < MIN_PART_SIZE:
                raise ValueError(f"part {number} is smaller than 5 MiB")
            with part.open("rb") as f:
                digest = hashlib.md5(usedforsecurity=False)
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            if f'"{digest.hexdigest()}"' != etag:
                raise ValueError(f"part {number}: etag mismatch")
            files.append(part)
        path = self._path(key)
        reader = _Concatenation(files)
        try:
            self._write_atomically(path, reader)
        finally:
            reader.close()
        shutil.rmtree(directory, ignore_errors=True)
        return self.stat(key)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            directory = self._upload_dir(key, upload_id)
        except ObjectNotFound:
            return
        shutil.rmtree(directory, ignore_errors=True)

    def list_multipart_uploads(self, prefix: str = "") -> list[tuple[str, str, datetime]]:
        """`initiated` is the upload directory's mtime: its creation, or the last time a part was stored."""
        prefix = validate_prefix(prefix)
        found = []
        for directory in self._parts.iterdir():
            try:
                key = (directory / "key").read_text()
                initiated = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
            except (FileNotFoundError, NotADirectoryError):
                continue  # completed or aborted meanwhile, or a stray file
            if key.startswith(prefix):
                found.append((key, directory.name, initiated))
        return sorted(found, key=lambda upload: (upload[0], upload[2], upload[1]))


class _Concatenation:
    def __init__(self, files: list[Path]):
        self._files = list(files)
        self._current: BinaryIO | None = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self._current is None:
                if not self._files:
                    return b""
                self._current = self._files.pop(0).open("rb")
            chunk = self._current.read(n)
            if chunk:
                return chunk
            self._current.close()
            self._current = None

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
