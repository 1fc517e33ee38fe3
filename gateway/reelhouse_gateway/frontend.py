"""Serves the exported web app (frontend/out) at /, or a page saying how to build it, with its security policy.

The static export inlines small bootstrap scripts into every page (Next.js App Router). Rather than allowing
`'unsafe-inline'` scripts, each page's Content-Security-Policy lists the SHA-256 of exactly the inline scripts
that page carries, read from the file (and cached until it changes).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, send_from_directory
from werkzeug.security import safe_join

bp = Blueprint("frontend", __name__)

HELP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reelhouse</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem}
code,pre{background:#f3f3f3;padding:.1rem .3rem;border-radius:4px}</style></head>
<body><h1>Reelhouse is running</h1>
<p>The web app has not been built yet. Build it once (it needs Node.js and npm) and reload this page:</p>
<pre>make frontend</pre>
<p>The API works already: see <a href="/api/docs">the API documentation</a>, or register an organisation:</p>
<pre>curl -X POST localhost:8080/api/auth/register -H 'Content-Type: application/json' \\
  -d '{"tenant_name": "Acme", "email": "me@acme.test", "password": "a long passphrase"}'</pre>
</body></html>
"""


_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
_hash_cache: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {}
_hash_lock = threading.Lock()

POLICY = ("default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; "
          "font-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
HELP_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
IMMUTABLE = "public, max-age=31536000, immutable"


def inline_script_hashes(page: Path) -> tuple[str, ...]:
    """CSP source expressions ('sha256-…') for the inline scripts of one HTML file."""
    stat = page.stat()
    key, version = str(page), (stat.st_mtime_ns, stat.st_size)
    with _hash_lock:
        cached = _hash_cache.get(key)
        if cached and cached[0] == version:
            return cached[1]
    hashes = tuple(dict.fromkeys(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(page.read_bytes()) if body.strip()))
    with _hash_lock:
        _hash_cache[key] = (version, hashes)
    return hashes


def ui_policy(page: Path) -> str:
    hashes = inline_script_hashes(page)
    return POLICY.format(hashes="".join(" " + h for h in hashes))


def _secure(response: Response, page: Path | None) -> Response:
    """Headers for everything the UI is made of: pages get the CSP; hashed build assets are cached for good."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"  # media URLs carry playback tokens
    response.headers["X-Frame-Options"] = "DENY"
    if page is not None and page.suffix == ".html":
        response.headers["Content-Security-Policy"] = ui_policy(page)
        response.headers["Cache-Control"] = "no-cache"
    return response


def default_frontend_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "frontend" / "out"


def _out_dir() -> Path | None:
    configured = current_app.extensions["reelhouse"].config.frontend_dir
    directory = configured or default_frontend_dir()
    return directory if (directory / "index.html").is_file() else None


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def serve(path: str):
    if path.startswith("api/") or path == "api":
        abort(404)
    out = _out_dir()
    if out is None:
        if path:
            abort(404)
        response = Response(HELP_PAGE, 200, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = HELP_PAGE_POLICY
        return _secure(response, None)
    for candidate in (path, f"{path}.html", f"{path}/index.html".lstrip("/")):
        full = safe_join(str(out), candidate) if candidate else None
        if full and Path(full).is_file():
            response = send_from_directory(out, candidate)
            if candidate.startswith("_next/static/"):
                response.headers["Cache-Control"] = IMMUTABLE  # content-hashed file names
            return _secure(response, Path(full))
    if "." in path.rsplit("/", 1)[-1]:
        abort(404)  # a missing asset is a 404, not the app shell
    return _secure(send_from_directory(out, "index.html"), out / "index.html")
