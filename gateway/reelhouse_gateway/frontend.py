"""Serves the exported web app (frontend/out) at /, or a page saying how to build it."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, current_app, send_from_directory
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
        return HELP_PAGE, 200, {"Content-Type": "text/html; charset=utf-8"}
    for candidate in (path, f"{path}.html", f"{path}/index.html".lstrip("/")):
        full = safe_join(str(out), candidate) if candidate else None
        if full and Path(full).is_file():
            return send_from_directory(out, candidate)
    if "." in path.rsplit("/", 1)[-1]:
        abort(404)  # a missing asset is a 404, not the app shell
    return send_from_directory(out, "index.html")
