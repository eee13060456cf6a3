"""HTTP routes: `/healthz`, `/readyz`, and everything under `/{source}/` for every configured source.

Handlers stay thin: decode and check the path, ask the cache for the object's current
version, and hand it to `respond`; an `hf` source's paths go to `front.hub`, the GCS JSON API to
`front.gcs`, `/_peer/` to `front.peer`.
"""

from __future__ import annotations

import re

from aiohttp import web

from bdn.config import HfSourceConfig, HttpSourceConfig
from bdn.errors import NotFound
from bdn.front import gcs, hub
from bdn.front.access import admin_only, check_client
from bdn.front.paths import object_key, split_target, without_dot_segments
from bdn.front.peer import peer_chunk
from bdn.front.respond import respond
from bdn.objects import ObjectRef
from bdn.ops import preheat
from bdn.ops.drain import DRAIN_KEY
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
        return await gcs.handle(request, config.json_api_source, f"{source}/{raw_rest}")
    source_config = config.sources.get(source)
    if source_config is None:
        raise NotFound(f"no source named {source!r}")
    check_client(request, getattr(source_config, "clients", None))
    if isinstance(source_config, HfSourceConfig):
        return await hub.handle(request, source, raw_rest)
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    key = object_key(raw_rest)
    if isinstance(source_config, HttpSourceConfig):
        key = without_dot_segments(key)
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/_peer/{source}", peer_chunk)
    app.router.add_post("/v1/warm", admin_only(preheat.post_warm))
    app.router.add_get("/v1/warm/{id}", admin_only(preheat.get_warm))
    app.router.add_get("/{tail:.*}", get_object, allow_head=True)
    app.router.add_post("/{tail:.*}", get_object)
