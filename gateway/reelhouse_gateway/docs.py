"""/api/openapi.json and the /api/docs page (Swagger UI served from the installed package, no CDN)."""

from __future__ import annotations

from pathlib import Path

import swagger_ui
from flask import Blueprint, jsonify, send_from_directory

from reelhouse_gateway.openapi import spec

bp = Blueprint("docs", __name__)

ASSETS = Path(swagger_ui.__file__).parent / "static"
ALLOWED_ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                  "favicon-32x32.png", "favicon-16x16.png"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reelhouse API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/api/docs/assets/init.js"></script>
</body></html>
"""

INIT = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
});
"""


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(spec())


# Swagger UI loads only its own bundled scripts (no inline ones); it sets inline styles and data: images.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.get("/api/docs")
def docs_page():
    return PAGE, 200, {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": PAGE_POLICY,
                       "X-Frame-Options": "DENY"}


@bp.get("/api/docs/assets/<name>")
def docs_asset(name: str):
    if name == "init.js":
        return INIT, 200, {"Content-Type": "text/javascript; charset=utf-8"}
    if name not in ALLOWED_ASSETS:
        return jsonify(error={"code": "not_found", "message": "No such asset."}), 404
    return send_from_directory(ASSETS, name, max_age=3600)
