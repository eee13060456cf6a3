"""HTTP handlers: `/healthz`, `/readyz`, and GET/HEAD `/{source}/{path}` for every configured source.

Handlers stay thin: decode and check the path, ask the cache for the object's current
version, apply conditional and Range headers (RFC 9110), then either answer headers only or
hand the body to `serve.stream_range`.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bdn.cache import ObjectCache, Version
from bdn.config import Config
from bdn.errors import NotFound, PreconditionFailed, RangeNotSatisfiable
from bdn.objects import ObjectRef
from bdn.paths import split_target
from bdn.ranges import ByteRange, Unsatisfiable, if_range_allows, parse, unsatisfied_content_range
from bdn.requestlog import record_of
from bdn.serve import stream_range

log = logging.getLogger("bdn.routes")
CACHE_KEY = web.AppKey("cache", ObjectCache)
CONFIG_KEY = web.AppKey("config", Config)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    cache = request.app.get(CACHE_KEY)
    if cache is None or not await cache.disk.writable():
        return web.json_response({"status": "not ready", "detail": "cache dir is not writable"}, status=503)
    return web.json_response({"status": "ready"})


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
    """412 or 304 when the request's conditions say so (RFC 9110 §13.2.2 order)."""
    etag = version.info.etag
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _etag_listed(if_match, etag, weak=False):
        raise PreconditionFailed("If-Match does not match the object's ETag")
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_listed(if_none_match, etag, weak=True):
        return web.Response(status=304, headers={"ETag": etag})
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


async def get_object(request: web.Request) -> web.StreamResponse:
    cache = request.app[CACHE_KEY]
    config = request.app[CONFIG_KEY]
    source, path = split_target(request.raw_path)
    if source not in cache.sources:
        raise NotFound(f"no source named {source!r}")
    if not path:
        raise NotFound("no object path given")
    version = await cache.version(ObjectRef(source, path))
    record = record_of(request)
    record.source = source
    not_modified = _check_preconditions(request, version)
    if not_modified is not None:
        return not_modified
    selected = _selected_range(request, version)
    size = version.info.size
    byte_range = selected or ByteRange(0, size)
    headers = _object_headers(version)
    headers["Content-Length"] = str(byte_range.length)
    record.cache = "HIT" if cache.complete(version, byte_range.start, byte_range.end) else "MISS"
    headers["X-Cache"] = record.cache
    if selected is not None:
        headers["Content-Range"] = selected.content_range(size)
    status = 206 if selected is not None else 200
    if request.method == "HEAD" or byte_range.length == 0:
        return web.Response(status=status, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    await stream_range(request, response, cache, version, byte_range,
                       config.cache.sendfile, config.cache.fill_concurrency)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/{tail:.*}", get_object, allow_head=True)
