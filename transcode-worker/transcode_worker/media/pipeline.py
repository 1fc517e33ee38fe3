"""The whole media job for one video: playable original, images, HLS ladder with early publishing, storyboard."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services import keys
from services.media import MediaError, Probe
from services.media import probe as probe_media
from services.ports import ObjectStore

from .facts import VideoFacts, video_facts
from .images import storyboard_vtt
from .ladder import Rung, display_size
from .plan import plan_job
from .publisher import SegmentPublisher
from .remux import is_browser_playable, remux_faststart
from .runner import Cancelled, TranscodeError, run_ffmpeg, time_limit

log = logging.getLogger(__name__)

# Share of the overall 0–100 % per stage, in the order they run. The ladder is nearly all of the work.
STAGES = {"original": 3, "thumbnail": 4, "transcode": 88, "storyboard": 4, "finalize": 1}
PROGRESS_INTERVAL = 0.5  # at most two progress reports a second
# Decoded less than this share of the probed duration (and more than a second short): the file is damaged.
MIN_DECODED_SHARE = 0.9


@dataclass
class Result:
    renditions: list[dict]
    master_key: str
    thumbnail_key: str
    poster_key: str
    storyboard_image_key: str
    storyboard_index_key: str
    playable_original: bool
    playable_original_key: str | None
    duration: float
    width: int
    height: int
    rungs: list[Rung] = field(default_factory=list, repr=False)

    @property
    def original_playable(self) -> bool:
        return self.playable_original

    @property
    def outputs(self) -> dict[str, str]:
        """Object keys by role, for the video record (the playable original only when there is one)."""
        found = {"master": self.master_key, "thumbnail": self.thumbnail_key, "poster": self.poster_key,
                 "storyboard_image": self.storyboard_image_key, "storyboard_index": self.storyboard_index_key}
        if self.playable_original_key:
            found["original"] = self.playable_original_key
        return found

    def as_dict(self) -> dict:
        data = asdict(self)
        data.pop("rungs")
        return data


class _Progress:
    """Turns (stage, fraction of the stage) into an overall, never decreasing percentage, rate-limited."""

    def __init__(self, callback: Callable[[str, int], None] | None, *, interval: float = PROGRESS_INTERVAL):
        self.callback = callback
        self.interval = interval
        self.percent = -1
        self.last = float("-inf")

    def __call__(self, stage: str, fraction: float, *, force: bool = False) -> None:
        if self.callback is None:
            return
        before = 0
        for name, weight in STAGES.items():
            if name == stage:
                break
            before += weight
        percent = min(100, int(before + STAGES[stage] * min(max(fraction, 0.0), 1.0)))
        if percent <= self.percent:
            return
        wait = self.last + self.interval - time.monotonic()
        if wait > 0:
            if not force:
                return
            time.sleep(wait)  # the final report still keeps the rate limit
        self.percent, self.last = percent, time.monotonic()
        self.callback(stage, percent)


def transcode(store: ObjectStore, source: str, probe: Probe | None, tenant_id: str, video_id: str, *,
              work_dir: str | Path, on_progress: Callable[[str, int], None] | None = None,
              on_rendition_ready: Callable[[Rung], None] | None = None,
              on_original_ready: Callable[[], None] | None = None, on_hls_ready: Callable[[], None] | None = None,
              cancel: threading.Event | None = None, segment_seconds: float = 2, preset: str = "veryfast",
              readrate: float | None = None) -> Result:
    """Produce and store every output of one video from `source` (a local path or an http(s) URL).

    Order: faststart original (H.264/AAC sources) → on_original_ready() → the HLS ladder, stored segment by
    segment while ffmpeg encodes (on_hls_ready() once the master playlist and a first segment of every rung are
    stored; the same ffmpeg process writes the thumbnail, poster and storyboard sprite) → those images stored →
    VOD playlists, on_rendition_ready() per rung. Every callback runs in the caller's thread. Raises MediaError
    (the user's file is unusable: permanent), Cancelled, or TranscodeError (worth a retry); in every such case the
    outputs stored so far are removed."""
    cancel = cancel or threading.Event()
    source = str(source)
    if probe is None:
        probe = probe_media(source)
    _check(probe)
    progress = _Progress(on_progress)
    k = _Keys(tenant_id, video_id)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"transcode-{video_id}-", dir=work_dir))
    publisher: SegmentPublisher | None = None
    try:
        progress("original", 0, force=True)
        facts = video_facts(source)
        # Planning reads every video packet's header (may the top rung be copied?) while the remux copies the file:
        # both mostly wait for the disk or the network, and the original is announced as early as before.
        with ThreadPoolExecutor(1, thread_name_prefix=f"plan-{video_id}") as planner:
            planned = planner.submit(plan_job, source, probe, facts, work, segment_seconds=segment_seconds)
            playable = _playable_original(store, source, probe, facts, work, k, cancel, on_original_ready)
            plan = planned.result()
        _stop_if(cancel)

        rungs, stills = plan.rungs, plan.stills
        hls_dir = work / "hls"
        publisher = SegmentPublisher(store, hls_dir, tenant_id, video_id, rungs,
                                     on_rendition_ready=on_rendition_ready)
        argv = plan.command(source, hls_dir, probe, segment_seconds=segment_seconds, preset=preset,
                            readrate=readrate)
        decoded = _ladder(argv, probe, publisher, progress, cancel, readrate, on_hls_ready)
        if decoded < probe.duration * MIN_DECODED_SHARE and probe.duration - decoded > 1:
            raise MediaError(f"Only {decoded:.1f} of the video's {probe.duration:.1f} seconds could be decoded: "
                             "the file is truncated or damaged.")
        _stop_if(cancel)

        # Stored after the ladder: images appear with `ready`; the first HLS segment is what a viewer waits for.
        progress("thumbnail", 0)
        stills.check()
        _store_file(store, k.thumbnail, stills.thumbnail)
        _store_file(store, k.poster, stills.poster)
        progress("storyboard", 0)
        _store_file(store, k.storyboard_image, stills.sprite)
        vtt = storyboard_vtt(stills.storyboard, image_url=k.storyboard_image.rsplit("/", 1)[-1])
        store.put(k.storyboard_index, vtt.encode(), "text/vtt")
        _stop_if(cancel)

        progress("finalize", 0)
        publisher.finish()
        progress("finalize", 1, force=True)
        width, height = display_size(probe)
        log.info("transcoded %s: %s, storyboard %d tiles", video_id, [r.name for r in rungs], stills.storyboard.count)
        return Result(renditions=[rung.as_rendition() for rung in rungs], master_key=k.master,
                      thumbnail_key=k.thumbnail, poster_key=k.poster, storyboard_image_key=k.storyboard_image,
                      storyboard_index_key=k.storyboard_index, playable_original=playable,
                      playable_original_key=k.original if playable else None, duration=probe.duration,
                      width=width, height=height, rungs=rungs)
    except BaseException as error:
        _remove_outputs(store, k, publisher)
        if isinstance(error, MediaError | Cancelled | TranscodeError) or not isinstance(error, Exception):
            raise
        raise TranscodeError(f"{type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class _Keys:
    """The object keys of one video's outputs (names from services.keys)."""

    tenant_id: str
    video_id: str

    @property
    def original(self) -> str:
        return keys.playable_original_key(self.tenant_id, self.video_id)

    @property
    def master(self) -> str:
        return keys.hls_master_key(self.tenant_id, self.video_id)

    @property
    def thumbnail(self) -> str:
        return keys.thumbnail_key(self.tenant_id, self.video_id)

    @property
    def poster(self) -> str:
        return keys.poster_key(self.tenant_id, self.video_id)

    @property
    def storyboard_image(self) -> str:
        return keys.storyboard_image_key(self.tenant_id, self.video_id)

    @property
    def storyboard_index(self) -> str:
        return keys.storyboard_index_key(self.tenant_id, self.video_id)


def _check(probe: Probe) -> None:
    if not probe.video_codec or probe.width <= 0 or probe.height <= 0:
        raise MediaError("The file has no decodable video stream.")
    if not probe.duration or probe.duration <= 0:
        raise MediaError("The video has no duration (is the file truncated?).")


def _stop_if(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled("cancelled")


def _store_file(store: ObjectStore, key: str, path: Path) -> None:
    with path.open("rb") as file:
        store.put(key, file)


def _playable_original(store, source, probe, facts: VideoFacts, work, k, cancel, on_original_ready) -> bool:
    """Remux an H.264/AAC source to a faststart MP4 and store it: playable by range requests right away."""
    if not is_browser_playable(probe, facts.pixel_format):
        return False
    try:
        path = remux_faststart(source, work / "original.mp4", duration=probe.duration, cancel=cancel)
    except TranscodeError as error:
        # Only a shortcut to early playback: the ladder still comes, so a failed remux does not fail the job.
        log.warning("faststart remux failed, going on without a playable original: %s", error)
        return False
    _store_file(store, k.original, path)
    path.unlink()
    if on_original_ready is not None:
        on_original_ready()
    return True


def _ladder(argv, probe, publisher, progress, cancel, readrate, on_hls_ready) -> float:
    """Encode every rung in one ffmpeg process while the publisher stores finished segments; seconds decoded."""
    decoded = 0.0
    announced = False

    def announce() -> None:
        # Called from here rather than from the publisher's thread, so callbacks stay in the caller's thread.
        nonlocal announced
        if not announced and publisher.master_stored:
            announced = True
            if on_hls_ready is not None:
                on_hls_ready()

    def on_seconds(seconds: float) -> None:
        nonlocal decoded
        decoded = max(decoded, seconds)
        publisher.check()  # the store failed: stop encoding now rather than at the end
        announce()
        progress("transcode", seconds / probe.duration)

    limit = time_limit(probe.duration) + (probe.duration / readrate if readrate else 0)
    publisher.start()
    try:
        run_ffmpeg(argv, on_progress=on_seconds, cancel=cancel, timeout=limit)
    finally:
        publisher.stop()
    publisher.check()
    # Whatever ffmpeg finished since the last poll goes out now, not after the storyboard.
    publisher.publish_ready()
    announce()
    return decoded


def _remove_outputs(store: ObjectStore, k: _Keys, publisher: SegmentPublisher | None) -> None:
    """Leave nothing half-made behind: the HLS prefix, the images and the playable original."""
    try:
        if publisher is not None:
            publisher.discard()
        else:
            store.delete_prefix(keys.hls_prefix(k.tenant_id, k.video_id))
        for key in (k.thumbnail, k.poster, k.storyboard_image, k.storyboard_index, k.original):
            store.delete(key)
    except Exception as error:  # the job's own error matters more; the next attempt overwrites anyway
        log.warning("could not remove the outputs of %s: %s", k.video_id, error)
