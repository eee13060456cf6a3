"""Single flight: concurrent calls with the same key share one execution and its result.

The shared call runs as its own task, shielded from the callers: a caller that goes away
(a client disconnect cancels its handler) never cancels the work other callers wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """`await flight.do(key, fn)`: one `fn()` in flight per key; duplicates wait and get its result."""

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}  # in-flight calls; an entry leaves when its task ends

    def in_flight(self, key: K) -> bool:
        return key in self._calls

    async def do(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._finish(key, done))
        return await asyncio.shield(task)

    def _finish(self, key: K, task: asyncio.Task[V]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an error nobody awaited is not reported as lost
