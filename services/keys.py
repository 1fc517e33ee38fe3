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


def playable_original_key(tenant_id: str, video_id: str) -> str:
    """The source remuxed to a faststart MP4 (H.264/AAC sources only): playable by range requests at once."""
    return video_prefix(tenant_id, video_id) + "original.mp4"


def hls_prefix(tenant_id: str, video_id: str) -> str:
    return video_prefix(tenant_id, video_id) + "hls/"


def hls_master_key(tenant_id: str, video_id: str) -> str:
    return hls_prefix(tenant_id, video_id) + "master.m3u8"


def hls_rendition_key(tenant_id: str, video_id: str, rendition: str, filename: str) -> str:
    """A rendition's playlist (`index.m3u8`), init segment (`init.mp4`) or media segment (`seg_00001.m4s`)."""
    return f"{hls_prefix(tenant_id, video_id)}{rendition}/{filename}"


def thumbnail_key(tenant_id: str, video_id: str) -> str:
    return video_prefix(tenant_id, video_id) + "thumbnail.jpg"


def poster_key(tenant_id: str, video_id: str) -> str:
    return video_prefix(tenant_id, video_id) + "poster.jpg"


def storyboard_image_key(tenant_id: str, video_id: str) -> str:
    return video_prefix(tenant_id, video_id) + "storyboard.jpg"


def storyboard_index_key(tenant_id: str, video_id: str) -> str:
    return video_prefix(tenant_id, video_id) + "storyboard.vtt"
