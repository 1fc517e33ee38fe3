"""The contract's error shape `{"error": {"code", "message"}}` and the Flask handlers that produce it."""

from __future__ import annotations

import errno
import logging
import sys
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 410: "gone", 411: "length_required", 412: "precondition_failed",
    413: "payload_too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable",
    422: "validation_error", 429: "rate_limited", 500: "internal_error", 502: "bad_gateway",
    503: "unavailable", 504: "gateway_timeout", 507: "insufficient_storage",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **details: Any):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **details: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **details}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return error_response(error.status, error.code, error.message, error.headers, **error.details)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")}
        message = error.description or error.name
        if status == 404 and type(error).description == error.description:
            message = "There is nothing at this address."
        if status == 429:
            message = "Too many requests; retry after the time in Retry-After."
        return error_response(status, CODES.get(status, "error"), message, headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        storage = storage_error(error)
        if storage is not None:
            log.warning("storage trouble on %s %s: %r", request.method, request.path, error)
            return _api_error(storage)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


def storage_error(error: BaseException) -> ApiError | None:
    """The contract's answer to a failing object store, which is not the request's fault: 507 when the disk is
    full, 503 when S3 is unreachable, timing out or failing on its side; None for any other error."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(507, "insufficient_storage", "The storage is full; nothing of this request was kept. "
                        "Retry later.", headers={"Retry-After": "60"})
    if _s3_unavailable(error):
        return ApiError(503, "storage_unavailable", "The storage cannot be reached right now; retry shortly.",
                        headers={"Retry-After": "10"})
    return None


def _s3_unavailable(error: BaseException) -> bool:
    boto = sys.modules.get("botocore.exceptions")  # never imported: no S3 store in this process
    if boto is None:
        return False
    if isinstance(error, boto.ConnectionError | boto.HTTPClientError):
        return True  # refused, reset, timed out
    if isinstance(error, boto.ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500  # SlowDown, InternalError
    return False
