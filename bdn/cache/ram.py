"""The RAM tier: a bytes-bounded LRU of whole chunks, served without touching the disk or a thread.

Chunks enter by being read, in the background, from a file that holds them: a fill's file
when it commits, a committed chunk's file when a reader hits it on disk. A load reserves its
bytes in the budget before it reads, so the tier's memory (`used_bytes`: stored chunks and
loads in flight) never exceeds `ram_bytes`. A chunk larger than a quarter of the budget is
never admitted, so one huge chunk cannot flush everything else. Each chunk lives in an
anonymous mapping of its own, not on the Python heap, so the memory of an evicted chunk goes
back to the kernel at once instead of staying in a malloc arena. Entries are immutable once
stored; `discard` also voids a load in flight, whose bytes are then dropped.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from collections import OrderedDict
from concurrent.futures import Executor

MAX_SHARE = 4  # a chunk may take at most 1/MAX_SHARE of the budget


class _Load:
    """A reservation for one chunk being read into the tier."""

    def __init__(self, size: int) -> None:
        self.size = size


def _read_all(fd: int, size: int) -> mmap.mmap | None:
    """`size` bytes of `fd` from offset 0 in a new anonymous mapping, or None if it holds fewer (in a thread)."""
    chunk = mmap.mmap(-1, size)
    done = 0
    with memoryview(chunk) as view:
        while done < size:
            try:
                read = os.preadv(fd, [view[done:]], done)
            except OSError:
                read = 0
            if read == 0:
                break
            done += read
    if done < size:
        chunk.close()
        return None
    return chunk


class RamTier:
    """See the module docstring."""

    def __init__(self, budget: int, io: Executor) -> None:
        self.budget = budget
        self._io = io
        self._chunks: OrderedDict[str, mmap.mmap] = OrderedDict()  # least recently used first
        self._loads: dict[str, _Load] = {}
        self._reserved = 0  # bytes of loads in flight
        self.used_bytes = 0  # stored chunks plus loads in flight
        self.evictions = 0  # chunks dropped to stay within the budget

    def admits(self, size: int) -> bool:
        return 0 < size * MAX_SHARE <= self.budget

    def has(self, name: str) -> bool:
        return name in self._chunks

    def loading(self, name: str) -> bool:
        return name in self._loads

    def get(self, name: str) -> mmap.mmap | None:
        """The chunk, read-only by convention; slices of it are copies."""
        data = self._chunks.get(name)
        if data is not None:
            self._chunks.move_to_end(name)
        return data

    def load(self, name: str, fd: int, size: int) -> None:
        """Read chunk `name`, the first `size` bytes of `fd`, into the tier in the background.

        The read uses a duplicate of `fd`: the caller keeps its own. Nothing is read when the chunk
        is here or loading already, is too large, or when loads in flight would take more than the
        budget.
        """
        if (not self.admits(size) or name in self._chunks or name in self._loads
                or self._reserved + size > self.budget):
            return
        fd = os.dup(fd)
        reservation = self._loads[name] = _Load(size)
        self._reserved += size
        self.used_bytes += size
        self._evict()
        loaded = asyncio.get_running_loop().run_in_executor(self._io, _read_all, fd, size)
        loaded.add_done_callback(lambda done: self._landed(name, reservation, fd, done))

    def _landed(self, name: str, reservation: _Load, fd: int, done: asyncio.Future[mmap.mmap | None]) -> None:
        os.close(fd)
        if self._loads.get(name) is not reservation:  # discarded meanwhile: its bytes are not wanted
            return
        self._release(name)
        data = None if done.cancelled() or done.exception() else done.result()
        if data is not None:
            self._chunks[name] = data
            self.used_bytes += len(data)
            self._evict()

    def _release(self, name: str) -> None:
        reservation = self._loads.pop(name)
        self._reserved -= reservation.size
        self.used_bytes -= reservation.size

    def _evict(self) -> None:
        while self.used_bytes > self.budget and self._chunks:
            _, evicted = self._chunks.popitem(last=False)
            self.used_bytes -= len(evicted)
            self.evictions += 1

    def discard(self, names: list[str]) -> None:
        """Drop these chunks, and void their loads in flight."""
        for name in names:
            data = self._chunks.pop(name, None)
            if data is not None:
                self.used_bytes -= len(data)
            if name in self._loads:
                self._release(name)
