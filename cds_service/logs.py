"""Structured JSON logs, each line carrying the id of the request it belongs to.

The request id comes from an `X-Request-ID` header (when it is a plain token) or is made up,
and is sent back in the response. Access lines hold method, path, status and duration: never
headers, bodies, tokens or patient data.
"""

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any, TextIO

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str] = ContextVar("request_id", default="-")
access = logging.getLogger("cds_service.access")
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        line |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, stream: TextIO = sys.stdout) -> None:
    """JSON lines on `stdout` for the service; commands that print results log to stderr."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Alembic narrates every migration step at info; its warnings and errors still show.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


CLIENT_CLOSED = 499
"""Logged for a call that ended without a response: the client left and the call was cancelled
(nginx's convention)."""


class RequestLog:
    """ASGI middleware: request id in context and response, and one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started, status = time.perf_counter(), CLIENT_CLOSED

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500 if status == CLIENT_CLOSED else status
            raise
        finally:
            access.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            request_id.reset(token)
