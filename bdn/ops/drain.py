"""Graceful stop: count object requests in flight; once draining, refuse new ones and let /readyz say so.

On SIGTERM (a DaemonSet rollout) the node turns not-ready, answers new object requests 503 with
`Connection: close`, and lets the transfers in flight finish for up to `drain_timeout` seconds
before it exits. Health, readiness and metrics stay answerable throughout.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bdn.errors import BdnError, Handler, error_response

ALWAYS_ANSWERED = frozenset({"/healthz", "/readyz", "/metrics"})


class Draining(BdnError):
    status, code = 503, "draining"


class Drain:
    """The drain state of one app."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Whether every request in flight finished within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()


DRAIN_KEY = web.AppKey("drain", Drain)


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in ALWAYS_ANSWERED:
        return await handler(request)
    drain = request.app[DRAIN_KEY]
    if drain.draining:
        return error_response(request, 503, Draining.code, "this node is shutting down; ask another one",
                              {"Connection": "close", "Retry-After": "1"})
    drain._enter()
    try:
        return await handler(request)
    finally:
        drain._leave()
