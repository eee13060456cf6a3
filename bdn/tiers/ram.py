"""The RAM tier: a bytes-bounded LRU of whole chunks, served without touching the disk or a thread.

Chunks enter when a fill commits (the fill kept a copy as the bytes streamed through) and when
a chunk is read from disk (loaded once, in the background, after the disk answer was sent by
sendfile). A chunk larger than a quarter of the budget is never admitted, so one huge chunk
cannot flush everything else. Entries are immutable once stored.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_SHARE = 4  # a chunk may take at most 1/MAX_SHARE of the budget


class RamTier:
    """See the module docstring."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._chunks: OrderedDict[str, bytes | bytearray] = OrderedDict()  # least recently used first
        self.used_bytes = 0
        self.evictions = 0  # chunks dropped to stay within the budget

    def admits(self, size: int) -> bool:
        return 0 < size * MAX_SHARE <= self.budget

    def has(self, name: str) -> bool:
        return name in self._chunks

    def get(self, name: str) -> bytes | bytearray | None:
        data = self._chunks.get(name)
        if data is not None:
            self._chunks.move_to_end(name)
        return data

    def put(self, name: str, data: bytes | bytearray) -> None:
        if not self.admits(len(data)) or name in self._chunks:
            return
        self._chunks[name] = data
        self.used_bytes += len(data)
        while self.used_bytes > self.budget:
            _, evicted = self._chunks.popitem(last=False)
            self.used_bytes -= len(evicted)
            self.evictions += 1

    def discard(self, names: list[str]) -> None:
        for name in names:
            data = self._chunks.pop(name, None)
            if data is not None:
                self.used_bytes -= len(data)
