"""`make_app(config)`: the only wiring point. Builds the sources, disk tier and cache for one app.

Resources open when the app starts and close, in reverse order, when it stops (aiohttp's
cleanup context), so tests build real apps from real `Config` objects on real ports.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from bdn.cache.disk import DiskTier
from bdn.cache.object_cache import ObjectCache
from bdn.config import Config
from bdn.errors import error_middleware
from bdn.front.hub import FRONTS_KEY, make_fronts
from bdn.front.routes import add_routes
from bdn.ops import metrics
from bdn.ops.drain import DRAIN_KEY, Drain, drain_middleware
from bdn.ops.preheat import WARMER_KEY, Warmer
from bdn.ops.requestlog import access_log_middleware
from bdn.peers.membership import Peers
from bdn.sources import make_source
from bdn.sources.retry import RetryPolicy
from bdn.state import CACHE_KEY, CONFIG_KEY

MAX_HEADER_BYTES = 16 * 1024


def make_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[access_log_middleware, drain_middleware, error_middleware],
        handler_args={"max_line_size": MAX_HEADER_BYTES, "max_field_size": MAX_HEADER_BYTES,
                      # also closes connections whose request headers have not all come by then (slowloris)
                      "keepalive_timeout": config.downstream.idle_timeout},
    )
    app[CONFIG_KEY] = config
    app[DRAIN_KEY] = Drain()
    app[WARMER_KEY] = Warmer()
    app.cleanup_ctx.append(_cache_context)
    metrics.install(app)
    add_routes(app)
    return app


async def _cache_context(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    disk = await DiskTier.open(config.cache.dir, config.cache.disk_bytes, config.cache.disk_retry)
    sources = {name: make_source(source, config.upstream) for name, source in config.sources.items()}
    peers = Peers(config.peers) if config.peers.enabled else None
    upstream = config.upstream
    retry = RetryPolicy(upstream.retries, upstream.retry_backoff, upstream.retry_max_wait)
    cache = ObjectCache(sources, disk, config.cache.chunk_bytes, config.cache.metadata_ttl, config.cache.ram_bytes,
                        peers, retry)
    discovery = asyncio.ensure_future(peers.run()) if peers is not None else None
    app[CACHE_KEY] = cache
    cache.fills.on_filled = app[metrics.REQUESTS_KEY].fill_seconds.observe
    app[FRONTS_KEY] = make_fronts(cache, config.cache.metadata_ttl)
    try:
        yield
    finally:
        await app[WARMER_KEY].close()
        if discovery is not None:
            discovery.cancel()
        await cache.close()
        if peers is not None:
            await peers.close()
        await disk.close()
