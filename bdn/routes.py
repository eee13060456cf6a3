"""HTTP routes: `/healthz`, `/readyz`, and everything under `/{source}/` for every configured source.

Handlers stay thin: decode and check the path, ask the cache for the object's current
version, and hand it to `serve.respond`; an `hf` source's paths go to `hubapi`.
"""

from __future__ import annotations

import dataclasses
import re

from aiohttp import web

from bdn import gcsapi, hubapi, peers, warm
from bdn.access import admin_only, check_client
from bdn.config import HfSourceConfig
from bdn.drain import DRAIN_KEY
from bdn.errors import BadRequest, Forbidden, NotFound
from bdn.objects import ObjectInfo, ObjectRef, checked_info, has_utf8
from bdn.paths import checked_key, object_key, split_target
from bdn.requestlog import record_of
from bdn.serve import respond
from bdn.state import CACHE_KEY, CONFIG_KEY


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAIN_KEY].draining:
        return web.json_response({"status": "not ready", "detail": "draining before shutdown"}, status=503)
    cache = request.app.get(CACHE_KEY)
    if cache is None:
        return web.json_response({"status": "not ready", "detail": "starting"}, status=503)
    if not await cache.disk.recovered():
        # Still serving (uncached, straight from the upstreams): ready, but saying why it is degraded.
        detail = f"cache disk writes fail ({cache.disk.write_error}): serving without caching"
        return web.json_response({"status": "degraded", "detail": detail})
    return web.json_response({"status": "ready"})


async def get_object(request: web.Request) -> web.StreamResponse:
    """GET/HEAD (and the Hub's POSTs) under `/{source}/`, dispatched by the source's type."""
    source, raw_rest = split_target(request.raw_path)
    config = request.app[CONFIG_KEY]
    if source in ("storage", "download") and config.json_api_source is not None:
        check_client(request, getattr(config.sources[config.json_api_source], "clients", None))
        return await gcsapi.handle(request, config.json_api_source, f"{source}/{raw_rest}")
    source_config = config.sources.get(source)
    if source_config is None:
        raise NotFound(f"no source named {source!r}")
    check_client(request, getattr(source_config, "clients", None))
    if isinstance(source_config, HfSourceConfig):
        return await hubapi.handle(request, source, raw_rest)
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    key = object_key(raw_rest)
    if not key:
        raise NotFound("no object path given")
    version = await request.app[CACHE_KEY].version(ObjectRef(source, key), first_byte=_first_byte(request))
    return await respond(request, version, {})


def _first_byte(request: web.Request) -> int | None:
    """The first byte a GET will want, when the request says it without knowing the size."""
    if request.method != "GET":
        return None
    match = re.match(r"^\s*bytes\s*=\s*(\d{1,18})\s*-", request.headers.get("Range", "bytes=0-"),
                     re.IGNORECASE | re.ASCII)
    return int(match.group(1)) if match and "," not in request.headers.get("Range", "") else None


async def peer_chunk(request: web.Request) -> web.StreamResponse:
    """`GET /_peer/{source}`: a byte range of one object version for another bdn node; peers only."""
    cache = request.app[CACHE_KEY]
    if cache.peers is None or not cache.peers.is_peer_address(request.remote):
        raise Forbidden("/_peer/ answers configured peers only")
    ref, info = _peer_object(request.headers.get(peers.OBJECT_HEADER, ""))
    if ref.source != request.match_info["source"] or ref.source not in cache.sources:
        raise NotFound(f"no source named {ref.source!r}")
    # The asker checks whole-object digests itself; this node serves bytes and never forwards them.
    version = cache.version_of(ref, dataclasses.replace(info, digest=None))
    version = dataclasses.replace(version, from_peer=True)
    response = await respond(request, version, {peers.VERSION_HEADER: version.id})
    cache.peers.bytes_out[request.remote or ""] += record_of(request).bytes or 0
    return response


def _peer_object(header: str) -> tuple[ObjectRef, ObjectInfo]:
    """The object and version an `X-Bdn-Object` header names, checked as a client's path and a source's info.

    A peer is trusted to name versions, not to send bdn's upstream requests and answers anything:
    a path with `..` or a NUL, a size that is no number, or a header value with CR LF is a 400.
    """
    try:
        ref, info = peers.decode_object(header)
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested deeper than json parses
        raise BadRequest(f"a peer request needs a valid {peers.OBJECT_HEADER} header") from None
    if not (isinstance(ref.source, str) and isinstance(ref.path, str) and ref.path and has_utf8(ref.path)):
        raise BadRequest(f"{peers.OBJECT_HEADER}: source and path must be text")
    checked_key(ref.path)
    return ref, checked_info(info)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/_peer/{source}", peer_chunk)
    app.router.add_post("/v1/warm", admin_only(warm.post_warm))
    app.router.add_get("/v1/warm/{id}", admin_only(warm.get_warm))
    app.router.add_get("/{tail:.*}", get_object, allow_head=True)
    app.router.add_post("/{tail:.*}", get_object)
