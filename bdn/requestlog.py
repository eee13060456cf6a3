"""One structured log line per request: method, path, status, bytes, cache result, duration.

The path is logged without its query string (presigned URLs carry signatures there) and no
header is ever logged, so credentials never reach the log.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from bdn.errors import Handler
from bdn.metrics import observe_request

log = logging.getLogger("bdn.access")


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
