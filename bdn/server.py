"""Process lifecycle: bind the listener, serve until SIGTERM/SIGINT, then close resources cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from bdn.app import make_app
from bdn.config import Config

log = logging.getLogger("bdn.server")


async def serve(config: Config) -> None:
    """Run the daemon until a stop signal arrives."""
    runner = web.AppRunner(make_app(config), access_log=None, handle_signals=False)
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
        log.info("stopping")
    finally:
        await runner.cleanup()
