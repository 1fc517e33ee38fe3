"""Browser end-to-end support: one real `reelhouse up` per test module serving the built web app, Debian's
Chromium driven by Playwright, test media made with ffmpeg at test time, screenshots kept as artifacts."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from services.testing import STRONG_PASSWORD, ReelhouseProcess, require_infra

REPO = Path(__file__).resolve().parents[2]
FRONTEND_OUT = REPO / "frontend" / "out"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "browser"
#: A name for 127.0.0.1 that is not "localhost": a page served over plain http from it is not a secure context
#: (no Web Locks, no crypto.randomUUID), like the app on a LAN address.
LAN_HOST = "reel.test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--host-resolver-rules=MAP {LAN_HOST} 127.0.0.1"]
MIB = 1024 * 1024


Process = ReelhouseProcess


def _require_browser_infra() -> None:
    if not CHROMIUM.exists():
        require_infra(f"Chromium at {CHROMIUM}")
    if not (FRONTEND_OUT / "index.html").is_file():
        require_infra(f"the built web app ({FRONTEND_OUT / 'index.html'}; run `make frontend`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_infra("the playwright package")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_browser_infra()
    process = Process(tmp_path_factory.mktemp("browser") / "data", FRONTEND_DIR=str(FRONTEND_OUT),
                      WEBHOOK_ALLOW_LOOPBACK="1", AUTH_LOGIN_RATE_LIMIT="1000 per minute",
                      AUTH_REGISTER_RATE_LIMIT="1000 per minute")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- media ---------------------------------------------------------------------------------------------------


def ffmpeg(*args: str, timeout: float = 120) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", *args], check=True,
                   timeout=timeout, capture_output=True)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def clip(media_dir) -> Path:
    """4 s of 640x360 test pattern with a tone: H.264/AAC MP4, transcoded in a couple of seconds."""
    path = media_dir / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def big_clip(media_dir) -> Path:
    """About 40 MiB in 9 s: lossless H.264 of random noise, so an upload of it takes several chunks."""
    path = media_dir / "noise.mp4"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x240", "-r", "25", "-i", "/dev/urandom", "-t", "9",
           "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path))
    assert path.stat().st_size > 4 * 8 * MIB, path.stat().st_size
    return path


@pytest.fixture(scope="module")
def long_clip(media_dir) -> Path:
    """30 s of 1280x720 (a four-rung ladder): processing takes long enough to watch the original first."""
    path = media_dir / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=220",
           "-t", "30", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(path))
    return path


# --- accounts and pages --------------------------------------------------------------------------------------


@dataclass
class Member:
    """A person using the web app in their own browser context (own cookies, own session)."""

    context: object
    page: object
    email: str
    tenant: str
    password: str = STRONG_PASSWORD
    video_ids: list[str] = field(default_factory=list)
    #: uncaught script errors and Content-Security-Policy violations seen on the member's pages
    problems: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", lambda message: self.problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text or "Refused to" in message.text else None)


def new_context(browser, server, *, lan: bool = False, **options):
    """A browser context on the server; `lan`: reached as http://reel.test:<port>, not a secure context."""
    base_url = f"http://{LAN_HOST}:{server.port}" if lan else server.url
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860}, **options)
    context.set_default_timeout(20_000)
    return context


def register_through_ui(browser, server, label: str) -> Member:
    """Creates an organisation with the register form; ends on the (empty) library."""
    suffix = uuid.uuid4().hex[:8]
    tenant, email = f"{label} {suffix}", f"{label.lower()}-{suffix}@example.test"
    context = new_context(browser, server)
    page = context.new_page()
    member = Member(context, page, email, tenant)
    member.watch(page)
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page while uploading?"
    page.goto("/register")
    page.get_by_label("Organisation name").fill(tenant)
    page.get_by_label("Your name").fill(label)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(STRONG_PASSWORD)
    page.get_by_test_id("register-submit").click()
    page.get_by_test_id("empty-state").wait_for()
    return member


def api_login(server, email: str, password: str = STRONG_PASSWORD) -> dict:
    """An API session (tokens in the body) for setting things up without the UI."""
    response = requests.post(server.url + "/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def tus_upload(server, headers: dict, path: Path, title: str) -> str:
    """Uploads a file with plain tus requests (one PATCH); returns the video id."""
    data = path.read_bytes()
    metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in
                        {"filename": path.name, "title": title}.items())
    created = requests.post(server.url + "/api/uploads", headers={
        **headers, "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": metadata}, timeout=30)
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    patched = requests.patch(server.url + location, data=data, headers={
        **headers, "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"}, timeout=60)
    assert patched.status_code == 204, patched.text
    return location.rstrip("/").rsplit("/", 1)[-1]


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class Rest:
    """Plain HTTP calls for setting things up (or checking them) without the UI."""

    def __init__(self, server):
        self.server = server

    def login(self, email: str, password: str = STRONG_PASSWORD) -> dict:
        return api_login(self.server, email, password)

    def upload(self, headers: dict, path: Path, title: str) -> str:
        return tus_upload(self.server, headers, path, title)

    def video(self, headers: dict, video_id: str) -> requests.Response:
        return requests.get(f"{self.server.url}/api/videos/{video_id}", headers=headers, timeout=10)


# --- fixtures the tests use (test modules cannot import this file under --import-mode=importlib) -------------


@pytest.fixture(scope="module")
def register(browser, server):
    """register(label) -> Member: a new organisation made with the register form, in its own browser context."""
    members: list[Member] = []

    def make(label: str) -> Member:
        member = register_through_ui(browser, server, label)
        members.append(member)
        return member

    yield make
    for member in members:
        member.context.close()


@pytest.fixture(scope="module")
def open_context(browser, server):
    """open_context() -> a fresh browser context (nobody logged in) on the server."""
    contexts = []

    def make(**options):
        context = new_context(browser, server, **options)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def alice(register) -> Member:
    """The admin of organisation A, shared by the module's tests in order."""
    return register("Alice")


@pytest.fixture
def shoot():
    return screenshot


@pytest.fixture(scope="module")
def rest(server) -> Rest:
    return Rest(server)
