"""Early publishing: copy each finished HLS segment to the store while ffmpeg is still encoding the rest."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

from services import keys
from services.ports import ObjectStore

from .hls import INIT_NAME, MASTER_NAME, PLAYLIST_NAME
from .ladder import Rung

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# Until the master is out a viewer is waiting for the first segment: look often (reading a few playlists is cheap).
FIRST_POLL_SECONDS = 0.05
_MAP = re.compile(r'^#EXT-X-MAP:URI="([^"]+)"', re.MULTILINE)
# Segment names are ours (seg_%05d.m4s); anything else in a playlist is not something to copy.
_SEGMENT = re.compile(r"^(seg_\d{5,}\.m4s)$", re.MULTILINE)


class _Rendition:
    def __init__(self, rung: Rung, directory: Path):
        self.rung = rung
        self.directory = directory
        self.init_stored = False
        self.stored: set[str] = set()
        self.last_playlist: str | None = None


class SegmentPublisher:
    """Stores `<out_dir>/<rung>/…` and `<out_dir>/master.m3u8` under the video's HLS prefix, in an order that
    never lets a reader of the store find a reference to something not yet stored: init segment, then media
    segments, then the playlist naming them; the master once every rung has a playable first segment."""

    def __init__(self, store: ObjectStore, out_dir: str | Path, tenant_id: str, video_id: str, rungs: list[Rung],
                 *, on_rendition_ready: Callable[[Rung], None] | None = None):
        self.store = store
        self.out_dir = Path(out_dir)
        self.tenant_id = tenant_id
        self.video_id = video_id
        self.on_rendition_ready = on_rendition_ready
        self.renditions = [_Rendition(rung, self.out_dir / rung.name) for rung in rungs]
        self.master_stored = False
        self._lock = threading.Lock()  # the poll thread and the caller may both publish
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def prefix(self) -> str:
        return keys.hls_prefix(self.tenant_id, self.video_id)

    def _key(self, rendition: _Rendition, filename: str) -> str:
        return keys.hls_rendition_key(self.tenant_id, self.video_id, rendition.rung.name, filename)

    # -- while ffmpeg runs -------------------------------------------------------------------------------------
    def start(self) -> SegmentPublisher:
        """Publish in a background thread every POLL_SECONDS until stop()/finish()/discard()."""
        self._thread = threading.Thread(target=self._poll, name=f"hls-publisher-{self.video_id}", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS if self.master_stored else FIRST_POLL_SECONDS):
            try:
                self.publish_ready()
            except Exception as error:  # reported by finish(); a failing store fails the job, not the thread
                self._error = error
                log.warning("publishing HLS of %s failed: %s", self.video_id, error)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def check(self) -> None:
        """Raise what made the background publishing fail, if anything (so the caller stops ffmpeg early)."""
        if self._error is not None:
            raise self._error

    def publish_ready(self) -> int:
        """Store what ffmpeg has finished since the last call; returns the number of segments stored."""
        with self._lock:
            count = sum(self._publish_rendition(rendition) for rendition in self.renditions)
            if not self.master_stored and all(r.last_playlist is not None for r in self.renditions):
                self.master_stored = self._publish_master()
            return count

    def _publish_rendition(self, rendition: _Rendition, *, final: bool = False) -> int:
        try:
            # ffmpeg renames playlists into place (hls_flags temp_file): what we read is whole.
            text = (rendition.directory / PLAYLIST_NAME).read_text()
        except FileNotFoundError:
            return 0
        segments = _SEGMENT.findall(text)
        if not segments:
            return 0
        map_match = _MAP.search(text)
        if map_match and not rendition.init_stored:
            # ffmpeg names the init segment init_<n>.mp4 when there are several variants; store it as init.mp4.
            self._put_file(self._key(rendition, INIT_NAME), rendition.directory / map_match.group(1))
            rendition.init_stored = True
        count = 0
        for name in segments:
            if name not in rendition.stored:
                # A segment listed in the playlist is closed: ffmpeg adds it only after writing it.
                self._put_file(self._key(rendition, name), rendition.directory / name)
                rendition.stored.add(name)
                count += 1
        if map_match:
            text = text[:map_match.start(1)] + INIT_NAME + text[map_match.end(1):]
        if final:
            text = _as_vod(text)
        if text != rendition.last_playlist:
            self.store.put(self._key(rendition, PLAYLIST_NAME), text.encode(), "application/vnd.apple.mpegurl")
            rendition.last_playlist = text
        return count

    def _publish_master(self) -> bool:
        try:
            text = (self.out_dir / MASTER_NAME).read_text()
        except FileNotFoundError:
            return False
        # Only a master naming every rung is complete (ffmpeg writes it once each variant has a playlist).
        if not all(f"{r.rung.name}/{PLAYLIST_NAME}" in text for r in self.renditions):
            return False
        self.store.put(keys.hls_master_key(self.tenant_id, self.video_id), text.encode(),
                       "application/vnd.apple.mpegurl")
        return True

    def _put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as file:
            self.store.put(key, file)

    # -- at the end --------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """After ffmpeg succeeded: store the rest, turn every playlist into VOD with #EXT-X-ENDLIST, store the
        final master (ffmpeg rewrites it with measured bandwidths) and report each rendition ready."""
        self.stop()
        self.check()
        with self._lock:
            for rendition in self.renditions:
                self._publish_rendition(rendition, final=True)
                if not rendition.stored:
                    raise RuntimeError(f"rendition {rendition.rung.name} has no segments")
            if not self._publish_master():
                raise RuntimeError("ffmpeg wrote no complete master playlist")
            self.master_stored = True
            self._remove_stale()
        if self.on_rendition_ready is not None:
            for rendition in self.renditions:
                self.on_rendition_ready(rendition.rung)

    def _remove_stale(self) -> None:
        """A rerun overwrites the same keys; anything else under the prefix is left over from an older run."""
        wanted = {keys.hls_master_key(self.tenant_id, self.video_id)}
        for rendition in self.renditions:
            wanted |= {self._key(rendition, name) for name in (*rendition.stored, INIT_NAME, PLAYLIST_NAME)}
        for info in list(self.store.list(self.prefix)):
            if info.key not in wanted:
                self.store.delete(info.key)

    def discard(self) -> None:
        """On failure or cancel: stop publishing and remove everything under the HLS prefix."""
        self.stop()
        with self._lock:
            self.store.delete_prefix(self.prefix)
            self.master_stored = False


def local_rendition_files(directory: str | Path) -> tuple[Path, list[Path]]:
    """The init segment and media segments a finished local rendition playlist names, in order."""
    directory = Path(directory)
    text = (directory / PLAYLIST_NAME).read_text()
    map_match = _MAP.search(text)
    if map_match is None:
        raise RuntimeError(f"{directory / PLAYLIST_NAME} names no init segment")
    return directory / map_match.group(1), [directory / name for name in _SEGMENT.findall(text)]


def _as_vod(text: str) -> str:
    """The finished playlist: type VOD and #EXT-X-ENDLIST (players then know the whole length and may seek)."""
    text = text.replace("#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PLAYLIST-TYPE:VOD")
    if "#EXT-X-PLAYLIST-TYPE:" not in text:
        text = text.replace("#EXTM3U\n", "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n", 1)
    if "#EXT-X-ENDLIST" not in text:
        text = text.rstrip("\n") + "\n#EXT-X-ENDLIST\n"
    return text
