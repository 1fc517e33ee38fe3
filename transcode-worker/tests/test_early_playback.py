"""Early playback while ffmpeg still encodes; cancel, time limit and failure leave nothing behind."""

from __future__ import annotations

import threading
import time

import av
import pytest

from services import keys
from transcode_worker.media.pipeline import transcode
from transcode_worker.media.runner import Cancelled, TranscodeError, TranscodeTimeout, run_ffmpeg
from transcode_worker.media.runner import ffmpeg_binary as ffmpeg

# Reading the 20 s clip at 4× realtime keeps ffmpeg busy ~5 s whatever the machine's speed.
READRATE = 4


class Background:
    """transcode() in a thread, its outcome kept for the test."""

    def __init__(self, **kwargs):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, **kwargs):
        try:
            self.result = transcode(**kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error

    def wait_for(self, condition, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.thread.is_alive(), f"transcode ended first: {self.error!r}"
            time.sleep(0.05)
        raise AssertionError("timed out")


def test_master_plays_its_first_segments_while_the_ladder_is_still_encoding(make_clip, checking_store, tmp_path,
                                                                             media):
    store = checking_store
    master = keys.hls_master_key(media.TENANT, "early")
    hls_ready = threading.Event()
    job = Background(store=store, source=str(make_clip("long")), probe=None, tenant_id=media.TENANT,
                     video_id="early", work_dir=tmp_path / "work", readrate=READRATE, on_hls_ready=hls_ready.set)
    job.wait_for(hls_ready.is_set)
    assert store.exists(master)

    # Still encoding: EVENT playlists without an end, only the first few of the ~10 segments stored.
    playlist = store.read(keys.hls_rendition_key(media.TENANT, "early", "360p", "index.m3u8")).decode()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist and "#EXT-X-ENDLIST" not in playlist
    stored_segments = [k for k in store.keys() if k.endswith(".m4s") and "/360p/" in k]
    assert 1 <= len(stored_segments) < 10

    # A player (PyAV's HLS demuxer) opens the master from the store and decodes the first segment.
    with av.open(str(store.local_path(master)), options={"live_start_index": "0"}, timeout=10) as container:
        assert sorted(s.codec_context.height for s in container.streams.video) == [240, 360]
        stream = container.streams.video[0]
        seen = []
        for frame in container.decode(stream):
            seen.append(frame.time)
            if frame.time - seen[0] >= 1.5:
                break
        assert len(seen) >= 45  # 1.5 s of 30 fps picture
    assert job.thread.is_alive(), "transcode() must still be running: this is *early* playback"

    job.thread.join(60)
    assert job.error is None, job.error
    playlist = store.read(keys.hls_rendition_key(media.TENANT, "early", "360p", "index.m3u8")).decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in playlist and "#EXT-X-ENDLIST" in playlist
    assert not store.violations  # no playlist ever named a file that was not stored yet


def test_cancel_kills_ffmpeg_and_leaves_no_outputs(make_clip, checking_store, tmp_path, media):
    cancel = threading.Event()
    work = tmp_path / "cancel-work"
    job = Background(store=checking_store, source=str(make_clip("long")), probe=None, tenant_id=media.TENANT,
                     video_id="gone", work_dir=work, readrate=READRATE, cancel=cancel)
    job.wait_for(lambda: any(k.endswith(".m4s") for k in checking_store.keys()))
    assert media.processes_mentioning(str(work))  # the ladder's ffmpeg is running
    cancelled_at = time.monotonic()
    cancel.set()
    job.thread.join(10)
    assert time.monotonic() - cancelled_at < 2
    assert isinstance(job.error, Cancelled)
    assert checking_store.keys() == []
    assert media.processes_mentioning(str(work)) == []
    assert not work.exists() or not list(work.iterdir())


class FailingStore:
    """Wraps a store; put() of keys ending in `suffix` fails (a store outage in the middle of the job)."""

    def __init__(self, store, suffix):
        self._store, self._suffix = store, suffix

    def put(self, key, data, content_type=None):
        if key.endswith(self._suffix):
            raise OSError("the object store went away")
        return self._store.put(key, data, content_type)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_failure_after_the_ladder_removes_the_published_hls(make_clip, checking_store, tmp_path, media):
    store = FailingStore(checking_store, "storyboard.vtt")
    with pytest.raises(TranscodeError, match="object store went away"):
        transcode(store, str(make_clip("no_audio")), None, media.TENANT, "broken", work_dir=tmp_path / "work")
    assert any(k.endswith(".m4s") for _, k in checking_store.puts)  # segments had been published...
    assert checking_store.keys() == []  # ...and were removed with everything else


def test_failure_while_publishing_segments_stops_ffmpeg_early_and_cleans_up(make_clip, checking_store, tmp_path,
                                                                             media):
    store = FailingStore(checking_store, "seg_00001.m4s")
    work = tmp_path / "work"
    started = time.monotonic()
    with pytest.raises(TranscodeError, match="object store went away"):
        transcode(store, str(make_clip("long")), None, media.TENANT, "broken2", work_dir=work, readrate=READRATE)
    assert time.monotonic() - started < 4  # the ladder alone takes ~5 s at this read rate: it was cut short
    assert checking_store.keys() == []
    assert media.processes_mentioning(str(work)) == []


def test_runner_time_limit_kills_ffmpeg(tmp_path, media):
    marker = tmp_path / "endless.nut"
    argv = [ffmpeg(), "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-progress",
            "pipe:1", "-nostats", "-y", str(marker)]  # -re: realtime, so it would run forever
    seen = []
    started = time.monotonic()
    with pytest.raises(TranscodeTimeout):
        run_ffmpeg(argv, on_progress=seen.append, timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 3
    assert seen and seen[-1] > 0.3  # progress came through while it ran
    assert media.processes_mentioning(str(marker)) == []


def test_runner_cancel_kills_ffmpeg(tmp_path, media):
    marker = tmp_path / "cancelled.nut"
    argv = [ffmpeg(), "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-progress",
            "pipe:1", "-nostats", "-y", str(marker)]
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    with pytest.raises(Cancelled):
        run_ffmpeg(argv, cancel=cancel, timeout=30)
    assert media.processes_mentioning(str(marker)) == []


def test_runner_reports_ffmpegs_last_error_lines(tmp_path):
    with pytest.raises(TranscodeError) as raised:
        run_ffmpeg([ffmpeg(), "-nostdin", "-hide_banner", "-i", str(tmp_path / "missing.mp4"), "-f", "null", "-"])
    assert "missing.mp4" in str(raised.value) and "No such file" in str(raised.value)
    assert not isinstance(raised.value, TranscodeTimeout)


def test_runner_survives_chatty_stderr(tmp_path):
    # Far more than a pipe's 64 KiB of log output: stderr goes to a file, so ffmpeg never blocks on it.
    run_ffmpeg([ffmpeg(), "-nostdin", "-loglevel", "debug", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25",
                "-t", "4", "-progress", "pipe:1", "-nostats", "-f", "null", "-"], timeout=30)
