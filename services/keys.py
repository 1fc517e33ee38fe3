"""Object key naming, in one place: every object of a video lives under its tenant's and video's prefix."""

from __future__ import annotations


def video_prefix(tenant_id: str, video_id: str) -> str:
    return f"tenants/{tenant_id}/videos/{video_id}/"


def original_key(tenant_id: str, video_id: str) -> str:
    """The uploaded file as received."""
    return video_prefix(tenant_id, video_id) + "original"


def upload_staging_prefix(tenant_id: str, video_id: str) -> str:
    """Bytes of an unfinished upload that do not yet fill a multipart part (S3)."""
    return f"tenants/{tenant_id}/uploads/{video_id}/"


def staged_chunk_key(tenant_id: str, video_id: str, offset: int) -> str:
    return f"{upload_staging_prefix(tenant_id, video_id)}{offset:016d}.chunk"
