"""CORS for the configured origins (CORS_ORIGINS), exposing the tus and rate-limit headers browsers need."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

EXPOSED = ("Upload-Offset", "Location", "Upload-Length", "Tus-Version", "Tus-Resumable", "Tus-Max-Size",
           "Tus-Extension", "Upload-Metadata", "Upload-Expires", "Tus-Checksum-Algorithm", "X-Request-ID",
           "Retry-After", "Content-Range", "Accept-Ranges", "Content-Length", "ETag")
ALLOWED = ("Authorization", "Content-Type", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Checksum",
           "Upload-Defer-Length", "Upload-Concat", "Tus-Resumable", "X-HTTP-Method-Override", "X-Request-ID",
           "X-Requested-With", "Range", "If-Range", "If-None-Match")
METHODS = ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")


def install_cors(app: Flask, origins: Iterable[str]) -> None:
    allowed = set(origins)
    if not allowed:
        return

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or (origin not in allowed and "*" not in allowed):
            return response
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        else:  # "*": any origin may read, but never with the user's cookies
            response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED)
        response.vary.add("Origin")
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            response.headers["Access-Control-Allow-Methods"] = ", ".join(METHODS)
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED)
            response.headers["Access-Control-Max-Age"] = "86400"
        return response
