"""Upstream retries: which failures earn another try, and how long to wait before it.

A failure worth retrying is an `UpstreamUnreachable`: a connection refused, reset or timed
out, or an `UpstreamBusy` answer (429 or 5xx). Waits double from `backoff` with jitter, so
nodes that failed together do not retry together, and never fall short of a `Retry-After`
the upstream sent; a `Retry-After` longer than `max_wait` ends the retries at once, so a pod
hears 503 (with that `Retry-After`) instead of hanging. Metadata requests and chunk fills
(which resume from their last byte) share the one policy.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bdn.errors import UpstreamBusy, UpstreamUnreachable

T = TypeVar("T")
log = logging.getLogger("bdn.retry")
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP-date), None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def busy(status: int, retry_after: str | None, what: str) -> UpstreamBusy:
    """The error for a retryable status answered for `what`."""
    return UpstreamBusy(f"upstream answered {status} for {what}", status=status,
                        retry_after=parse_retry_after(retry_after))


class RetryPolicy:
    """Bounded retries with jittered exponential backoff; counts the retries it makes."""

    def __init__(self, attempts: int = 3, backoff: float = 0.2, max_wait: float = 10.0) -> None:
        self.attempts = attempts  # retries after the first try
        self.backoff = backoff  # seconds before the first retry (jittered down to half)
        self.max_wait = max_wait  # longest wait bdn accepts, from its backoff or a Retry-After
        self.retries = 0

    def wait(self, attempt: int, error: UpstreamUnreachable) -> float | None:
        """Seconds to wait before retry number `attempt` (from 1) after `error`; None to give up."""
        if attempt > self.attempts:
            return None
        base = self.backoff * 2 ** (attempt - 1)
        wait: float = min(base / 2 + random.uniform(0, base / 2), self.max_wait)
        retry_after = error.retry_after if isinstance(error, UpstreamBusy) else None
        if retry_after is not None:
            if retry_after > self.max_wait:
                return None
            wait = max(wait, retry_after)
        self.retries += 1
        return wait

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`await fn()`, retried by this policy while it fails with `UpstreamUnreachable`."""
        attempt = 0
        while True:
            try:
                return await fn()
            except UpstreamUnreachable as exc:
                attempt += 1
                wait = self.wait(attempt, exc)
                if wait is None:
                    raise
                log.info("retrying %s in %.2fs (retry %d): %s", what, wait, attempt, exc.detail)
                await asyncio.sleep(wait)
