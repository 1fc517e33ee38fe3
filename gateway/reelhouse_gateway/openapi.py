"""The OpenAPI 3.1 description of everything the gateway answers; a test keeps it equal to the routes."""

from __future__ import annotations

from functools import cache
from typing import Any

from services.videos import DEFAULT_VISIBILITY, STATUSES, VISIBILITIES
from upload_service.protocol import CHECKSUM_ALGORITHMS, EXTENSIONS, OFFSET_CONTENT_TYPE, TUS_VERSION


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, tag: str, responses: dict[str, dict], *, secure: bool = True, body: dict | None = None,
        parameters: list | None = None, request_body: dict | None = None, description: str | None = None,
        security: list | None = None) -> dict:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if security is not None:
        op["security"] = security
    if description:
        op["description"] = description
    if not secure:
        op["security"] = []
    if body is not None:
        op["requestBody"] = _body(body)
    if request_body is not None:
        op["requestBody"] = request_body
    if parameters:
        op["parameters"] = parameters
    return op


AUTH_ERRORS = {"401": _error("Missing, expired or invalid access token")}
ADMIN_ERRORS = {**AUTH_ERRORS, "403": _error("The caller is not an admin")}
BAD_BODY = {"400": _error("The body is not a JSON object"), "422": _error("A field is missing or invalid")}
RATE = {"429": _error("Too many attempts from this address; see Retry-After")}
PAGING = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
]
USER_ID = [{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}]

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z0-9_]+$"}, "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "validation_error: what is wrong with each field"},
                "offset": {"type": "integer", "description": "offset_mismatch: the upload's current offset"},
                "max_size": {"type": "integer", "description": "file_too_large: the largest Upload-Length"},
                "quota": {"type": "integer", "description": "quota_exceeded: the organisation's quota in bytes"},
            },
        }},
    },
    "Tenant": {"type": "object", "required": ["id", "name"],
               "properties": {"id": {"type": "string"}, "name": {"type": "string"}}},
    "User": {
        "type": "object", "required": ["id", "email", "display_name", "role", "tenant_id"],
        "properties": {
            "id": {"type": "string"}, "email": {"type": "string", "format": "email"},
            "display_name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
            "tenant_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Tokens": {
        "type": "object", "required": ["access_token", "expires_in", "token_type"],
        "description": "`refresh_token` is in the body unless the session is a cookie session (then it is set as the "
                       "HttpOnly cookie `reelhouse_refresh`, Path=/api/auth, SameSite=Strict).",
        "properties": {
            "user": _ref("User"),
            "access_token": {"type": "string"}, "refresh_token": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds the access token is valid"},
            "token_type": {"type": "string", "const": "Bearer"},
        },
    },
    "Registration": {
        "allOf": [_ref("Tokens"), {"type": "object", "required": ["tenant", "user"],
                                   "properties": {"tenant": _ref("Tenant"), "user": _ref("User")}}],
    },
    "UserPage": {
        "type": "object", "required": ["items", "total", "page", "per_page"],
        "properties": {"items": {"type": "array", "items": _ref("User")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {
        "type": "object", "required": ["kty", "kid", "alg"],
        "properties": {"kty": {"type": "string"}, "kid": {"type": "string"}, "alg": {"type": "string"}}}}}},
    "Rendition": {
        "type": "object", "required": ["name", "width", "height", "bitrate"],
        "properties": {"name": {"type": "string", "examples": ["720p"]}, "width": {"type": "integer"},
                       "height": {"type": "integer"},
                       "bitrate": {"type": "integer", "description": "bits per second"}},
    },
    "Playback": {
        "type": "object", "required": ["hls_url", "original_url", "token_expires_at"],
        "description": "URLs carry a playback token scoped to this video and work without an Authorization header.",
        "properties": {
            "hls_url": {"type": ["string", "null"], "format": "uri-reference",
                        "description": "HLS master playlist, as soon as the first segment exists"},
            "original_url": {"type": ["string", "null"], "format": "uri-reference",
                             "description": "the original, only while/once it is browser-playable (H.264/AAC MP4)"},
            "token_expires_at": {"type": ["string", "null"], "format": "date-time",
                                 "description": "when the playback token in the URLs expires"},
        },
    },
    "Video": {
        "type": "object",
        "required": ["id", "title", "description", "status", "progress", "duration", "width", "height", "renditions",
                     "thumbnail_url", "poster_url", "storyboard_url", "playback", "error", "created_at", "owner_id",
                     "visibility", "size", "filename"],
        "properties": {
            "id": {"type": "string", "description": "also the id of its tus upload"},
            "title": {"type": "string"}, "description": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES),
                       "description": "uploading → uploaded → processing → ready | failed"},
            "progress": {"type": "number", "minimum": 0, "maximum": 100,
                         "description": "percent, during processing"},
            "duration": {"type": ["number", "null"], "description": "seconds"},
            "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
            "renditions": {"type": "array", "items": _ref("Rendition")},
            "thumbnail_url": {"type": ["string", "null"], "format": "uri-reference"},
            "poster_url": {"type": ["string", "null"], "format": "uri-reference"},
            "storyboard_url": {"type": ["string", "null"], "format": "uri-reference"},
            "playback": _ref("Playback"),
            "error": {"type": ["string", "null"], "description": "why processing failed"},
            "created_at": {"type": "string", "format": "date-time"},
            "owner_id": {"type": "string"},
            "visibility": {"type": "string", "enum": list(VISIBILITIES)},
            "size": {"type": ["integer", "null"], "description": "bytes (announced by Upload-Length)"},
            "filename": {"type": ["string", "null"], "description": "from the upload's metadata"},
            "share_url": {"type": "string", "description": "unlisted videos, for their editors only: the link "
                                                           "anyone can watch with (POST …/share rotates it)"},
        },
    },
    "VideoPage": {
        "type": "object", "required": ["items", "total", "page", "per_page"],
        "properties": {"items": {"type": "array", "items": _ref("Video")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["checks"],
              "properties": {"status": {"type": "string"}, "checks": {"type": "object",
                                                                       "additionalProperties": {"type": "string"}}}},
}

PASSWORD = {"type": "string", "minLength": 10, "maxLength": 1024}

# --- tus 1.0.0 (upload-service/upload_service/tus.py) ---------------------------------------------------------

UINT = {"type": "integer", "minimum": 0}
HTTP_DATE = {"type": "string", "description": "an HTTP-date (RFC 9110), e.g. `Wed, 21 Oct 2026 07:28:00 GMT`"}

HEADERS: dict[str, dict] = {
    "Tus-Resumable": {"description": "The tus version the server speaks; on every tus response.", "required": True,
                      "schema": {"type": "string", "const": TUS_VERSION}},
    "Tus-Version": {"description": "The tus versions the server supports.", "required": True,
                    "schema": {"type": "string", "const": TUS_VERSION}},
    "Tus-Extension": {"description": "The tus extensions the server supports.", "required": True,
                      "schema": {"type": "string", "const": EXTENSIONS}},
    "Tus-Max-Size": {"description": "The largest Upload-Length accepted, in bytes.", "required": True,
                     "schema": UINT},
    "Tus-Checksum-Algorithm": {"description": "Algorithms accepted in Upload-Checksum.", "required": True,
                               "schema": {"type": "string", "const": ",".join(CHECKSUM_ALGORITHMS)}},
    "Location": {"description": "The new upload's URL; its last segment is the upload id, which is the video id.",
                 "required": True, "schema": {"type": "string", "format": "uri-reference",
                                              "examples": ["/api/uploads/abcdefghij234567"]}},
    "Upload-Offset": {"description": "Bytes of the upload received so far.", "required": True, "schema": UINT},
    "Upload-Length": {"description": "The upload's total size in bytes.", "required": True, "schema": UINT},
    "Upload-Metadata": {"description": "The Upload-Metadata sent when the upload was created, if any.",
                        "schema": {"type": "string"}},
    "Upload-Expires": {"description": "When the unfinished upload expires (every PATCH renews it).",
                       "schema": HTTP_DATE},
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": UINT},
    "WWW-Authenticate": {"description": "`Bearer error=\"<code>\"`", "required": True, "schema": {"type": "string"}},
    "Cache-Control": {"description": "`no-store`", "required": True, "schema": {"type": "string", "const": "no-store"}},
}


def _header(name: str, required: bool | None = None) -> dict:
    """A response header from components; `required` overrides the component's (Upload-Offset after POST)."""
    if required is None or required == HEADERS[name].get("required", False):
        return {"$ref": f"#/components/headers/{name}"}
    return {**HEADERS[name], "required": required}


def _param(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}


PARAMETERS: dict[str, dict] = {
    "Tus-Resumable": {"name": "Tus-Resumable", "in": "header", "required": True,
                      "description": f"Must be `{TUS_VERSION}`; anything else (or nothing) is answered with 412.",
                      "schema": {"type": "string", "const": TUS_VERSION}},
    "Upload-Length": {"name": "Upload-Length", "in": "header", "required": True,
                      "description": "The upload's total size in bytes, at most Tus-Max-Size. Deferred lengths "
                                     "(Upload-Defer-Length) are not supported.", "schema": UINT},
    "Upload-Metadata": {
        "name": "Upload-Metadata", "in": "header",
        "description": "Comma-separated `key base64(value)` pairs. Read: `filename` (or `name`), `title` (defaults to "
                       f"the file name) and `visibility` (one of {', '.join(VISIBILITIES)}; default "
                       f"{DEFAULT_VISIBILITY}).",
        "schema": {"type": "string", "examples": ["filename Y2xpcC5tcDQ=,title TXkgY2xpcA=="]}},
    "Upload-Offset": {"name": "Upload-Offset", "in": "header", "required": True,
                      "description": "Where this chunk starts; must equal the upload's current offset.",
                      "schema": UINT},
    "Upload-Checksum": {
        "name": "Upload-Checksum", "in": "header",
        "description": f"`<algorithm> <base64 digest>` of this request's body; algorithms: "
                       f"{', '.join(CHECKSUM_ALGORITHMS)}. A mismatching chunk is discarded (460).",
        "schema": {"type": "string", "examples": ["sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="]}},
    "upload_id": {"name": "upload_id", "in": "path", "required": True,
                  "description": "The id from Location; the same as the video id.", "schema": {"type": "string"}},
    "video_id": {"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}},
}


def _chunk(required: bool) -> dict:
    return {"required": required, "description": "The upload's bytes from Upload-Offset on.",
            "content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}


def _tus(description: str, headers: tuple[str, ...] = (), *, body: bool = True,
         optional: tuple[str, ...] = ()) -> dict:
    """A tus response: Tus-Resumable always, `headers` always, `optional` sometimes; the Error body unless
    `body` is False (successes, and HEAD, whose responses never have one)."""
    response: dict[str, Any] = {"description": description}
    if body:
        response["content"] = {"application/json": {"schema": _ref("Error")}}
    response["headers"] = {"Tus-Resumable": _header("Tus-Resumable"), **{h: _header(h, True) for h in headers},
                           **{h: _header(h, False) for h in optional}}
    return response


def _tus_errors(*, body: bool = True, lost: bool = False) -> dict[str, dict]:
    """What every tus request on an existing upload can answer besides its own errors."""
    gone = "`upload_expired`: the upload expired" + (
        "; `upload_lost`: the bytes received so far were lost" if lost else "")
    return {
        "401": _tus("Missing, expired or invalid access token", ("WWW-Authenticate",), body=body),
        "403": _tus("`forbidden`: uploading needs the editor role or above", body=body),
        "404": _tus("`upload_not_found`: no such upload in this organisation (terminated, or its video deleted)",
                    body=body),
        "410": _tus(gone + ". Start the upload again", body=body),
        "412": _tus(f"`unsupported_tus_version`: Tus-Resumable is missing or not {TUS_VERSION}", ("Tus-Version",),
                    body=body),
        "503": _tus("`auth_unavailable`: the token's signing keys could not be fetched", body=body),
    }


CHUNK_400 = ("`unsupported_checksum` / `invalid_header` (Upload-Checksum), `incomplete_body` (the body ended early "
             "while a checksum was sent; nothing of it was kept)")
CHUNK_ERRORS = {
    "460": _tus("`checksum_mismatch`: the body does not match Upload-Checksum; it was discarded"),
    "503": _tus("`queue_unavailable`: the last byte arrived but processing could not be queued yet; send an empty "
                "PATCH at the final offset later to retry (or `auth_unavailable`: the token's signing keys could not "
                "be fetched)", optional=("Retry-After",)),
}

# --- videos (upload-service/upload_service/videos.py) ---------------------------------------------------------

VIDEO_ERRORS = {"401": _error("Missing, expired or invalid access token"),
                "404": _error("`not_found`: no such video, or the caller may not see it"),
                "503": _error("`auth_unavailable`: the token's signing keys could not be fetched")}
VIDEO_LIST_PARAMETERS = [
    {"name": "status", "in": "query", "description": "Only videos in this status.",
     "schema": {"type": "string", "enum": list(STATUSES)}},
    {"name": "q", "in": "query", "description": "Case-insensitive search in the title (the first 200 characters "
                                                "are used).", "schema": {"type": "string"}},
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "per_page", "in": "query", "description": "Above 100 counts as 100.",
     "schema": {"type": "integer", "minimum": 1, "default": 20}},
]


SESSION_MODE = {"type": "string", "enum": ["body", "cookie"], "default": "body",
                "description": "`cookie`: the refresh token is set as an HttpOnly cookie for /api/auth instead of "
                               "being returned (browsers)"}
REFRESH_BODY = {"type": "object", "properties": {"refresh_token": {
    "type": "string", "description": "required unless the `reelhouse_refresh` cookie is sent"}}}


def _paths() -> dict[str, dict]:
    return {
        "/api/auth/register": {"post": _op(
            "Create an organisation and its first (admin) user", "auth",
            {"201": _json(_ref("Registration"), "Created"), **BAD_BODY, "409": _error("Organisation exists"), **RATE},
            secure=False, body={"type": "object", "required": ["tenant_name", "email", "password"], "properties": {
                "tenant_name": {"type": "string", "maxLength": 100}, "email": {"type": "string", "format": "email"},
                "password": PASSWORD, "display_name": {"type": "string"}, "session": SESSION_MODE}})},
        "/api/auth/login": {"post": _op(
            "Log in with email and password", "auth",
            {"200": _json(_ref("Tokens")), **BAD_BODY, "401": _error("Wrong email or password"),
             "409": _error("The email belongs to several organisations: pass tenant"), **RATE},
            secure=False, body={"type": "object", "required": ["email", "password"], "properties": {
                "email": {"type": "string"}, "password": {"type": "string"},
                "tenant": {"type": "string", "description": "organisation id or name"}, "session": SESSION_MODE}})},
        "/api/auth/refresh": {"post": _op(
            "Swap a refresh token for a new pair (the old one is spent; reuse signs out its whole family)", "auth",
            {"200": _json(_ref("Tokens")), **BAD_BODY, "401": _error("Invalid, expired or reused refresh token"),
             "409": _error("`refresh_superseded`: spent by another request within the last 10 s (another tab); "
                           "retry with the current token")},
            secure=False, body=REFRESH_BODY)},
        "/api/auth/logout": {"post": _op(
            "Revoke a refresh token and every token rotated from it", "auth",
            {"204": {"description": "Logged out"}, **BAD_BODY}, secure=False,
            body=REFRESH_BODY)},
        "/api/auth/me": {"get": _op(
            "The caller and their organisation", "auth",
            {"200": _json({"type": "object", "required": ["user", "tenant"],
                           "properties": {"user": _ref("User"), "tenant": _ref("Tenant")}}), **AUTH_ERRORS})},
        "/api/auth/.well-known/jwks.json": {"get": _op(
            "Public keys that verify access tokens", "auth", {"200": _json(_ref("Jwks"))}, secure=False)},
        "/api/auth/users": {
            "get": _op("Users of the caller's organisation", "users", {"200": _json(_ref("UserPage")), **ADMIN_ERRORS,
                                                                       "422": _error("Bad paging parameters")},
                       parameters=PAGING),
            "post": _op("Add a user", "users",
                        {"201": _json(_ref("User"), "Created"), **BAD_BODY, **ADMIN_ERRORS,
                         "409": _error("Email taken in this organisation")},
                        body={"type": "object", "required": ["email", "password", "role"], "properties": {
                            "email": {"type": "string", "format": "email"}, "password": PASSWORD,
                            "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                            "display_name": {"type": "string"}}}),
        },
        "/api/auth/users/{user_id}": {
            "get": _op("One user", "users", {"200": _json(_ref("User")), **ADMIN_ERRORS,
                                             "404": _error("No such user in this organisation")},
                       parameters=USER_ID),
            "patch": _op("Change a user's role or display name", "users",
                         {"200": _json(_ref("User")), **BAD_BODY, **ADMIN_ERRORS, "404": _error("No such user"),
                          "409": _error("It would leave the organisation without an admin")},
                         parameters=USER_ID, body={"type": "object", "properties": {
                             "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
                             "display_name": {"type": "string"}}}),
            "delete": _op("Remove a user (their sessions end)", "users",
                          {"204": {"description": "Removed"}, **ADMIN_ERRORS, "404": _error("No such user"),
                           "409": _error("It would leave the organisation without an admin")},
                          parameters=USER_ID),
        },
        **_upload_paths(),
        **_video_paths(),
        "/healthz": {"get": _op("Alive", "operations", {"200": _json(_ref("Health"))}, secure=False)},
        "/readyz": {"get": _op("Dependencies reachable", "operations",
                               {"200": _json(_ref("Ready")), "503": _json(_ref("Ready"), "A dependency is down")},
                               secure=False)},
        "/metrics": {"get": _op("Prometheus metrics", "operations", {"200": {
            "description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}, secure=False)},
        "/api/openapi.json": {"get": _op("This document", "operations", {"200": _json({"type": "object"})},
                                         secure=False)},
        "/api/docs": {"get": _op("Interactive API documentation", "operations", {"200": {
            "description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}}, secure=False)},
    }


def _upload_paths() -> dict[str, dict]:
    version, upload_id = _param("Tus-Resumable"), _param("upload_id")
    options = _op(
        "tus discovery: version, extensions, maximum size and checksum algorithms", "uploads",
        {"204": _tus("The server's capabilities", ("Tus-Version", "Tus-Extension", "Tus-Max-Size",
                                                   "Tus-Checksum-Algorithm"), body=False)},
        secure=False, description="Needs neither an access token nor Tus-Resumable.")
    return {
        "/api/uploads": {
            "options": options,
            "post": _op(
                "Create an upload and its video; optionally with its first bytes (creation-with-upload)", "uploads",
                {"201": _tus("Created. Upload-Offset is sent when the request had a body (or Upload-Length is 0)",
                             ("Location", "Upload-Expires"), body=False, optional=("Upload-Offset",)),
                 "400": _tus("`defer_length_unsupported`, `missing_header` / `invalid_header` (Upload-Length), "
                             "`invalid_metadata` (malformed Upload-Metadata, or an unknown visibility); with a body: "
                             + CHUNK_400),
                 "401": _tus("Missing, expired or invalid access token", ("WWW-Authenticate",)),
                 "403": _tus("`forbidden`: uploading needs the editor role or above"),
                 "412": _tus(f"`unsupported_tus_version`: Tus-Resumable is missing or not {TUS_VERSION}",
                             ("Tus-Version",)),
                 "413": _tus("`file_too_large` (Upload-Length above Tus-Max-Size; `error.max_size`), "
                             "`quota_exceeded` (the organisation's storage quota would be exceeded; `error.quota`) or "
                             "`chunk_too_large` (the body is longer than Upload-Length)"),
                 "415": _tus(f"`unsupported_media_type`: the body is not {OFFSET_CONTENT_TYPE}"),
                 **CHUNK_ERRORS},
                parameters=[version, _param("Upload-Length"), _param("Upload-Metadata"), _param("Upload-Checksum")],
                request_body=_chunk(False),
                description="The id at the end of Location is also the new video's id. The video is `uploading` "
                            "until the last byte arrives, then `uploaded` (or `failed` if it is not a usable "
                            "video). Clients that can only send GET and POST may send HEAD, PATCH and DELETE as POST "
                            "with `X-HTTP-Method-Override`."),
        },
        "/api/uploads/{upload_id}": {
            "options": {**options, "parameters": [upload_id]},
            "head": _op(
                "Where an upload stands, to resume it", "uploads",
                {"200": _tus("The upload's offset and length", ("Upload-Offset", "Upload-Length", "Cache-Control"),
                             body=False, optional=("Upload-Metadata", "Upload-Expires")),
                 **_tus_errors(body=False)},
                parameters=[upload_id, version],
                description="HEAD responses never have a body, errors included: the status tells what happened. "
                            "Upload-Expires is absent once the upload is complete."),
            "patch": _op(
                "Append bytes at Upload-Offset", "uploads",
                {"204": _tus("Stored; the new offset is in Upload-Offset", ("Upload-Offset",), body=False,
                             optional=("Upload-Expires",)),
                 **_tus_errors(lost=True),
                 "400": _tus(f"`missing_header` / `invalid_header` (Upload-Offset), {CHUNK_400}"),
                 "409": _tus("`offset_mismatch`: Upload-Offset is not the upload's offset (which is in the "
                             "Upload-Offset header and `error.offset`); `upload_busy`: another request is writing "
                             "to this upload; `upload_inconsistent`: its parts do not add up, start it again",
                             optional=("Upload-Offset",)),
                 "413": _tus("`chunk_too_large`: the body is longer than the rest of the upload"),
                 "415": _tus(f"`unsupported_media_type`: the body must be sent as {OFFSET_CONTENT_TYPE}"),
                 **CHUNK_ERRORS},
                parameters=[upload_id, version, _param("Upload-Offset"), _param("Upload-Checksum")],
                request_body=_chunk(True),
                description="Once the last byte arrives the file is checked and probed, a transcode job is queued "
                            "and the video becomes `uploaded` (or `failed`). Upload-Expires is absent once the "
                            "upload is complete."),
            "delete": _op(
                "Terminate an unfinished upload: its bytes and its video go", "uploads",
                {"204": _tus("Terminated", body=False), **_tus_errors(),
                 "409": _tus("`upload_complete`: the upload is complete, delete the video instead; `upload_busy`: "
                             "another request is writing to this upload")},
                parameters=[upload_id, version]),
        },
    }


def _video_paths() -> dict[str, dict]:
    video_id = [_param("video_id")]
    forbidden = {"403": _error("`forbidden`: editing and deleting videos needs the editor role or above")}
    return {
        "/api/videos": {"get": _op(
            "The organisation's videos, newest first", "videos",
            {"200": _json(_ref("VideoPage")), "401": VIDEO_ERRORS["401"],
             "422": _error("`validation_error`: unknown status or bad paging parameters"), "503": VIDEO_ERRORS["503"]},
            parameters=VIDEO_LIST_PARAMETERS,
            description="Viewers do not see other people's `private` videos; editors and admins see all.")},
        "/api/videos/{video_id}": {
            "get": _op("One video (logged out too, with an unlisted video's `share` token)", "videos",
                       {"200": _json(_ref("Video")), **VIDEO_ERRORS,
                        "403": _error("`token_scope`: the share token is for another video")},
                       parameters=[*video_id, {"name": "share", "in": "query", "schema": {"type": "string"},
                                               "description": "An unlisted video's share token: no login needed."}],
                       security=[{}, {"bearer": []}]),
            "patch": _op(
                "Edit a video's title, description or visibility", "videos",
                {"200": _json(_ref("Video")), "400": BAD_BODY["400"], **VIDEO_ERRORS, **forbidden,
                 "422": _error("`validation_error`: a field is invalid, or none of them was sent")},
                parameters=video_id,
                body={"type": "object", "description": "At least one of the fields.",
                      "anyOf": [{"required": ["title"]}, {"required": ["description"]}, {"required": ["visibility"]}],
                      "properties": {
                          "title": {"type": "string", "minLength": 1, "maxLength": 200,
                                    "description": "whitespace is folded before the length is checked"},
                          "description": {"type": "string", "maxLength": 5000},
                          "visibility": {"type": "string", "enum": list(VISIBILITIES)}}}),
            "delete": _op("Delete a video: every file and record of it, an unfinished upload's included", "videos",
                          {"204": {"description": "Deleted"}, **VIDEO_ERRORS, **forbidden}, parameters=video_id),
        },
        "/api/videos/{video_id}/share": {"post": _op(
            "A new share link for an unlisted video; every earlier link stops working", "videos",
            {"200": _json(_ref("Video")), **VIDEO_ERRORS, **forbidden,
             "409": _error("`not_unlisted`: only unlisted videos have share links")}, parameters=video_id)},
        **_stream_paths(),
        **_webhook_paths(),
    }


WEBHOOK = {"type": "object", "required": ["id", "url", "events", "active", "created_at"], "properties": {
    "id": {"type": "string"}, "url": {"type": "string", "format": "uri"},
    "events": {"type": "array", "items": {"type": "string", "enum": ["video.ready", "video.failed"]}},
    "active": {"type": "boolean"}, "created_at": {"type": "string", "format": "date-time"}}}
DELIVERY = {"type": "object", "required": ["id", "webhook_id", "event", "status", "attempts"], "properties": {
    "id": {"type": "string"}, "webhook_id": {"type": "string"}, "event": {"type": "string"},
    "video_id": {"type": ["string", "null"]}, "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
    "attempts": {"type": "integer"}, "next_attempt_at": {"type": ["number", "null"]},
    "last_status_code": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]},
    "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}


def _page_of(item: dict) -> dict:
    return {"type": "object", "required": ["items", "total", "page", "per_page"], "properties": {
        "items": {"type": "array", "items": item}, "total": {"type": "integer"}, "page": {"type": "integer"},
        "per_page": {"type": "integer"}}}


def _webhook_paths() -> dict[str, dict]:
    webhook_id = [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    missing = {"404": _error("`not_found`: no such webhook in this organisation")}
    return {
        "/api/webhooks": {
            "get": _op("The organisation's webhooks", "webhooks",
                       {"200": _json(_page_of(WEBHOOK)), **ADMIN_ERRORS, "422": _error("Bad paging parameters")},
                       parameters=PAGING),
            "post": _op(
                "Register a webhook: video.ready / video.failed POSTed as JSON, signed with HMAC-SHA256 over "
                "`<timestamp>.<body>` (header `Reelhouse-Signature: t=…,v1=…`), retried with backoff for 24 h",
                "webhooks",
                {"201": _json({"allOf": [WEBHOOK, {"type": "object", "required": ["secret"], "properties": {
                    "secret": {"type": "string", "description": "shown only here, once"}}}]}, "Created"),
                 **BAD_BODY, **ADMIN_ERRORS,
                 "409": _error("`too_many_webhooks`"),
                 "422": _error("`unsafe_url` (not http(s), or resolving to link-local/metadata/loopback "
                               "addresses), or `validation_error`")},
                body={"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "events": {"type": "array", "items": WEBHOOK["properties"]["events"]["items"]}}}),
        },
        "/api/webhooks/{webhook_id}": {
            "get": _op("One webhook (never its secret)", "webhooks", {"200": _json(WEBHOOK), **ADMIN_ERRORS, **missing},
                       parameters=webhook_id),
            "delete": _op("Remove a webhook and its delivery records", "webhooks",
                          {"204": {"description": "Removed"}, **ADMIN_ERRORS, **missing}, parameters=webhook_id),
        },
        "/api/webhooks/{webhook_id}/deliveries": {"get": _op(
            "Delivery attempts, newest first", "webhooks",
            {"200": _json(_page_of(DELIVERY)), **ADMIN_ERRORS, **missing, "422": _error("Bad paging parameters")},
            parameters=[*webhook_id, *PAGING])},
    }


STREAM_ERRORS = {
    "401": _error("`missing_token`, `invalid_token`, `token_expired` or `share_revoked`"),
    "403": _error("`token_scope`: the playback token is for another video"),
    "404": _error("`not_found`: no such video or file (yet), or the caller may not see it"),
    "416": _error("`range_not_satisfiable`: the range starts past the end (Content-Range: bytes */size)"),
}
TOKEN = {"name": "token", "in": "query", "schema": {"type": "string"},
         "description": "A playback token (from the video's URLs) or an unlisted video's share token; "
                        "without it, send `Authorization: Bearer`."}
RANGE = {"name": "Range", "in": "header", "schema": {"type": "string"},
         "description": "RFC 9110 byte ranges: `bytes=a-b`, `bytes=a-`, `bytes=-n`; several → multipart/byteranges."}


def _stream_op(summary: str, media_type: str | tuple[str, ...], *, ranged: bool = True,
               extra: dict | None = None) -> dict:
    binary = {"schema": {"type": "string", "format": "binary"}}
    media_types = (media_type,) if isinstance(media_type, str) else media_type
    body = {"description": "OK", "content": dict.fromkeys(media_types, binary)}
    responses = {"200": body, "304": {"description": "Not modified (If-None-Match / If-Modified-Since)"},
                 **STREAM_ERRORS, **(extra or {})}
    if ranged:
        # several ranges in one request are answered as multipart/byteranges
        responses["206"] = {"description": "Partial content (Content-Range)",
                            "content": {**body["content"], "multipart/byteranges": binary}}
    else:
        responses.pop("416")
    parameters = [_param("video_id"), TOKEN] + ([RANGE] if ranged else [])
    return {"get": _op(summary + " (HEAD answers the same headers)", "stream", responses, parameters=parameters,
                       security=[{}, {"bearer": []}])}


def _stream_paths() -> dict[str, dict]:
    base = "/api/stream/{video_id}"
    playlist = "application/vnd.apple.mpegurl"
    hls_file = _stream_op("A rendition's playlist (every URI carries the token), init segment or media segment",
                          (playlist, "video/mp4", "video/iso.segment"))
    hls_file["get"]["parameters"] += [
        {"name": "rendition", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+p$"}},
        {"name": "filename", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^(index\\.m3u8|init\\.mp4|seg_[0-9]+\\.m4s)$"}}]
    original = _stream_op(
        "The original as a browser-playable MP4, by range requests", "video/mp4",
        extra={"404": _error("`not_found`, or `not_playable`: the source is not browser-playable; use HLS"),
               "400": _error("`invalid_source`")})
    original["get"]["parameters"].append({
        "name": "src", "in": "query", "schema": {"type": "string", "enum": ["upload", "faststart"]},
        "description": "Which file: `original_url` pins the one it was issued for, so a player's range requests "
                       "never mix the upload with its faststart remux; without it, the current one."})
    return {
        f"{base}/original": original,
        f"{base}/hls/master.m3u8": _stream_op("The HLS master playlist (every URI carries the token)", playlist,
                                              ranged=False),
        f"{base}/hls/{{rendition}}/{{filename}}": hls_file,
        f"{base}/thumbnail.jpg": _stream_op("Thumbnail (320 px wide)", "image/jpeg"),
        f"{base}/poster.jpg": _stream_op("Poster (up to 1280 px wide)", "image/jpeg"),
        f"{base}/storyboard.jpg": _stream_op("Storyboard sprite sheet", "image/jpeg"),
        f"{base}/storyboard.vtt": _stream_op("WebVTT index of the storyboard (`#xywh=` cues)", "text/vtt",
                                             ranged=False),
    }


def _with_refusals(paths: dict[str, dict]) -> dict[str, dict]:
    """Every operation may meet the server's own refusals, given before any handler sees the request."""
    refusals = {"414": "`uri_too_long`: the request line is too long",
                "431": "`request_header_fields_too_large`: too many or too large headers"}
    for operations in paths.values():
        for method, op in operations.items():
            for status, description in refusals.items():
                # HEAD responses are documented without a body: the status tells
                op["responses"].setdefault(status, {"description": description} if method == "head"
                                           else _error(description))
    return paths


@cache
def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Reelhouse API", "version": "0.1.0",
                 "description": "Multi-tenant video platform. Errors are always "
                                "`{\"error\": {\"code\": \"snake_case\", \"message\": \"…\"}}`."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "auth"}, {"name": "users", "description": "admin only"},
                 {"name": "uploads", "description": f"Resumable uploads, tus {TUS_VERSION} with the extensions "
                                                    f"{EXTENSIONS.replace(',', ', ')} (https://tus.io/protocols/"
                                                    "resumable-upload). Every response carries Tus-Resumable."},
                 {"name": "videos", "description": "The organisation's video library"},
                 {"name": "stream", "description": "Watching: ranges per RFC 9110, HLS, images; playback tokens"},
                 {"name": "webhooks", "description": "Signed event notifications to your servers (admin only)"},
                 {"name": "operations"}],
        "paths": _with_refusals(_paths()),
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
