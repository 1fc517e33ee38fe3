"""The pipeline against S3 (moto's server over HTTP): the source read through a presigned URL, never loaded
into memory, and every output stored in the bucket."""

from __future__ import annotations

import re

import av
import pytest

from services import keys
from services.local_files import available_locally
from services.media import probe
from transcode_worker.media.pipeline import transcode

pytestmark = pytest.mark.infra


def test_source_from_a_presigned_url_outputs_to_s3(s3_store, make_clip, tmp_path):
    tenant, video = "tenant-s3", "video-s3"
    with make_clip("landscape").open("rb") as file:
        s3_store.put(keys.original_key(tenant, video), file)
    with available_locally(s3_store, keys.original_key(tenant, video)) as source:
        assert source.startswith("http")  # a presigned GET: ffmpeg streams it with range requests
        result = transcode(s3_store, source, probe(source), tenant, video, work_dir=tmp_path / "work")
    assert result.playable_original
    stored = {info.key for info in s3_store.list(keys.video_prefix(tenant, video))}
    for key in (result.master_key, result.thumbnail_key, result.poster_key, result.storyboard_image_key,
                result.storyboard_index_key, keys.playable_original_key(tenant, video)):
        assert key in stored
    master = s3_store.read(result.master_key).decode()
    assert re.findall(r"^(\w+)/index\.m3u8$", master, re.MULTILINE) == ["360p", "240p"]
    # Put one rendition back together from the bucket and decode it.
    playlist = s3_store.read(keys.hls_rendition_key(tenant, video, "240p", "index.m3u8")).decode()
    joined = tmp_path / "240p.mp4"
    with joined.open("wb") as out:
        for name in ["init.mp4", *re.findall(r"^seg_\d{5}\.m4s$", playlist, re.MULTILINE)]:
            out.write(s3_store.read(keys.hls_rendition_key(tenant, video, "240p", name)))
    with av.open(str(joined)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 150  # 5 s at 30 fps
