"""The error hierarchy and the one middleware that turns errors into short JSON answers.

Handlers and the cache raise `BdnError` subclasses; nothing else decides a status code.
Bodies are `{"error": "...", "detail": "..."}`, except for requests from S3 SDKs, which get
S3's XML `<Error><Code>` body so boto3 raises `NoSuchKey`, `InvalidRange`, ... as it would
against S3 (PROTOCOLS.md 2.5). HEAD answers carry no body; an unexpected exception becomes
a 500 whose body never holds a traceback (the log line does).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from xml.sax.saxutils import escape

from aiohttp import web

log = logging.getLogger("bdn.errors")


class BdnError(Exception):
    """Base class: an answer for the client with a status, a short error code and a detail."""

    status = 500
    code = "internal_error"
    s3_code = "InternalError"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(BdnError):
    status, code = 400, "bad_request"
    s3_code = "InvalidRequest"


class NotFound(BdnError):
    status, code = 404, "not_found"
    s3_code = "NoSuchKey"


class Unauthorized(BdnError):
    status, code = 401, "unauthorized"
    s3_code = "AccessDenied"


class Forbidden(BdnError):
    status, code = 403, "forbidden"
    s3_code = "AccessDenied"


class PreconditionFailed(BdnError):
    status, code = 412, "precondition_failed"
    s3_code = "PreconditionFailed"


class RangeNotSatisfiable(BdnError):
    status, code = 416, "range_not_satisfiable"
    s3_code = "InvalidRange"


class CacheDiskError(BdnError):
    """The cache disk failed a write in the middle of a fill."""

    status, code = 503, "cache_disk_error"
    s3_code = "ServiceUnavailable"


class HubError(BdnError):
    """An answer the Hugging Face Hub gave (or would give), passed on with its `X-Error-Code` headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail, headers=headers)
        self.status = status
        self.code = headers.get("X-Error-Code", "hub_error")


class UpstreamError(BdnError):
    """The upstream answered wrongly (bad status, short body, wrong Content-Range, ...)."""

    status, code = 502, "upstream_error"
    s3_code = "BadGateway"


class UpstreamUnreachable(UpstreamError):
    """The upstream could not be reached or timed out."""

    code = "upstream_unreachable"


class UpstreamBusy(UpstreamUnreachable):
    """The upstream answered 429 or 5xx: worth retrying, after `retry_after` seconds if it said so.

    When retries run out the client hears 503 for 429/503 (with the upstream's Retry-After) and
    502 for the other 5xx.
    """

    code = "upstream_busy"

    def __init__(self, detail: str, *, status: int, retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        super().__init__(detail, headers=headers)
        self.retry_after = retry_after
        if status in (429, 503):
            self.status, self.s3_code = 503, "SlowDown"


class VersionChanged(UpstreamError):
    """The object changed upstream while bdn was reading a version of it."""

    code = "upstream_changed"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def from_s3_sdk(request: web.Request) -> bool:
    """Whether the request was sent by an S3 SDK (boto3, aiobotocore, the AWS CLI, ...)."""
    authorization = request.headers.get("Authorization", "")
    return authorization.startswith("AWS4-") or any(
        name.lower().startswith(("x-amz-", "amz-sdk-")) for name in request.headers
    )


def _s3_error_body(code: str, detail: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(detail)}</Message></Error>").encode()


def error_response(request: web.Request, status: int, code: str, detail: str,
                   headers: dict[str, str] | None = None, s3_code: str | None = None) -> web.Response:
    if request.method == "HEAD":
        response = web.Response(status=status, headers=headers)
        response.headers["Content-Length"] = "0"
        return response
    if s3_code is not None and from_s3_sdk(request):
        return web.Response(status=status, body=_s3_error_body(s3_code, detail),
                            content_type="application/xml", headers=headers)
    body = json.dumps({"error": code, "detail": detail}).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BdnError as exc:
        return error_response(request, exc.status, exc.code, exc.detail, exc.headers, exc.s3_code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, 500, "internal_error", "unexpected error; see the daemon's log")
