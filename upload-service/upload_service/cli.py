"""`reelhouse login`, `reelhouse logout` and `reelhouse upload`: the command-line client of the upload service.

Uploads speak tus 1.0 through tuspy. Where each upload lives on the server is remembered (tuspy's URL storage, a
small JSON file in the config directory) under a key made of the server, the account and the file's content, so
running the same command again on the same file resumes at the server's offset instead of starting over.

Credentials: `REELHOUSE_TOKEN` (an access token), else the session saved by `reelhouse login` (refreshed shortly
before its access token expires; refresh tokens rotate, so the new one is saved at once, under a lock shared by
every `reelhouse` process of the user), else a prompt when stdin is a terminal.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import requests

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
DEFAULT_PORT = 8080
HTTP_TIMEOUT = 30.0
REFRESH_MARGIN = 60.0
PLAIN_PROGRESS_INTERVAL = 0.25  # at most ~4 progress lines a second when stdout is not a terminal
RETRYABLE = {None, 409, 423, 429, 460, 500, 502, 503, 504}  # None: the connection failed
RETRY_DELAYS = (0.5, 1, 2, 4, 8)
STATUS_ORDER = {"uploading": 0, "uploaded": 1, "processing": 2, "ready": 3}
VISIBILITIES = ("private", "tenant", "unlisted")
EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """A failure explained in one line (click prints it as `Error: ...` and exits 1)."""


# --------------------------------------------------------------------------------------------- configuration


def config_dir() -> Path:
    explicit = os.environ.get("REELHOUSE_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "reelhouse"


def _ensure_config_dir() -> Path:
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def normalise_server(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def default_server() -> str:
    return f"http://localhost:{os.environ.get('REELHOUSE_PORT') or DEFAULT_PORT}"


def token_claims(token: str) -> dict[str, Any]:
    """The access token's claims, unverified: only used to tell accounts apart, never to trust anything."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


# -------------------------------------------------------------------------------------------------- HTTP


def error_message(status: int | None, body: bytes | str | None = None, reason: str = "") -> str:
    """One readable line from a response: the contract's `{"error": {"code", "message"}}` when there is one."""
    try:
        error = json.loads(body or b"")["error"]
        message, code = str(error["message"]).strip(), str(error.get("code") or "")
    except (ValueError, TypeError, KeyError):
        message, code = "", ""
    if message:
        return f"{message} ({code}, HTTP {status})" if code else f"{message} (HTTP {status})"
    known = {401: "not authenticated or the token expired", 403: "forbidden: your role does not allow this",
             404: "not found", 410: "gone (expired)", 413: "too large", 429: "too many requests, retry later"}
    return f"HTTP {status} {reason or known.get(status or 0, 'error')}".strip()


def network_reason(error: BaseException) -> str:
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "timed out", "Connection reset", "Connection aborted", "Remote end closed", "Broken pipe"):
        if marker.lower() in text.lower():
            return marker.lower()
    return (text.splitlines() or [type(error).__name__])[0][:200]


def request(method: str, server: str, path: str, **kwargs) -> requests.Response:
    timeout = kwargs.pop("timeout", HTTP_TIMEOUT)
    try:
        return requests.request(method, server + path, timeout=timeout, **kwargs)
    except requests.RequestException as error:
        raise CliError(f"cannot reach {server}: {network_reason(error)}") from None


def checked(response: requests.Response) -> dict[str, Any]:
    if not response.ok:
        raise CliError(error_message(response.status_code, response.content, response.reason))
    try:
        return response.json() if response.content else {}
    except ValueError:
        raise CliError(f"unexpected answer from {response.url} (HTTP {response.status_code}, not JSON)") from None


# ---------------------------------------------------------------------------------------------- sessions


class Session:
    """The saved login: server, tokens and the access token's expiry, in a 0600 JSON file."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    @staticmethod
    def path() -> Path:
        return config_dir() / "session.json"

    @classmethod
    def load(cls) -> Session | None:
        try:
            data = json.loads(cls.path().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            click.echo(f"warning: ignoring the unreadable session file {cls.path()}: {error}", err=True)
            return None
        if not isinstance(data, dict) or not data.get("server") or not data.get("refresh_token"):
            return None
        return cls(data)

    @classmethod
    def from_tokens(cls, server: str, tokens: dict[str, Any], email: str | None = None) -> Session:
        session = cls({"server": server, "email": email})
        session.update_tokens(tokens)
        return session

    @property
    def server(self) -> str:
        return self.data["server"]

    def update_tokens(self, tokens: dict[str, Any]) -> None:
        lifetime = float(tokens.get("expires_in") or 900)
        user = tokens.get("user") or {}
        self.data.update({
            "refresh_token": tokens["refresh_token"], "access_token": tokens["access_token"],
            "access_token_expires_at": time.time() + lifetime, "access_token_lifetime": lifetime,
        })
        if user:
            self.data.update({"email": user.get("email") or self.data.get("email"), "user_id": user.get("id"),
                              "tenant_id": user.get("tenant_id"), "role": user.get("role")})

    def needs_refresh(self) -> bool:
        margin = min(REFRESH_MARGIN, float(self.data.get("access_token_lifetime") or 900) / 2)
        return float(self.data.get("access_token_expires_at") or 0) - time.time() < margin

    def save(self) -> None:
        """Atomically, never readable by others, even for a moment."""
        directory = _ensure_config_dir()
        fd, temp = tempfile.mkstemp(prefix=".session-", suffix=".json", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @classmethod
    def delete(cls) -> None:
        cls.path().unlink(missing_ok=True)


@contextlib.contextmanager
def session_lock() -> Iterator[None]:
    """Serialises refreshes across `reelhouse` processes: a refresh token spent twice revokes the whole login."""
    try:
        import fcntl
    except ImportError:  # not POSIX: best effort
        yield
        return
    directory = _ensure_config_dir()
    fd = os.open(directory / "session.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def login_request(server: str, email: str, password: str, tenant: str | None, interactive: bool = False) -> Session:
    body = {"email": email, "password": password}
    if tenant:
        body["tenant"] = tenant
    response = request("POST", server, "/api/auth/login", json=body)
    if response.status_code == 409 and not tenant:
        try:
            choices = [f"{t['name']} ({t['id']})" for t in response.json()["error"]["tenants"]]
        except (ValueError, KeyError, TypeError):
            choices = []
        if choices and interactive:
            click.echo(f"{email} belongs to several organisations: {', '.join(choices)}", err=True)
            chosen = click.prompt("Organisation (name or id)", err=True)
            return login_request(server, email, password, chosen)
        if choices:
            raise CliError(f"{email} belongs to several organisations: pass --tenant with one of {', '.join(choices)}")
    return Session.from_tokens(server, checked(response), email)


class Auth:
    """Hands out a valid access token: a fixed one (REELHOUSE_TOKEN) or the saved session's, refreshed as needed."""

    def __init__(self, server: str, token: str | None = None, session: Session | None = None,
                 interactive: bool = False):
        self.server, self.token, self.session, self.interactive = server, token, session, interactive

    @property
    def can_refresh(self) -> bool:
        return self.session is not None

    def access_token(self, force_refresh: bool = False) -> str:
        if self.token:
            return self.token
        assert self.session is not None
        if force_refresh or self.session.needs_refresh():
            self._refresh(force_refresh)
        return self.session.data["access_token"]

    def headers(self, force_refresh: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token(force_refresh)}"}

    def identity(self) -> str:
        claims = token_claims(self.access_token())
        return f"{claims.get('tid', '')}/{claims.get('sub', '')}"

    def _refresh(self, force: bool) -> None:
        assert self.session is not None
        with session_lock():
            saved = Session.load()  # another process may have rotated the tokens meanwhile: use its pair
            if saved is not None and saved.server == self.server and \
                    saved.data["refresh_token"] != self.session.data["refresh_token"]:
                self.session = saved
                if not force and not saved.needs_refresh():
                    return
            response = request("POST", self.server, "/api/auth/refresh",
                               json={"refresh_token": self.session.data["refresh_token"]})
            if response.status_code in (400, 401):
                Session.delete()  # the refresh token is dead: nothing in this file can be used any more
                if not self.interactive:
                    raise CliError(f"your session for {self.server} has expired or was revoked "
                                   f"({error_message(response.status_code, response.content)}); "
                                   "run `reelhouse login` again or set REELHOUSE_TOKEN")
                click.echo(f"Your session for {self.server} has expired; log in again.", err=True)
                self.session = prompt_login(self.server)
                return
            self.session.update_tokens(checked(response))
            self.session.save()


def prompt_login(server: str) -> Session:
    email = click.prompt(f"Email for {server}", err=True)
    password = click.prompt("Password", hide_input=True, err=True)
    session = login_request(server, email, password, None, interactive=True)
    session.save()
    click.echo(f"Logged in as {email}; session saved to {Session.path()}", err=True)
    return session


def resolve(server_option: str | None) -> tuple[str, Auth]:
    """The server to talk to and how to authenticate there."""
    session = Session.load()
    server = normalise_server(server_option or os.environ.get("REELHOUSE_SERVER")
                              or (session.server if session else None) or default_server())
    token = (os.environ.get("REELHOUSE_TOKEN") or "").strip()
    interactive = sys.stdin.isatty()
    if token:
        return server, Auth(server, token=token)
    if session is not None and session.server == server:
        return server, Auth(server, session=session, interactive=interactive)
    if interactive:
        return server, Auth(server, session=prompt_login(server), interactive=True)
    elsewhere = f" (your saved session is for {session.server})" if session is not None else ""
    raise CliError(f"not logged in to {server}{elsewhere}: run `reelhouse login --server {server}` "
                   "or set REELHOUSE_TOKEN to an access token")


# ------------------------------------------------------------------------------------------ login/logout


@click.command()
@click.option("--server", metavar="URL", help="Reelhouse server (REELHOUSE_SERVER, default http://localhost:8080).")
@click.option("--email", prompt=True, help="Your account's email address.")
@click.option("--password", prompt=True, hide_input=True, help="Prompted for (hidden) when not given.")
@click.option("--tenant", help="Organisation id or name, when the email belongs to several.")
def login(server: str | None, email: str, password: str, tenant: str | None) -> None:
    """Log in and save the session (refreshed automatically) for later commands."""
    url = normalise_server(server or os.environ.get("REELHOUSE_SERVER") or default_server())
    session = login_request(url, email, password, tenant, interactive=sys.stdin.isatty())
    with session_lock():
        old = Session.load()
        session.save()
    if old is not None and old.data.get("refresh_token") != session.data["refresh_token"]:
        with contextlib.suppress(CliError):  # the previous login is replaced: do not leave it valid
            request("POST", old.server, "/api/auth/logout", json={"refresh_token": old.data["refresh_token"]},
                    timeout=5)
    role = session.data.get("role")
    click.echo(f"Logged in to {url} as {session.data.get('email') or email}" + (f" ({role})" if role else "")
               + f"; session saved to {Session.path()}")


@click.command()
def logout() -> None:
    """Revoke the saved session on its server and delete it."""
    with session_lock():
        session = Session.load()
        if session is None:
            click.echo("Not logged in.")
            return
        try:
            response = request("POST", session.server, "/api/auth/logout",
                                json={"refresh_token": session.data["refresh_token"]})
            if not response.ok:
                click.echo(f"warning: the server did not revoke the session: "
                           f"{error_message(response.status_code, response.content, response.reason)}", err=True)
        except CliError as error:
            click.echo(f"warning: {error.message}; the session was only deleted locally", err=True)
        Session.delete()
    click.echo(f"Logged out of {session.server}.")


# ------------------------------------------------------------------------------------------------ upload


class UploadFailed(Exception):
    """One file could not be uploaded (or its video failed); the message is one line."""


def format_bytes_rate(rate: float) -> str:
    return f"{rate / 1e6:.1f} MB/s" if rate >= 1e6 else f"{rate / 1e3:.1f} kB/s"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class PlainProgress:
    """Progress lines for pipes, CI logs and tests: `upload clip.mp4: 12582912/31457280 bytes (40%) ...`."""

    def __init__(self, label: str, total: int, start: int):
        self.label, self.total, self.start = label, total, start
        self.started = time.monotonic()
        self.last_print = float("-inf")

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self.last_print < PLAIN_PROGRESS_INTERVAL:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-6)
        rate = max(done - self.start, 0) / elapsed
        eta = (self.total - done) / rate if rate > 0 else None
        percent = 100 * done // self.total if self.total else 100
        click.echo(f"upload {self.label}: {done}/{self.total} bytes ({percent}%) {format_bytes_rate(rate)} "
                   f"ETA {format_eta(eta)}")

    def close(self) -> None:
        pass


class RichProgress:
    """A progress bar with bytes done/total, speed and ETA, for terminals."""

    def __init__(self, label: str, total: int, start: int):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn())
        self.progress.start()
        self.task = self.progress.add_task(f"upload {label}", total=total, completed=start)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        self.progress.stop()


def use_terminal_ui() -> bool:
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


class _Fingerprint:
    """The key under which an upload's URL is remembered: server, account, size and a digest of the file's
    first and last 64 KiB. tuspy's own fingerprint (first 64 KiB and size only) would resume an upload on
    another server or of another account."""

    BLOCK = 64 * 1024

    def __init__(self, scope: str):
        self.scope = scope

    def get_fingerprint(self, stream) -> str:
        size = stream.seek(0, os.SEEK_END)
        digest = hashlib.sha256()
        stream.seek(0)
        digest.update(stream.read(self.BLOCK))
        if size > self.BLOCK:
            stream.seek(max(self.BLOCK, size - self.BLOCK))
            digest.update(stream.read(self.BLOCK))
        return f"{self.scope}|size:{size}|sha256:{digest.hexdigest()}"

    def key_for(self, path: Path) -> str:
        with open(path, "rb") as stream:
            return self.get_fingerprint(stream)


class Uploads:
    """Everything `reelhouse upload` needs to send files one after another."""

    def __init__(self, server: str, auth: Auth, chunk_size: int, title: str | None, visibility: str | None):
        from tusclient.client import TusClient
        from tusclient.storage.filestorage import FileStorage

        self.server, self.auth, self.chunk_size = server, auth, chunk_size
        self.title, self.visibility = title, visibility
        self.client = TusClient(server + "/api/uploads", headers=auth.headers())
        self.storage = self._url_storage(FileStorage)
        self.fingerprint = _Fingerprint(f"{server}|{auth.identity()}")
        self.terminal = use_terminal_ui()

    @staticmethod
    def _url_storage(storage_class):
        path = _ensure_config_dir() / "uploads.json"
        try:
            storage = storage_class(str(path))
            storage.get_item("")  # TinyDB reads lazily: find a damaged file now
            return storage
        except ValueError:  # damaged (a process killed mid-write): only resumability is lost
            aside = path.with_suffix(".json.damaged")
            os.replace(path, aside)
            click.echo(f"warning: {path} was damaged and was moved to {aside}; "
                       "interrupted uploads will start over", err=True)
            return storage_class(str(path))

    def close(self) -> None:
        self.storage.close()

    def _metadata(self, path: Path) -> dict[str, str]:
        metadata = {"filename": path.name}
        if self.title:
            metadata["title"] = self.title
        if self.visibility:
            metadata["visibility"] = self.visibility
        return metadata

    def _uploader(self, path: Path, key: str):
        """A tuspy uploader, resuming at the server's offset when this file's upload URL is remembered."""
        from tusclient.exceptions import TusCommunicationError

        resumable = self.storage.get_item(key) is not None
        for _ in range(2):
            self.client.headers = self.auth.headers()
            try:
                uploader = self.client.uploader(file_path=str(path), chunk_size=self.chunk_size,
                                                metadata=self._metadata(path), store_url=True,
                                                url_storage=self.storage, fingerprinter=self.fingerprint)
            except TusCommunicationError as error:
                if resumable and error.status_code in (404, 410):
                    self.storage.remove_item(key)  # terminated, expired or deleted: start afresh
                    click.echo(f"upload {path.name}: the interrupted upload is gone from the server; starting over")
                    resumable = False
                    continue
                if resumable and error.status_code == 401 and self.auth.can_refresh:
                    self.auth.access_token(force_refresh=True)
                    continue
                raise UploadFailed(self._describe(error, "checking the interrupted upload")) from None
            if resumable:
                click.echo(f"upload {path.name}: resuming at {uploader.offset} bytes")
            return uploader
        raise UploadFailed("could not resume or restart the upload")

    @staticmethod
    def _describe(error, doing: str = "uploading") -> str:
        status = getattr(error, "status_code", None)
        if status is None:
            return f"connection failed while {doing}: {network_reason(error)}"
        return error_message(status, getattr(error, "response_content", None))

    def send(self, path: Path) -> str:
        """Upload one file (resuming if it can); returns the video id."""
        from tusclient.exceptions import TusCommunicationError

        size = path.stat().st_size
        key = self.fingerprint.key_for(path)
        uploader = self._uploader(path, key)
        progress = (RichProgress if self.terminal else PlainProgress)(path.name, size, uploader.offset)
        failures, reauthenticated, restarted, stalled = 0, False, False, 0
        try:
            while True:
                self.client.headers = self.auth.headers()
                before = uploader.offset if uploader.url else -1
                try:
                    uploader.upload_chunk()  # the first call creates the upload (POST) and remembers its URL
                except TusCommunicationError as error:
                    status = error.status_code
                    if status == 401 and self.auth.can_refresh and not reauthenticated:
                        reauthenticated = True
                        self.auth.access_token(force_refresh=True)
                        continue
                    if status in (404, 410) and uploader.url and not restarted:
                        restarted = True  # expired or removed on the server meanwhile: start afresh, once
                        self.storage.remove_item(key)
                        uploader = self._uploader(path, key)
                        continue
                    if status in RETRYABLE and failures < len(RETRY_DELAYS):
                        click.echo(f"upload {path.name}: {self._describe(error)}; retrying in "
                                   f"{RETRY_DELAYS[failures]:g}s", err=True)
                        time.sleep(RETRY_DELAYS[failures])
                        failures += 1
                        if uploader.url:
                            with contextlib.suppress(TusCommunicationError):
                                uploader.offset = uploader.get_offset()
                        continue
                    raise UploadFailed(self._describe(error)) from None
                failures, reauthenticated = 0, False
                progress.update(uploader.offset)
                if uploader.offset >= size:
                    break
                stalled = stalled + 1 if uploader.offset <= before else 0
                if stalled >= 3:
                    raise UploadFailed(f"the server accepts no more bytes at offset {uploader.offset}")
        finally:
            progress.close()
        self.storage.remove_item(key)  # done: the same file sent again is a new video
        return uploader.url.rstrip("/").rsplit("/", 1)[-1]

    def video(self, video_id: str) -> dict[str, Any]:
        response = request("GET", self.server, f"/api/videos/{video_id}", headers=self.auth.headers())
        if response.status_code == 401 and self.auth.can_refresh:
            response = request("GET", self.server, f"/api/videos/{video_id}",
                               headers=self.auth.headers(force_refresh=True))
        if not response.ok:
            raise UploadFailed(f"cannot read video {video_id}: "
                               f"{error_message(response.status_code, response.content, response.reason)}")
        return response.json()

    def wait(self, video_id: str, until: str, timeout: float | None) -> dict[str, Any]:
        """Poll the video every second until it reaches `until` (or later), fails, or time runs out."""
        deadline = time.monotonic() + timeout if timeout else None
        shown: tuple | None = None
        bar = None
        try:
            while True:
                try:
                    video = self.video(video_id)
                except CliError:  # the server is unreachable for a moment (a restart): keep waiting
                    video = None
                if video is not None:
                    status, percent = video.get("status"), int(video.get("progress") or 0)
                    if status == "failed":
                        raise UploadFailed(f"video {video_id} failed: {video.get('error') or 'no reason given'}")
                    if (status, percent) != shown:
                        shown = (status, percent)
                        if self.terminal:
                            bar = bar or self._status_bar(video_id)
                            bar[0].update(bar[1], description=f"video {video_id}: {status}", completed=percent)
                        else:
                            click.echo(f"video {video_id}: {status}"
                                       + (f" {percent}%" if status == "processing" else ""))
                    if STATUS_ORDER.get(status, -1) >= STATUS_ORDER[until]:
                        return video
                if deadline is not None and time.monotonic() >= deadline:
                    now = shown[0] if shown else "unknown"
                    raise UploadFailed(f"timed out after {timeout:g}s waiting for video {video_id} to be {until} "
                                       f"(it is {now})")
                time.sleep(1)
        finally:
            if bar is not None:
                bar[0].stop()

    @staticmethod
    def _status_bar(video_id: str):
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn())
        progress.start()
        return progress, progress.add_task(f"video {video_id}", total=100)


@click.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--title", help="The video's title (default: the file name).")
@click.option("--visibility", type=click.Choice(VISIBILITIES), help="Who may watch it (server default: tenant).")
@click.option("--server", metavar="URL",
              help="Reelhouse server (default: REELHOUSE_SERVER, the saved session's, or http://localhost:8080).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=DEFAULT_CHUNK_SIZE, show_default=True,
              metavar="BYTES", help="Bytes sent per request.")
@click.option("--wait", is_flag=True, help="Follow each video until it is ready (or --until), showing progress.")
@click.option("--until", type=click.Choice(["uploaded", "ready"]), default="ready", show_default=True,
              help="With --wait: the status to wait for.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="With --wait: give up (exit 1) after this long per video (default: no limit).")
@click.pass_context
def upload(ctx: click.Context, files: tuple[Path, ...], title: str | None, visibility: str | None,
           server: str | None, chunk_size: int, wait: bool, until: str, timeout: float | None) -> None:
    """Upload video files (resumable: run the same command again to continue an interrupted upload).

    Credentials come from REELHOUSE_TOKEN (an access token), else the session saved by `reelhouse login`,
    else a prompt. Prints each video's id and watch URL; exits 1 if any file failed, 130 when interrupted.
    """
    try:
        import tusclient.client  # noqa: F401 - fail early and clearly
    except ImportError:
        raise CliError("uploading needs the tuspy package: pip install 'tuspy>=1.1,<2'") from None
    try:
        url, auth = resolve(server)
        uploads = Uploads(url, auth, chunk_size, title, visibility)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    failed = 0
    try:
        for path in files:
            try:
                video_id = uploads.send(path)
                video = uploads.video(video_id)
                if video.get("status") == "failed":
                    raise UploadFailed(f"video {video_id} failed: {video.get('error') or 'no reason given'}")
                click.echo(f"uploaded {path.name} as video {video_id} ({video.get('status')})")
                click.echo(f"watch: {url}/watch?v={video_id}")
                if wait:
                    uploads.wait(video_id, until, timeout)
            except (UploadFailed, CliError) as error:
                failed += 1
                message = error.message if isinstance(error, CliError) else str(error)
                click.echo(f"error: {path.name}: {message}", err=True)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: run the same command again to resume the upload", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    finally:
        uploads.close()
    if failed:
        ctx.exit(1)
