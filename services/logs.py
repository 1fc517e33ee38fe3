"""JSON-line logging to stdout, every line carrying the request id of the request it belongs to."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def ensure_logging(level: str = "INFO") -> None:
    """JSON lines on stdout unless configure_logging() ran already: a service started straight by gunicorn
    (`gunicorn 'auth_service:create_app()'`) logs its access lines and request ids like `reelhouse up` does."""
    if not any(getattr(handler, "_reelhouse", False) for handler in logging.getLogger().handlers):
        configure_logging(level)


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Idempotent: replaces only the handler this function installed."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_reelhouse", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler._reelhouse = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
