"""Upstream answers (JSON objects) cached by key: fresh for a TTL, persisted, single-flighted, stale-if-error.

An object's version, a branch's commit, a repo's visibility: each is asked upstream at most
once per `ttl` per node, however many requests want it at once (an unreachable or busy
upstream is retried by the upstream retry policy), and the answer's age survives restarts.
`ttl=None` marks an answer that can never change (anything named by a commit sha). When the
upstream cannot be asked (`UpstreamError`), a known answer is served stale if the caller says
it may be; `NotFound` forgets the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from bdn.cache.disk import DiskTier
from bdn.cache.flight import SingleFlight
from bdn.errors import NotFound, UpstreamError
from bdn.sources.retry import RetryPolicy

log = logging.getLogger("bdn.metadata")
Json = dict[str, Any]
Freshness = Literal["stored", "fetched", "stale"]  # from the store within its TTL, just asked, or stale-if-error


class Metadata:
    """See the module docstring."""

    def __init__(self, disk: DiskTier, retry: RetryPolicy) -> None:
        self._disk = disk
        self._retry = retry
        self._flight: SingleFlight[str, Json] = SingleFlight()
        self.fetches = 0  # answers asked upstream (metadata requests)

    def peek(self, key: str) -> Json | None:
        known = self._disk.meta(key)
        return None if known is None else known[0]

    async def get(self, key: str, fetch: Callable[[], Awaitable[Json]], ttl: float | None,
                  stale_ok: Callable[[Json], bool] = lambda _: False) -> tuple[Json, Freshness]:
        """(answer, how it was obtained) for `key`, asking upstream through `fetch` only when needed."""
        known = self._disk.meta(key)
        if known is not None and (ttl is None or time.time() - known[1] < ttl):
            return known[0], "stored"
        try:
            return await self._flight.do(key, lambda: self._refresh(key, fetch)), "fetched"
        except NotFound:
            await self._disk.drop_meta(key)
            raise
        except UpstreamError as exc:
            if known is not None and stale_ok(known[0]):
                log.warning("serving %r stale: %s", key.replace("\0", "/"), exc.detail)
                return known[0], "stale"
            raise

    async def _refresh(self, key: str, fetch: Callable[[], Awaitable[Json]]) -> Json:
        checked_at = time.time()
        self.fetches += 1
        value = await self._retry.call(key.replace("\0", "/"), fetch)
        await self._disk.put_meta(key, value, checked_at)
        return value

    async def put(self, key: str, value: Json) -> None:
        """Record an answer bdn established itself (such as a checked digest)."""
        await self._disk.put_meta(key, value, time.time())

    def expire(self, key: str) -> None:
        """The upstream says the answer changed: the next `get` asks again."""
        self._disk.expire_meta(key)
