"""Turn an object version into a response: conditionals and Range (RFC 9110), headers, then the body.

This module decides (status, headers, which bytes); the cache's `read_parts` says where each
part of the body comes from, and `Sender` puts it on the socket. Headers go out with the first
part, so a fill that fails before producing one still becomes a proper 502. Once headers are
out, an error can no longer become a status: the connection is aborted, so the client sees a
short body and never one that looks complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import time

from aiohttp import web

from bdn.cache.object_cache import ObjectCache, Version
from bdn.cache.reader import FilePart, Part, read_parts, tier_of
from bdn.errors import BdnError, PreconditionFailed, RangeNotSatisfiable
from bdn.front.access import credential_for_peers
from bdn.front.ranges import ByteRange, Unsatisfiable, if_range_allows, parse, unsatisfied_content_range
from bdn.front.send import Sender
from bdn.ops.requestlog import record_of
from bdn.state import CACHE_KEY, CONFIG_KEY

log = logging.getLogger("bdn.serve")
SMALL_BODY = 64 * 1024  # bodies up to this size, when in RAM, are answered in one piece
# X-Cache: where the bytes come from
X_CACHE = {"ram": "HIT-RAM", "disk": "HIT", "peer": "HIT-PEER", "upstream": "MISS", "bypass": "BYPASS"}


def _etag_listed(header: str, etag: str, weak: bool) -> bool:
    """Whether an If-Match/If-None-Match list names `etag` (RFC 9110 §8.8.3.2 comparison)."""
    def bare(tag: str) -> str:
        return tag[2:] if weak and tag.startswith("W/") else tag

    listed = [tag.strip() for tag in header.split(",")]
    return "*" in listed or any(bare(tag) == bare(etag) for tag in listed if tag)


def _object_headers(version: Version) -> dict[str, str]:
    info = version.info
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": info.content_type or "application/octet-stream",
    }
    if info.etag:
        headers["ETag"] = info.etag
    if info.last_modified:
        headers["Last-Modified"] = info.last_modified
    if version.stale:
        headers["Warning"] = '110 bdn "Response is Stale"'
    return headers


def _check_preconditions(request: web.Request, version: Version) -> web.Response | None:
    """412 or 304 when the request's conditions say so, evaluated in RFC 9110 §13.2.2 order.

    The date conditions count only where their ETag counterpart is absent (§13.1.3, §13.1.4), and
    only against a Last-Modified the upstream gave; a date that does not parse is ignored.
    """
    info = version.info
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        if not _etag_listed(if_match, info.etag, weak=False):
            raise PreconditionFailed("If-Match does not match the object's ETag")
    elif _modified_since(info.last_modified, request.headers.get("If-Unmodified-Since")) is True:
        raise PreconditionFailed("the object was modified since If-Unmodified-Since")
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        if _etag_listed(if_none_match, info.etag, weak=True):
            return _not_modified(version)
    elif _modified_since(info.last_modified, request.headers.get("If-Modified-Since")) is False:
        return _not_modified(version)
    return None


def _not_modified(version: Version) -> web.Response:
    headers = {"ETag": version.info.etag}
    if version.info.last_modified:
        headers["Last-Modified"] = version.info.last_modified
    return web.Response(status=304, headers=headers)


def _modified_since(last_modified: str | None, header: str | None) -> bool | None:
    """Whether `last_modified` is later than the HTTP-date `header`; None when either is absent or no date."""
    if not last_modified or not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(last_modified) > email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):  # not an HTTP-date
        return None


def _selected_range(request: web.Request, version: Version) -> ByteRange | None:
    info = version.info
    if not if_range_allows(request.headers.get("If-Range"), info.etag, info.last_modified):
        return None
    try:
        return parse(request.headers.get("Range"), info.size)
    except Unsatisfiable:
        raise RangeNotSatisfiable(
            f"range not satisfiable for {info.size} bytes",
            headers={"Content-Range": unsatisfied_content_range(info.size)},
        ) from None


async def respond(request: web.Request, version: Version, extra_headers: dict[str, str],
                  whole_object_headers: dict[str, str] | None = None) -> web.StreamResponse:
    """The whole answer to a GET or HEAD of `version`, with `extra_headers` added.

    `whole_object_headers` (whole-object checksums) are added only to answers that carry the
    whole object with 200: a client checks them against the body (PROTOCOLS.md 2.4, 3.6).
    """
    cache = request.app[CACHE_KEY]
    if not version.from_peer and (
            credential := credential_for_peers(request, request.app[CONFIG_KEY].sources[version.ref.source])):
        version = dataclasses.replace(version, credential=credential)  # only where a peer must check it
    not_modified = _check_preconditions(request, version)
    if not_modified is not None:
        return not_modified
    selected = _selected_range(request, version)
    size = version.info.size
    byte_range = selected or ByteRange(0, size)
    headers = {**_object_headers(version), **extra_headers, "Content-Length": str(byte_range.length)}
    record = record_of(request)
    record.source = version.ref.source
    record.cache = X_CACHE[tier_of(cache, version, byte_range.start, byte_range.end)]
    headers["X-Cache"] = record.cache
    if selected is not None:
        headers["Content-Range"] = selected.content_range(size)
    elif whole_object_headers:
        headers.update(whole_object_headers)
    status = 206 if selected is not None else 200
    if request.method == "HEAD" or byte_range.length == 0:
        return web.Response(status=status, headers=headers)
    if byte_range.length <= SMALL_BODY and (body := cache.ram_body(version, byte_range.start, byte_range.end)):
        record.bytes = len(body)  # one write of headers and body: the hot path for small files and ranges
        return web.Response(status=status, headers=headers, body=body)
    response = web.StreamResponse(status=status, headers=headers)
    await stream_range(request, response, cache, version, byte_range)
    return response


async def stream_range(request: web.Request, response: web.StreamResponse, cache: ObjectCache,
                       version: Version, byte_range: ByteRange) -> None:
    """Send `byte_range` of `version` as the body of the not yet prepared `response`."""
    config = request.app[CONFIG_KEY]
    record = record_of(request)
    async with contextlib.aclosing(read_parts(cache, version, byte_range.start, byte_range.end,
                                              config.cache.fill_concurrency)) as parts:
        part = await anext(parts, None)  # before the headers: its errors still become a status
        writer = await response.prepare(request)
        record.first_byte_at = time.monotonic()  # headers leave with the first byte's arrival
        transport = request.transport
        if transport is None or writer is None:
            raise ConnectionResetError("client went away before the body")
        sender = Sender(transport, writer, config.cache.sendfile, cache.io, config.downstream.send_timeout)
        try:
            while part is not None:
                await _send_part(sender, part)
                part = await anext(parts, None)
            await response.write_eof()
        except BdnError as exc:
            log.warning("aborting %s after %d of %d bytes: %s", request.path, sender.sent, byte_range.length,
                        exc.detail)
            record.aborted = True
            transport.abort()
        except ConnectionError:  # the client went away mid-body: ordinary, not an error of bdn's
            log.debug("client left %s after %d of %d bytes", request.path, sender.sent, byte_range.length)
            record.aborted = True
            transport.abort()
        finally:
            sender.close()
            record.bytes = sender.sent


async def _send_part(sender: Sender, part: Part) -> None:
    if isinstance(part, FilePart):
        await sender.send(part.fd, part.offset, part.length)
    else:
        part.sent_to = await sender.send_memory(part.view, part.start, part.end)
