"""`reelhouse login / upload / logout` as a user runs them: subprocesses against a real `reelhouse up`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from services.testing import STRONG_PASSWORD, free_port

pytestmark = pytest.mark.e2e

PROGRESS = re.compile(r"^upload (?P<name>\S+): (?P<done>\d+)/(?P<total>\d+) bytes \((?P<percent>\d+)%\) "
                      r"[\d.]+ [kM]B/s ETA \S+$")
WATCH = re.compile(r"^watch: (?P<url>http://\S+/watch\?v=(?P<id>[A-Za-z0-9_-]+))$", re.MULTILINE)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            digest.update(data)
    return digest.hexdigest()


class Server:
    """A real `reelhouse up` on a free port (the pattern of tests/test_embedded_process.py)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"reelhouse-{self.port}.log"
        env = {**os.environ, "REELHOUSE_DATA_DIR": str(data_dir), "REELHOUSE_PORT": str(self.port),
               "AUTH_LOGIN_RATE_LIMIT": "1000 per minute", "AUTH_REGISTER_RATE_LIMIT": "1000 per hour",
               # No transcoding here: these tests follow uploads to `uploaded`, and keep the CPU for the CLI.
               "WORKER_CONCURRENCY": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "up"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"reelhouse up exited early:\n{self.log.read_text()}")
            with contextlib.suppress(requests.RequestException):  # not up yet, or too busy to answer
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"reelhouse up did not answer within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def register(self, tenant: str, email: str) -> dict:
        response = requests.post(self.url + "/api/auth/register", timeout=10,
                                 json={"tenant_name": tenant, "email": email, "password": STRONG_PASSWORD})
        assert response.status_code == 201, response.text
        return response.json()

    def add_user(self, admin_token: str, email: str, role: str) -> str:
        created = requests.post(self.url + "/api/auth/users", headers={"Authorization": f"Bearer {admin_token}"},
                                json={"email": email, "password": STRONG_PASSWORD, "role": role}, timeout=10)
        assert created.status_code == 201, created.text
        return self.login(email)["access_token"]

    def login(self, email: str) -> dict:
        response = requests.post(self.url + "/api/auth/login", json={"email": email, "password": STRONG_PASSWORD},
                                 timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, path: str, token: str) -> dict:
        response = requests.get(self.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def original(self, video_id: str) -> Path:
        found = list((self.data_dir / "objects" / "tenants").glob(f"*/videos/{video_id}/original"))
        assert len(found) == 1, found
        return found[0]


class SlowProxy:
    """A loopback TCP proxy passing client→server bytes at `rate` bytes/s: a slow uplink, so an upload can be
    interrupted half-way (mid-PATCH, as the server sees it) whatever the machine's speed."""

    def __init__(self, target_port: int, rate: float):
        self.target_port, self.rate = target_port, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, self.rate), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, rate: float | None) -> None:
        started, sent = time.monotonic(), 0
        try:
            while data := source.recv(64 * 1024):
                sink.sendall(data)
                sent += len(data)
                if rate and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        finally:  # either side gone: so is the other (the server sees a client that vanished mid-body)
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()


def ffmpeg(*args: str) -> subprocess.Popen:
    import imageio_ffmpeg

    return subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One server and the media for the whole module (started side by side: that is most of the time)."""
    root = tmp_path_factory.mktemp("cli")
    media = {"clip": root / "clip.mp4", "big": root / "big.mp4", "text": root / "notes.txt"}
    encoders = [
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
               "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
               "-shortest", str(media["clip"])),
        # Constant bitrate with filler, so the size does not depend on the encoder's mood: ~40 MB.
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
               "-t", "10", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-b:v", "32M",
               "-minrate", "32M", "-maxrate", "32M", "-bufsize", "32M", "-x264-params", "nal-hrd=cbr",
               "-c:a", "aac", "-shortest", str(media["big"])),
    ]
    media["text"].write_text("Meeting notes: this is plain text, not a video.\n" * 20)
    server = Server(root / "data")
    try:
        for encoder in encoders:
            _, errors = encoder.communicate(timeout=60)
            assert encoder.returncode == 0, errors.decode()
        assert 30_000_000 < media["big"].stat().st_size < 50_000_000, media["big"].stat().st_size
        server.wait_ready()
        admin = server.register("Acme", "admin@acme.test")
        editor_token = server.add_user(admin["access_token"], "editor@acme.test", "editor")
        viewer_token = server.add_user(admin["access_token"], "viewer@acme.test", "viewer")
        yield {"server": server, "root": root, "media": media, "admin": admin, "editor_token": editor_token,
               "viewer_token": viewer_token}
    finally:
        server.stop()


def cli_env(config_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REELHOUSE_TOKEN", "REELHOUSE_SERVER")}
    env.update({"REELHOUSE_CONFIG_DIR": str(config_dir), "PYTHONUNBUFFERED": "1", **extra})
    return env


def cli(config_dir: Path, *args: str, timeout: float = 60, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reelhouse_gateway", *args], env=cli_env(config_dir, **extra_env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_login_upload_wait_and_logout(env, tmp_path):
    server, clip = env["server"], env["media"]["clip"]
    config = tmp_path / "config"
    logged_in = cli(config, "login", "--server", server.url, "--email", "editor@acme.test",
                    "--password", STRONG_PASSWORD)
    assert logged_in.returncode == 0, logged_in.stderr
    session_file = config / "session.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    session = json.loads(session_file.read_text())
    assert session["server"] == server.url and session["refresh_token"] and session["access_token"]
    assert STRONG_PASSWORD not in session_file.read_text()

    # The access token is about to expire: the CLI refreshes first and keeps the rotated refresh token.
    session["access_token_expires_at"] = time.time() + 5
    session_file.write_text(json.dumps(session))

    result = cli(config, "upload", str(clip), "--chunk-size", "65536", "--wait", "--until", "uploaded",
                 "--title", "Clip ✓", "--visibility", "tenant")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_traceback(result)
    lines = result.stdout.splitlines()
    progress = [PROGRESS.match(line) for line in lines if line.startswith("upload clip.mp4:")]
    assert progress and all(progress), lines
    assert progress[-1]["percent"] == "100" and progress[-1]["done"] == str(clip.stat().st_size)
    assert [int(m["done"]) for m in progress] == sorted(int(m["done"]) for m in progress)
    watch = WATCH.search(result.stdout)
    assert watch, result.stdout
    video_id = watch["id"]
    assert watch["url"] == f"{server.url}/watch?v={video_id}"
    assert f"video {video_id}: uploaded" in lines

    video = server.get(f"/api/videos/{video_id}", env["editor_token"])
    assert video["status"] == "uploaded" and video["title"] == "Clip ✓" and video["visibility"] == "tenant"
    assert sha256(server.original(video_id)) == sha256(clip)

    rotated = json.loads(session_file.read_text())
    assert rotated["refresh_token"] != session["refresh_token"]
    assert rotated["access_token_expires_at"] > time.time() + 60
    assert session_file.stat().st_mode & 0o777 == 0o600

    logged_out = cli(config, "logout")
    assert logged_out.returncode == 0, logged_out.stderr
    assert not session_file.exists()
    spent = requests.post(server.url + "/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]},
                          timeout=10)
    assert spent.status_code == 401, spent.text


def test_token_from_the_environment_several_files_and_a_text_file(env, tmp_path):
    server, media = env["server"], env["media"]
    result = cli(tmp_path / "config", "upload", str(media["clip"]), str(media["text"]), "--wait",
                 "--until", "uploaded", REELHOUSE_TOKEN=env["editor_token"], REELHOUSE_SERVER=server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_no_traceback(result)
    watch = WATCH.search(result.stdout)  # the clip went through, before the text file failed
    assert watch and server.get(f"/api/videos/{watch['id']}", env["editor_token"])["status"] == "uploaded"

    failed = [v for v in server.get("/api/videos?status=failed", env["editor_token"])["items"]
              if v["filename"] == "notes.txt"]
    assert len(failed) == 1 and failed[0]["error"], failed
    errors = result.stderr.strip().splitlines()
    assert errors == [f"error: notes.txt: video {failed[0]['id']} failed: {failed[0]['error']}"], result.stderr
    assert not (tmp_path / "config" / "session.json").exists()


def test_without_credentials_the_user_is_told_what_to_do(env, tmp_path):
    result = cli(tmp_path / "config", "upload", str(env["media"]["clip"]), "--server", env["server"].url)
    assert result.returncode == 1
    assert "reelhouse login" in result.stderr and "REELHOUSE_TOKEN" in result.stderr
    assert_no_traceback(result)


def test_a_viewer_gets_one_line_403(env, tmp_path):
    result = cli(tmp_path / "config", "upload", str(env["media"]["clip"]), "--server", env["server"].url,
                 REELHOUSE_TOKEN=env["viewer_token"])
    assert result.returncode == 1
    assert_no_traceback(result)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "403" in errors[0] and errors[0].startswith("error: clip.mp4: "), result.stderr


def test_wait_timeout_exits_1(env, tmp_path):
    # `reelhouse up` has no transcode worker yet, and even with one a video is not ready within half a second.
    result = cli(tmp_path / "config", "upload", str(env["media"]["clip"]), "--server", env["server"].url,
                 "--wait", "--timeout", "0.5", REELHOUSE_TOKEN=env["editor_token"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timed out after 0.5s" in result.stderr and "to be ready" in result.stderr
    assert_no_traceback(result)


class Running:
    """A CLI subprocess whose stdout is read line by line, with a deadline."""

    def __init__(self, config_dir: Path, *args: str, **extra_env: str):
        # SIGINT as a terminal's Ctrl-C delivers it, even when this test runs where SIGINT is ignored (a
        # background job), which the child would inherit.
        self.proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", *args],
                                     env=cli_env(config_dir, **extra_env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no matching line within {timeout} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the CLI ended (rc {self.proc.wait()}) before a matching line: {self.seen}, "
                                     f"stderr: {self.proc.stderr.read()}")
            self.seen.append(line)
            if predicate(line):
                return line


def _progress_between(low: int, high: int):
    def check(line: str) -> bool:
        match = PROGRESS.match(line)
        return bool(match) and low < int(match["percent"]) < high
    return check


def test_an_interrupted_upload_resumes(env, tmp_path):
    server, big = env["server"], env["media"]["big"]
    owner = server.register("Resume Co", "owner@resume.test")
    token, config = owner["access_token"], tmp_path / "config"
    proxy = SlowProxy(server.port, rate=16e6)  # ~2.5 s for the whole file
    args = ("upload", str(big), "--chunk-size", "1048576", "--server", proxy.url)
    try:
        first = Running(config, *args, REELHOUSE_TOKEN=token)
        first.wait_for(_progress_between(10, 100))
        time.sleep(0.02)  # into the next PATCH's body
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL

        # Ctrl-C on the second run: exit 130, still resumable.
        second = Running(config, *args, REELHOUSE_TOKEN=token)
        resumed = second.wait_for(lambda line: line.startswith("upload big.mp4: resuming at "))
        assert int(resumed.rsplit(" ", 2)[1]) > 0
        second.wait_for(_progress_between(int(100 * int(resumed.rsplit(" ", 2)[1]) / big.stat().st_size), 100))
        second.proc.send_signal(signal.SIGINT)
        assert second.proc.wait(10) == 130, second.proc.stderr.read()
        assert "run the same command again to resume" in second.proc.stderr.read()

        third = cli(config, *args, REELHOUSE_TOKEN=token)
    finally:
        proxy.close()
    assert third.returncode == 0, third.stdout + third.stderr
    assert_no_traceback(third)
    resuming = re.search(r"^upload big\.mp4: resuming at (\d+) bytes$", third.stdout, re.MULTILINE)
    assert resuming and 0 < int(resuming[1]) < big.stat().st_size, third.stdout
    assert PROGRESS.match(third.stdout.splitlines()[-3])["percent"] == "100", third.stdout
    video_id = WATCH.search(third.stdout)["id"]

    videos = server.get("/api/videos", token)
    assert videos["total"] == 1 and videos["items"][0]["id"] == video_id, videos
    assert videos["items"][0]["status"] == "uploaded"
    assert sha256(server.original(video_id)) == sha256(big)

    # Done means done: the same file again is a new video, not a "resume" of the finished one.
    again = cli(config, "upload", str(big), "--server", server.url, REELHOUSE_TOKEN=token)
    assert again.returncode == 0 and "resuming" not in again.stdout, again.stdout + again.stderr
    assert server.get("/api/videos", token)["total"] == 2


def test_a_terminal_gets_a_progress_bar(env, tmp_path):
    primary, replica = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "reelhouse_gateway", "upload", str(env["media"]["clip"]),
                             "--server", env["server"].url],
                            env=cli_env(tmp_path / "config", REELHOUSE_TOKEN=env["editor_token"], COLUMNS="120",
                                        TERM="xterm-256color"),
                            stdin=subprocess.DEVNULL, stdout=replica, stderr=subprocess.PIPE)
    os.close(replica)
    output = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not data:
                break
            output += data
        elif proc.poll() is not None:
            break
    os.close(primary)
    assert proc.wait(10) == 0, proc.stderr.read()
    text = output.decode(errors="replace")
    assert "━" in text and "upload clip.mp4" in text, text  # rich's bar
    assert not re.search(r"\d+/\d+ bytes \(", text), text  # not the plain lines
    assert "watch: " + env["server"].url + "/watch?v=" in text
