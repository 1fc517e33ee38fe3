"""Run one ffmpeg process: progress from `-progress pipe:1`, cancel and time limit, errors with stderr."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import imageio_ffmpeg

POLL_SECONDS = 0.2  # how quickly a cancel or a time limit is noticed
STDERR_TAIL_LINES = 12


class TranscodeError(RuntimeError):
    """ffmpeg failed for a reason that is not the user's file (or not known to be): worth a retry."""


class TranscodeTimeout(TranscodeError):
    """ffmpeg ran past its time limit and was killed."""


class Cancelled(Exception):  # noqa: N818 - a state, not an error: the job was withdrawn
    """The job was cancelled (e.g. the video was deleted); ffmpeg was killed."""


def ffmpeg_binary() -> str:
    """`FFMPEG_BINARY` if set, else the static build shipped in the imageio-ffmpeg wheel."""
    return os.environ.get("FFMPEG_BINARY") or imageio_ffmpeg.get_ffmpeg_exe()


MAX_RUN_SECONDS = 5 * 3600.0  # below the broker's consumer timeout (6 h in compose): a job must end first


def time_limit(duration: float | None, *, base: float = 60.0, factor: float = 10.0) -> float:
    """A generous limit for one ffmpeg run over a source of `duration` seconds (runaway protection only)."""
    return min(MAX_RUN_SECONDS, base + factor * max(float(duration or 0), 0.0))


def run_ffmpeg(argv: Sequence[str], *, on_progress: Callable[[float], None] | None = None,
               cancel: threading.Event | None = None, timeout: float | None = None) -> None:
    """Run argv (which should carry `-progress pipe:1 -nostats`) to the end; raise on failure.

    on_progress(seconds_done) runs in the caller's thread. A set `cancel` raises Cancelled, passing
    `timeout` seconds raises TranscodeTimeout; either way the whole process group is killed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    # stderr goes to a file: a pipe nobody reads fills up (64 KiB) and blocks ffmpeg forever.
    with tempfile.TemporaryFile(prefix="ffmpeg-stderr-") as stderr:
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                   start_new_session=True,  # own process group: kill it and anything it forks
                                   preexec_fn=_die_with_parent)
        try:
            _follow(process, on_progress, cancel, deadline, timeout)
        except BaseException:
            _kill(process)
            raise
        finally:
            process.stdout.close()
        if process.returncode != 0:
            raise TranscodeError(f"ffmpeg exited with status {process.returncode}: {_tail(stderr)}")


def _die_with_parent() -> None:
    """Linux: ffmpeg gets SIGKILL when the worker that started it dies, instead of encoding on as an orphan."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _follow(process: subprocess.Popen, on_progress, cancel, deadline, timeout) -> None:
    fd = process.stdout.fileno()
    buffer = b""
    seconds = 0.0
    open_ = True
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        if deadline is not None and time.monotonic() > deadline:
            raise TranscodeTimeout(f"ffmpeg took longer than its {timeout:.0f} s limit")
        if not open_:
            # stdout closed: ffmpeg is exiting; keep checking cancel/deadline while it does.
            try:
                process.wait(POLL_SECONDS)
                return
            except subprocess.TimeoutExpired:
                continue
        readable, _, _ = select.select([fd], [], [], POLL_SECONDS)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            open_ = False
            continue
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            key, _, value = line.decode("ascii", "replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                seconds = max(seconds, int(value) / 1_000_000)
            elif key == "progress" and on_progress is not None:
                # One report per progress block (ffmpeg writes a block every -stats_period, 0.5 s by default).
                on_progress(seconds)


def _kill(process: subprocess.Popen) -> None:
    # SIGKILL, not SIGTERM: on SIGTERM ffmpeg finalises its outputs (e.g. writes #EXT-X-ENDLIST), which would
    # make a half-done ladder look complete.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _tail(stderr) -> str:
    stderr.seek(0, os.SEEK_END)
    stderr.seek(max(0, stderr.tell() - 8192))
    lines = [line.strip() for line in stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return " | ".join(lines[-STDERR_TAIL_LINES:]) or "(no error output)"
