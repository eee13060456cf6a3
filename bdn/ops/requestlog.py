"""One structured log line per request: method, path, status, bytes, cache result, duration.

The path is logged without its query string (presigned URLs carry signatures there) and no
header is ever logged, so credentials never reach the log. A request too malformed to reach
a handler gets one short line too, instead of aiohttp's ERROR with a traceback quoting the
client's bytes (which would let any client flood the log).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bdn.errors import Handler
from bdn.ops.metrics import observe_request

log = logging.getLogger("bdn.access")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class MalformedRequests(logging.Filter):
    """Turns aiohttp's record of an unparsable request into one INFO line without the request's bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        level = min(record.levelno, logging.INFO)
        if not log.isEnabledFor(level):
            return False
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.msg, record.args = "malformed request from %s (%s, answered %d)", (peer, type(error).__name__,
                                                                                  error.code)
        record.exc_info, record.exc_text = None, None
        return True


def configure(level: str) -> None:
    """The daemon's logging: one format, `level`, and malformed requests in one line each."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequests())


@dataclass
class RequestRecord:
    """What a handler learned about a request, for its log line."""

    source: str = ""
    cache: str = ""
    bytes: int | None = None  # payload bytes sent; None when the response body says it
    aborted: bool = False  # the connection was cut mid-body (an upstream failure after the headers)
    first_byte_at: float | None = None  # time.monotonic() when the body started (streamed answers)


_RECORD_KEY = web.RequestKey("bdn.record", RequestRecord)


def record_of(request: web.Request) -> RequestRecord:
    record = request.get(_RECORD_KEY)
    if record is None:
        record = request[_RECORD_KEY] = RequestRecord()
    return record


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 499  # the client went away before an answer
    record = record_of(request)
    try:
        response = await handler(request)
        status = response.status
        if record.bytes is None and request.method != "HEAD":
            record.bytes = response.content_length or 0
        return response
    finally:
        elapsed = time.monotonic() - started
        ttfb = None if record.first_byte_at is None else record.first_byte_at - started
        observe_request(request.app, record.source, status, record.cache, record.bytes or 0, ttfb)
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps({
                "method": request.method,
                "path": request.raw_path.split("?", 1)[0][:1024],
                "status": status,
                "bytes": record.bytes or 0,
                "source": record.source,
                "cache": record.cache,
                "aborted": record.aborted,
                "duration_ms": round(elapsed * 1000, 2),
            }))
