"""tus 1.0.0 header parsing and the constants the server advertises."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from email.utils import format_datetime

from services.errors import ApiError

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXPOSED_HEADERS = ("Upload-Offset", "Location", "Upload-Length", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
                   "Tus-Extension", "Upload-Metadata", "Upload-Expires", "Tus-Checksum-Algorithm")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Upload-Offset", "Upload-Length", "Upload-Metadata",
                   "Upload-Checksum", "Upload-Defer-Length", "Upload-Concat", "Tus-Resumable",
                   "X-HTTP-Method-Override", "X-Request-ID", "X-Requested-With")

_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_uint(name: str, value: str | None) -> int:
    """A non-negative integer header; 400 for anything else (negative, signs, spaces, overflow)."""
    if value is None:
        raise ApiError(400, "missing_header", f"The {name} header is required.")
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise ApiError(400, "invalid_header", f"{name} must be a non-negative whole number.")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """`key base64value,key2 base64value2,key3` → dict; 400 for anything malformed."""
    if header is None or not header.strip():
        return {}
    result: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise ApiError(400, "invalid_metadata",
                           "Upload-Metadata must be `key base64value` pairs separated by commas.")
        key = parts[0]
        if key in result:
            raise ApiError(400, "invalid_metadata", f"Upload-Metadata names {key!r} twice.")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            decoded = base64.b64decode(raw, validate=True)
            result[key] = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_metadata", f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text.") \
                from None
    return result


def parse_checksum(header: str | None):
    """`Upload-Checksum: <algorithm> <base64 digest>` → (hash object, expected digest) or None."""
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    factory = CHECKSUM_ALGORITHMS.get(algorithm.lower())
    if factory is None:
        raise ApiError(400, "unsupported_checksum", f"Checksum algorithm {algorithm!r} is not supported; use "
                       f"{', '.join(CHECKSUM_ALGORITHMS)}.")
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_header", "Upload-Checksum must be `<algorithm> <base64 digest>`.") from None
    digest = factory()
    if len(expected) != digest.digest_size:
        raise ApiError(400, "invalid_header", f"A {algorithm} digest has {digest.digest_size} bytes.")
    return digest, expected


def clean_text(value: str | None, limit: int = 200) -> str:
    """User-supplied text for display only: control characters (NUL included) dropped, whitespace folded."""
    if not value:
        return ""
    # Control characters (NUL included) and bidi overrides go; other format characters such as zero-width
    # joiners are part of how many scripts and emoji are written, so they stay.
    kept = "".join(ch for ch in value if ch in " \t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI
                                                         and unicodedata.category(ch) not in ("Cs", "Co", "Cn")))
    return " ".join(kept.split())[:limit]


def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)
