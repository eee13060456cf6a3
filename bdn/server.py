"""Process lifecycle: bind the listener, serve until SIGTERM/SIGINT, drain transfers in flight, close cleanly.

What the environment refuses at start (the port is taken, `cache.dir` cannot be made or
written) is a `StartupError` naming the setting and the cause, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3

from aiohttp import web

from bdn.app import make_app
from bdn.config import Config
from bdn.ops.drain import DRAIN_KEY

log = logging.getLogger("bdn.server")
BACKLOG = 1024


class StartupError(Exception):
    """The environment will not let bdn start as configured; the message names the setting and the cause."""


def listener(host: str, port: int) -> socket.socket:
    """The listening socket for `listen`: `[::]` (or any IPv6 address) also accepts IPv4 (IPV6_V6ONLY off)."""
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise StartupError(f"listen: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def serve(config: Config) -> None:
    """Run the daemon until a stop signal arrives."""
    sock = listener(config.listen_host, config.listen_port)
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    try:
        await runner.setup()
    except (OSError, sqlite3.Error) as exc:  # the disk tier opens here: no rights, read-only, not a directory
        sock.close()
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        raise StartupError(f"cache.dir: cannot use {config.cache.dir}: {cause}{where}") from None
    site = web.SockSite(runner, sock)
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
