"""The first SNIFF_BYTES of an upload, kept in its record as they arrive: completion sniffs the container from
them instead of reading them back from the store (on S3, a GET the size of the whole object on some servers)."""

from __future__ import annotations

import base64
from typing import Any

from services.media import SNIFF_BYTES


def _known(upload: dict[str, Any]) -> bytes:
    return base64.b64decode(upload["head"]) if upload.get("head") else b""


def wanted(offset: int) -> int:
    """How many bytes of a PATCH at `offset` belong to the head."""
    return max(SNIFF_BYTES - offset, 0)


def extended(upload: dict[str, Any], offset: int, captured: bytes, stored_to: int) -> str | None:
    """The record's new `head` after a PATCH that read `captured` from `offset` and stored everything up to
    `stored_to`; None when the record's head does not reach `offset` (an earlier PATCH's head was lost in a
    crash): completion then reads the bytes back."""
    known = _known(upload)
    if len(known) != min(offset, SNIFF_BYTES):
        return None
    head = (known + captured)[:min(stored_to, SNIFF_BYTES)]
    return base64.b64encode(head).decode("ascii")


def stored(upload: dict[str, Any], size: int) -> bytes | None:
    """The upload's first bytes as received, or None when the record does not hold all of them."""
    known = _known(upload)
    return known if len(known) == min(size, SNIFF_BYTES) else None
