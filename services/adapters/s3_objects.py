"""Object store on an S3-compatible service (MinIO, AWS S3, moto's server) through boto3.

Behaves like LocalObjectStore (the reference): same key rules, same errors, same multipart rules (parts of at
least 5 MiB except the last). Path-style addressing and SigV4, as MinIO needs. The bucket is created on first
use if it is missing.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from services.ports.objects import (
    MAX_PART_NUMBER,
    MultipartUploads,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    check_parts,
    guess_content_type,
    validate_key,
    validate_prefix,
)

MiB = 1024 * 1024
_READ_BUFFER = MiB
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit

# `put` of a stream: parts of 8 MiB, at most 4 in flight and 4 buffered, so memory stays near 32 MiB whatever
# the size of the body.
_TRANSFER = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
_TRANSFER.max_in_memory_upload_chunks = 4  # not a constructor argument of boto3's TransferConfig

PART_CHECKSUM = "CRC32"  # of multipart uploads (create_multipart)
_CHECKSUM_FIELD = f"Checksum{PART_CHECKSUM}"

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_SUCH_UPLOAD = {"NoSuchUpload"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


# One boto3 session for every store: it caches the service model (a new session takes ~70 ms per client, a
# known one ~3 ms). Sessions are not thread-safe, so clients are made under a lock; clients themselves are.
_SESSION_LOCK = threading.Lock()
_SESSION: boto3.session.Session | None = None


def _new_client(config: BotoConfig, **options):
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()  # not boto3's module-level default session
        return _SESSION.client("s3", config=config, **options)


def boto_config(*, retries: int = 5, connect_timeout: float = 5, read_timeout: float = 60) -> BotoConfig:
    return BotoConfig(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


class _FullReads:
    """Makes read(n) return n bytes unless the stream ends, over sources that return short reads (sockets).

    s3transfer decides "small object, single PUT" when its first read returns less than the threshold and then
    reads the rest with read(); a short read would make it take a big body for a small one and pull the whole
    remainder into memory. Not seekable on purpose: s3transfer then reads the stream once, part by part.
    """

    def __init__(self, source: BinaryIO):
        self._source = source

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while chunk := self._source.read(_READ_BUFFER):
                chunks.append(chunk)
            return b"".join(chunks)
        buffer = bytearray()
        while len(buffer) < n:
            chunk = self._source.read(n - len(buffer))
            if not chunk:
                break
            buffer += chunk
        return bytes(buffer)


class _PartBody(io.RawIOBase):
    """A part held in memory as the seekable stream botocore reads it from, without a copy: read() hands out
    read-only slices of the caller's buffer, which the checksum, the request signature and the socket all take
    as they take bytes. (botocore turns bytes into a BytesIO whose reads copy every byte once more.)"""

    def __init__(self, data: bytes | bytearray | memoryview):
        self._view = memoryview(data).cast("B").toreadonly()
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def read(self, n: int | None = -1) -> memoryview:
        end = len(self._view) if n is None or n < 0 else self._position + n
        chunk = self._view[self._position:end]
        self._position += len(chunk)
        return chunk

    def readinto(self, buffer) -> int:
        target = memoryview(buffer).cast("B")
        chunk = self.read(len(target))
        target[:len(chunk)] = chunk
        return len(chunk)


class _BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw binary stream (wrapped in a BufferedReader by `open`)."""

    def __init__(self, body):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class S3ObjectStore(ObjectStore, MultipartUploads):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        client=None,
    ):
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self._options = dict(
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        self.client = client or _new_client(boto_config(), **self._options)
        self._ping_client = client
        self._lock = threading.Lock()
        self._bucket_ready = False
        # Uploads this process created or has seen, keyed (key, upload_id): spares upload_part a lookup.
        self._known_uploads: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __repr__(self) -> str:
        return f"S3ObjectStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    # --- bucket ------------------------------------------------------------------------------------------

    def _ensure_bucket(self, client=None) -> None:
        client = client or self.client
        try:
            client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _code(error) not in {"404", "NoSuchBucket", "NotFound"}:
                raise
        arguments = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # us-east-1 is the default and refuses to be named
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**arguments)
        except ClientError as error:
            if _code(error) == "BucketAlreadyOwnedByYou":
                return  # another process created it first
            if _code(error) == "BucketAlreadyExists":
                client.head_bucket(Bucket=self.bucket)  # ours (a race on some servers) or someone else's: 403
                return
            raise

    def _ready(self) -> None:
        if self._bucket_ready:
            return
        with self._lock:
            if not self._bucket_ready:
                self._ensure_bucket()
                self._bucket_ready = True

    def ping(self) -> None:
        """Raise if the bucket cannot be reached (or created). Answers a readiness probe, so it makes one attempt
        with short timeouts instead of the retries the other calls get."""
        if self._ping_client is None:
            self._ping_client = _new_client(boto_config(retries=1, connect_timeout=2, read_timeout=5), **self._options)
        self._ensure_bucket(self._ping_client)
        self._bucket_ready = True

    # --- objects -----------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> ObjectInfo:
        validate_key(key)
        self._ready()
        content_type = content_type or guess_content_type(key)
        if isinstance(data, bytes | bytearray | memoryview):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), ContentType=content_type)
        else:
            # Streams in parts (a multipart upload above the threshold, aborted if the stream fails): an S3
            # object appears only whole, so a failed put leaves the old object in place.
            self.client.upload_fileobj(_FullReads(data), self.bucket, key,
                                       ExtraArgs={"ContentType": content_type}, Config=_TRANSFER)
        return self.stat(key)

    def open(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        validate_key(key)
        if start < 0 or (end is not None and end < start - 1):
            raise ValueError(f"bad range {start}-{end}")
        self._ready()
        if end is not None and end < start:  # an empty range: nothing to fetch, but the object must exist
            self.stat(key)
            return io.BytesIO(b"")
        arguments = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            arguments["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self.client.get_object(**arguments)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            if _code(error) == "InvalidRange":  # starts at or past the end: empty, as a file read there is
                return io.BytesIO(b"")
            raise
        return io.BufferedReader(_BodyReader(response["Body"]), _READ_BUFFER)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._ready()
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=head["ETag"],
            last_modified=_utc(head["LastModified"]),
            content_type=head.get("ContentType") or guess_content_type(key),
        )

    def delete(self, key: str) -> None:
        validate_key(key)
        self._ready()
        self.client.delete_object(Bucket=self.bucket, Key=key)  # S3 answers 204 for absent keys too

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = validate_prefix(prefix)
        self._ready()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            # S3 lists in UTF-8 byte order, which for our ASCII keys is sorted order: no need to collect.
            for item in page.get("Contents", []):
                key = item["Key"]
                try:
                    validate_key(key)
                except ValueError:
                    continue  # written by something else (e.g. a console's "folder/" marker): not our object
                yield ObjectInfo(
                    key=key,
                    size=item["Size"],
                    etag=item["ETag"],
                    last_modified=_utc(item["LastModified"]),
                    content_type=guess_content_type(key),
                )

    def delete_prefix(self, prefix: str) -> int:
        prefix = validate_prefix(prefix)
        deleted = 0
        batch: list[str] = []
        for info in self.list(prefix):
            batch.append(info.key)
            if len(batch) == _DELETE_BATCH:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, keys: list[str]) -> int:
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise OSError(f"could not delete {len(errors)} of {len(keys)} objects from {self.bucket}, "
                          f"e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}")
        return len(keys)

    def presign_get(self, key: str, expires_in: int = 3600) -> str | None:
        """A plain GET URL: a client adds its own Range header (a Range in the params would be signed in)."""
        validate_key(key)
        if not 1 <= expires_in <= _MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_in must be 1..{_MAX_PRESIGN_SECONDS} seconds")
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in)

    # --- multipart ---------------------------------------------------------------------------------------

    def _remember(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._known_uploads[(key, upload_id)] = None
            self._known_uploads.move_to_end((key, upload_id))
            while len(self._known_uploads) > 4096:
                self._known_uploads.popitem(last=False)

    def _forget(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._known_uploads.pop((key, upload_id), None)

    def _upload_exists(self, key: str, upload_id: str) -> bool:
        """Whether `upload_id` is an open upload for exactly `key`.

        S3 and MinIO refuse a part for another key's upload themselves, but moto accepts it (and answers an
        unknown upload id with a 500, which botocore retries): ask the server's list instead.
        """
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                if upload["Key"] == key and upload["UploadId"] == upload_id:
                    return True
        return False

    def _check_upload(self, key: str, upload_id: str, *, cached: bool) -> None:
        if not isinstance(upload_id, str) or not upload_id:
            raise ObjectNotFound(f"no multipart upload {upload_id!r}")
        if cached and (key, upload_id) in self._known_uploads:
            return
        if not self._upload_exists(key, upload_id):
            self._forget(key, upload_id)
            raise ObjectNotFound(f"no multipart upload {upload_id} for {key}")
        self._remember(key, upload_id)

    def create_multipart(self, key: str, content_type: str | None = None) -> str:
        validate_key(key)
        self._ready()
        # CRC32 like boto3's own transfers: botocore sends a CRC32 with every part anyway, which servers refuse
        # for an upload created without one; and without it S3 computes (moto: in Python) a full-object checksum
        # when the upload completes: +5 s of moto CPU per GiB (bench/upload.py).
        response = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type or guess_content_type(key),
            ChecksumAlgorithm=PART_CHECKSUM)
        upload_id = response["UploadId"]
        self._remember(key, upload_id)
        return upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview | BinaryIO) -> str:
        validate_key(key)
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise ValueError(f"part numbers run from 1 to {MAX_PART_NUMBER}")
        self._ready()
        self._check_upload(key, upload_id, cached=True)
        # A part is one request with a known length: botocore needs the bytes (or a seekable file) to sign and
        # to retry it. Parts are bounded (the caller picks their size), so holding one in memory is fine.
        # A buffer is read in place (the caller's own, for the length of this call).
        body = _PartBody(data if isinstance(data, bytes | bytearray | memoryview) else _FullReads(data).read())
        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=part_number, Body=body,
                ChecksumAlgorithm=PART_CHECKSUM)
        except ClientError as error:
            if _code(error) in _NO_SUCH_UPLOAD:
                self._forget(key, upload_id)
                raise ObjectNotFound(f"no multipart upload {upload_id} for {key}") from None
            raise
        return response["ETag"]

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        validate_key(key)
        self._ready()
        # Always asked: S3 answers a repeated completion with success, the port with ObjectNotFound.
        self._check_upload(key, upload_id, cached=False)
        parts = check_parts(parts)
        checksums = self._part_checksums(key, upload_id)
        listed = []
        for number, etag in parts:
            part = {"PartNumber": number, "ETag": etag}
            if number in checksums:  # S3 wants each part's checksum when the upload was created with one
                part[_CHECKSUM_FIELD] = checksums[number]
            listed.append(part)
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed})
        except ClientError as error:
            code = _code(error)
            if code in _NO_SUCH_UPLOAD:
                self._forget(key, upload_id)
                raise ObjectNotFound(f"no multipart upload {upload_id} for {key}") from None
            if code == "InvalidPart":
                raise ValueError("a listed part was never uploaded or its etag does not match") from None
            if code == "EntityTooSmall":
                raise ValueError("a part other than the last is smaller than 5 MiB") from None
            if code in {"InvalidPartOrder", "MalformedXML", "InvalidArgument"}:
                raise ValueError(f"the part list was refused: {error}") from None
            raise
        self._forget(key, upload_id)
        return self.stat(key)

    def _part_checksums(self, key: str, upload_id: str) -> dict[int, str]:
        """The CRC32 the server holds for each stored part (none for uploads created without a checksum, and
        none from moto, which accepts a completion without them)."""
        found = {}
        try:
            for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                        UploadId=upload_id):
                for part in page.get("Parts", []):
                    if part.get(_CHECKSUM_FIELD):
                        found[part["PartNumber"]] = part[_CHECKSUM_FIELD]
        except ClientError as error:
            if _code(error) in _NO_SUCH_UPLOAD:
                self._forget(key, upload_id)
                raise ObjectNotFound(f"no multipart upload {upload_id} for {key}") from None
            raise
        return found

    def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        self._ready()
        self._forget(key, upload_id)
        # Like the local store, an upload id that belongs to another key aborts nothing (moto would abort it).
        if not isinstance(upload_id, str) or not upload_id or not self._upload_exists(key, upload_id):
            return
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if _code(error) not in _NO_SUCH_UPLOAD:
                raise

    def list_multipart_uploads(self, prefix: str = "") -> list[tuple[str, str, datetime]]:
        """`initiated` as the server reports it (moto reports the same date in 2010 for every upload)."""
        prefix = validate_prefix(prefix)
        self._ready()
        found = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                found.append((upload["Key"], upload["UploadId"], _utc(upload["Initiated"])))
        return sorted(found, key=lambda upload: (upload[0], upload[2], upload[1]))
