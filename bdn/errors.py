"""The error hierarchy and the one middleware that turns errors into short JSON answers.

Handlers and the cache raise `BdnError` subclasses; nothing else decides a status code.
Bodies are `{"error": "...", "detail": "..."}`; HEAD answers carry no body; an unexpected
exception becomes a 500 whose body never holds a traceback (the log line does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("bdn.errors")


class BdnError(Exception):
    """Base class: an answer for the client with a status, a short error code and a detail."""

    status = 500
    code = "internal_error"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(BdnError):
    status, code = 400, "bad_request"


class NotFound(BdnError):
    status, code = 404, "not_found"


class Forbidden(BdnError):
    status, code = 403, "forbidden"


class PreconditionFailed(BdnError):
    status, code = 412, "precondition_failed"


class RangeNotSatisfiable(BdnError):
    status, code = 416, "range_not_satisfiable"


class UpstreamError(BdnError):
    """The upstream answered wrongly (bad status, short body, wrong Content-Range, ...)."""

    status, code = 502, "upstream_error"


class UpstreamUnreachable(UpstreamError):
    """The upstream could not be reached or timed out."""

    code = "upstream_unreachable"


class VersionChanged(UpstreamError):
    """The object changed upstream while bdn was reading a version of it."""

    code = "upstream_changed"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.Request, status: int, code: str, detail: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = b"" if request.method == "HEAD" else json.dumps({"error": code, "detail": detail}).encode()
    response = web.Response(status=status, body=body, content_type="application/json", headers=headers)
    if request.method == "HEAD":
        response.headers["Content-Length"] = "0"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BdnError as exc:
        return error_response(request, exc.status, exc.code, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, 500, "internal_error", "unexpected error; see the daemon's log")
