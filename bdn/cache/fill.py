"""Chunk fills: one upstream read of one chunk, written to a temp file and shared by every reader.

The chunk model: an object version is cut into fixed `chunk_bytes` chunks; a request covers a
run of them and only the chunks it covers are ever fetched. A fill streams its chunk from the
source into a file under `tmp/`, and readers follow it through that file: each reader holds
its own fd (a dup taken when it attaches) and is woken, never polled, whenever bytes land, so
it can send [its position, bytes written) with sendfile. Nothing of the payload is held in
Python memory, and a slow reader only slows itself.

A fill runs as its own task: a reader that disconnects never cancels it. An upstream that
drops or stalls mid-body, or answers 429/5xx, is resumed from the last byte written with a
ranged read (bdn.sources.retry's bounded, jittered backoff); on any other error, or when retries run
out, the temp file is deleted, nothing is committed, and every reader sees the error. Only a
complete chunk of the right length is committed to the disk tier, and the fill leaves the
registry only after that commit, so there is no moment in which a chunk is neither in flight
nor on disk; the RAM tier then loads it from the fill's file (the page cache has it). When the
disk cannot take a chunk (full, failing), its fill writes into an anonymous memory file
instead: readers follow it just the same, and nothing is committed to disk. So that memory
stays bounded, only `uncached_limit` such fills read from the upstream at once; the others
wait their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bdn.cache.disk import DiskTier
from bdn.cache.ram import RamTier
from bdn.errors import BdnError, CacheDiskError, UpstreamError, UpstreamUnreachable, VersionChanged
from bdn.objects import ObjectInfo
from bdn.sources import Source
from bdn.sources.retry import RetryPolicy

log = logging.getLogger("bdn.fill")
SHUTDOWN_GRACE = 10.0  # seconds fills in flight may take to finish when the daemon stops


class ChunkFill:
    """One chunk being fetched; readers call `attach()` and then `wait_beyond()`."""

    def __init__(self, name: str, size: int, temp: Path | None, temp_fd: int) -> None:
        self.name = name
        self.size = size
        self.temp = temp  # None: the disk cannot take it, so the bytes go through memory, uncached
        self.written = 0
        self.error: BaseException | None = None
        self.finished = False
        self._fd = temp_fd
        self._waiters: list[asyncio.Future[None]] = []

    def attach(self) -> int:
        """An fd of the chunk's temp file for one reader, valid after the fill ends; caller closes."""
        return os.dup(self._fd)

    async def wait_beyond(self, position: int) -> None:
        """Return once more than `position` bytes are written or the fill has ended; raise its error."""
        while self.written <= position and not self.finished:
            await self._next_change()
        if self.error is not None and self.written <= position:
            raise self.error

    async def wait_finished(self) -> None:
        """Return once the chunk is committed to disk; raise the fill's error if it failed."""
        while not self.finished:
            await self._next_change()
        if self.error is not None:
            raise self.error

    async def _next_change(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _append(self, piece: bytes) -> None:
        view = memoryview(piece)
        while view:
            done = os.pwrite(self._fd, view, self.written)
            self.written += done
            view = view[done:]
        self._wake()

    def _end(self, error: BaseException | None) -> None:
        self.error = error
        self.finished = True
        os.close(self._fd)
        self._wake()


class Fills:
    """The registry of chunk fills in flight on this node, keyed by chunk name."""

    def __init__(self, disk: DiskTier, ram: RamTier, retry: RetryPolicy, uncached_limit: int = 1) -> None:
        self._disk = disk
        self._ram = ram
        self._retry = retry
        # Uncached fills stream into memory files: at most this many read upstream at once.
        self._uncached_slots = asyncio.Semaphore(uncached_limit)
        self._fills: dict[str, ChunkFill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = 0  # fills started since start-up
        self.filled_bytes = 0  # bytes written into fills, from the upstream or from peers
        self.uncached = 0  # fills that streamed through memory because the disk could not take them
        self.on_filled: Callable[[float], None] = lambda seconds: None  # each committed fill's duration

    @property
    def in_flight(self) -> int:
        return len(self._fills)

    def get(self, name: str) -> ChunkFill | None:
        return self._fills.get(name)

    def start(self, name: str, source: Source, path: str, info: ObjectInfo, start: int, end: int,
              on_changed: Callable[[], None], first: AsyncIterator[bytes] | None = None) -> ChunkFill:
        """The fill for chunk `name`: the one in flight, or a new one reading [start, end).

        `first`, when given, is an upstream read of exactly these bytes already under way (a
        speculation that proved to be of this version): it is used instead of a new read.
        """
        fill = self._fills.get(name)
        if fill is not None:
            return fill
        allocated = self._disk.new_temp(end - start)
        if allocated is None:
            self.uncached += 1
        temp, fd = allocated or (None, os.memfd_create("bdn-uncached-fill", os.MFD_CLOEXEC))
        fill = ChunkFill(name, end - start, temp, fd)
        self._fills[name] = fill
        self.started += 1
        task = asyncio.get_running_loop().create_task(self._run(fill, source, path, info, start, on_changed, first))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    async def _run(self, fill: ChunkFill, source: Source, path: str, info: ObjectInfo, start: int,
                   on_changed: Callable[[], None], first: AsyncIterator[bytes] | None) -> None:
        error: BaseException | None = None
        began = time.monotonic()
        try:
            slot = self._uncached_slots if fill.temp is None else contextlib.nullcontext()
            async with slot:
                await self._stream(fill, source, path, info, start, first)
            if fill.written != fill.size:
                raise UpstreamError(f"fill ended at {fill.written} of {fill.size} bytes")
            if fill.temp is not None:
                await self._disk.commit(fill.temp, fill._fd, fill.name, fill.size)
            self.on_filled(time.monotonic() - began)
            self._ram.load(fill.name, fill._fd, fill.size)
        except asyncio.CancelledError:
            error = UpstreamError("fill cancelled at shutdown")
        except Exception as exc:  # every failure ends the fill; readers re-raise it
            error = exc if isinstance(exc, BdnError) else UpstreamError(f"fill failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, VersionChanged):
                on_changed()
            log.warning("fill of %s bytes %d+%d failed: %s", path, start, fill.size, error)
        finally:
            if error is not None and fill.temp is not None:
                self._disk.discard(fill.temp)
            del self._fills[fill.name]
            fill._end(error)

    async def _stream(self, fill: ChunkFill, source: Source, path: str, info: ObjectInfo, start: int,
                      first: AsyncIterator[bytes] | None) -> None:
        attempt = 0
        while True:
            offset = start + fill.written
            pieces, first = first or source.read(path, info, offset, start + fill.size), None
            try:
                async for piece in pieces:
                    try:
                        fill._append(piece)
                    except OSError as exc:  # allocated up front, so rare: an I/O error of the disk
                        self._disk.write_failed(exc)
                        raise CacheDiskError(f"cache disk write failed: {exc.strerror}") from None
                    self.filled_bytes += len(piece)
                return
            except UpstreamUnreachable as exc:
                attempt += 1
                wait = self._retry.wait(attempt, exc)
                if wait is None:
                    raise
                log.info("resuming %s at byte %d in %.2fs (retry %d): %s", path, start + fill.written, wait,
                         attempt, exc.detail)
                await asyncio.sleep(wait)

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Let fills in flight finish (their bytes are wanted), for up to `grace` seconds; cancel the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
