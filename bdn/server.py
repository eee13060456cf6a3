"""Process lifecycle: bind the listener, serve until SIGTERM/SIGINT, drain transfers in flight, close cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bdn.app import make_app
from bdn.config import Config
from bdn.ops.drain import DRAIN_KEY

log = logging.getLogger("bdn.server")


async def serve(config: Config) -> None:
    """Run the daemon until a stop signal arrives."""
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
    await site.start()
    log.info("bdn listening on %s (cache dir %s, sources: %s)", site.name, config.cache.dir,
             ", ".join(sorted(config.sources)) or "none")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        drain = app[DRAIN_KEY]
        drain.start()
        log.info("draining %d requests in flight (up to %gs)", drain.in_flight, config.drain_timeout)
        if not await drain.wait_idle(config.drain_timeout):
            log.warning("drain timeout: cutting %d requests in flight", drain.in_flight)
        log.info("stopping")
    finally:
        await runner.cleanup()
