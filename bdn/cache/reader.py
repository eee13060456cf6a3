"""A byte range of one object version as the parts of a body, in order: what to send, and from where.

The front decides status and headers; it then asks `read_parts` for the body and sends each
part as it comes, knowing nothing of chunks, fills or tiers. A part is either a `FilePart` (a
span of a committed chunk file, or of a fill's file once those bytes have landed: sendfile it)
or a `RamPart` (a span of a chunk in the RAM tier, to be written straight from memory; also the
pieces of a version that cannot be pinned, read straight from the upstream and never stored). The
body walks the chunks its range covers; before each chunk the next `read_ahead` chunks are made
sure to be stored or being fetched, so a cold read keeps several upstream reads going while the
client receives bytes in order.

The first part is produced only once its first byte is there, so a caller that asks for it
before sending headers still turns a failed fill into a status. After that an error
(`BdnError`) can only cut the body. The one error a body survives is the cache disk failing
under a fill: the rest of that chunk comes from a new, uncached fill.

Objects whose source gives a content digest are trusted only once the whole object hashed to
it: until then the last byte is held back until the check passes (a mismatch raises before
it), and a range that stops short of the end waits for the check before its first part.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Literal

from bdn.cache.fill import ChunkFill
from bdn.cache.object_cache import ObjectCache, Version
from bdn.errors import CacheDiskError
from bdn.objects import chunk_name

log = logging.getLogger("bdn.serve")
RAM_PART = 1 << 20  # parts of a chunk up to this size are sent from RAM, larger ones by sendfile
FOLLOW_BATCH = 1 << 20  # bytes a reader following a fill waits for between parts (after its first)


@dataclass
class FilePart:
    """`length` bytes at `offset` of the open file `fd`; the fd stays valid until the next part is asked for."""

    fd: int
    offset: int
    length: int


@dataclass
class RamPart:
    """Bytes [start, end) of a chunk in RAM; `view(a, b)` gives them afresh (None once evicted).

    The sender records in `sent_to` how far it got: a chunk evicted mid-send is finished from disk.
    """

    view: Callable[[int, int], memoryview | None]
    start: int
    end: int
    sent_to: int = 0


Part = FilePart | RamPart


async def read_parts(cache: ObjectCache, version: Version, start: int, end: int,
                     read_ahead: int) -> AsyncGenerator[Part, None]:
    """The parts of bytes [start, end) of `version`, checked against its digest as the module says."""
    if not version.info.pinnable:
        async with contextlib.aclosing(_straight(cache, version, start, end)) as pieces:
            async for piece in pieces:
                yield piece
        return
    checked = cache.verified(version)
    if not checked and end < version.info.size:
        await cache.verify(version)  # the last byte cannot be held back: check before the first one
        checked = True
    body_end = end - (0 if checked else 1)
    async with contextlib.aclosing(_span(cache, version, start, body_end, read_ahead)) as parts:
        async for part in parts:
            yield part
    if not checked:
        await cache.verify(version)
        async with contextlib.aclosing(_span(cache, version, body_end, end, read_ahead)) as parts:
            async for part in parts:
                yield part


async def _span(cache: ObjectCache, version: Version, start: int, end: int,
                read_ahead: int) -> AsyncGenerator[Part, None]:
    indices = version.chunk_indices(start, end, cache.chunk_bytes)
    for position, index in enumerate(indices):
        cache.prefetch(version, indices[position:position + read_ahead])
        low, high = _chunk_part(cache, index, start, end)
        if _sent_from_ram(cache, version, index, high - low):
            part = RamPart(_ram_view(cache, chunk_name(version.id, index)), low, high, low)
            yield part
            low = part.sent_to
            if low >= high:
                continue
        async with contextlib.aclosing(_chunk(cache, version, index, low, high)) as pieces:
            async for piece in pieces:
                yield piece


async def _straight(cache: ObjectCache, version: Version, start: int, end: int) -> AsyncGenerator[Part, None]:
    """A version no read can be held to, straight from the upstream: one read, checked like any, never stored."""
    source = cache.sources[version.ref.source]
    async for piece in source.read(version.ref.path, version.info, start, end):
        yield RamPart(_bytes_view(piece), 0, len(piece))


def _bytes_view(data: bytes) -> Callable[[int, int], memoryview | None]:
    def view(start: int, end: int) -> memoryview | None:
        return memoryview(data)[start:end]

    return view


def _sent_from_ram(cache: ObjectCache, version: Version, index: int, length: int) -> bool:
    """Whether chunk `index` is in RAM and a part of `length` bytes of it should be sent from there.

    Measured (benchmarks/RESULTS.md): large parts go out cheaper by sendfile from the page
    cache than written from RAM through the transport; small ones the other way round.
    """
    name = chunk_name(version.id, index)
    return cache.ram.has(name) and (length <= RAM_PART or not cache.disk.has(name))


def _ram_view(cache: ObjectCache, name: str) -> Callable[[int, int], memoryview | None]:
    """Looks the chunk up again for each write, so nothing holds an evicted chunk while a client lags."""
    def view(start: int, end: int) -> memoryview | None:
        data = cache.ram.get(name)
        return None if data is None else memoryview(data)[start:end]

    return view


async def _chunk(cache: ObjectCache, version: Version, index: int, low: int,
                 high: int) -> AsyncGenerator[FilePart, None]:
    """Bytes [low, high) of one chunk from its file; if its fill loses the cache disk, the rest from a new fill.

    The disk tier then refuses new temp files for a while, so the new fill streams uncached.
    """
    position = low
    for last_try in (False, True):
        fd, fill = cache.open_chunk(version, index)
        try:
            async for part in _follow(fd, fill, position, high):
                yield part
                position = part.offset + part.length
            return
        except CacheDiskError:
            if last_try:
                raise
            log.warning("cache disk failed under a fill; sending bytes %d+ of a chunk from a new, uncached one",
                        position)
        finally:
            os.close(fd)


async def _follow(fd: int, fill: ChunkFill | None, low: int, high: int) -> AsyncGenerator[FilePart, None]:
    """Bytes [low, high) of a committed chunk file (one part), or of a fill's file as its bytes land."""
    if fill is None:
        yield FilePart(fd, low, high - low)
        return
    position = low
    while position < high:
        # The first bytes go out as soon as they land; after that, wake per FOLLOW_BATCH bytes,
        # not per upstream read, so 32 readers of one fill cost 4x fewer wake-ups and syscalls.
        target = position if position == low else min(position + FOLLOW_BATCH, high) - 1
        await fill.wait_beyond(target)
        available = min(fill.written, high)
        yield FilePart(fd, position, available - position)
        position = available


Tier = Literal["ram", "disk", "peer", "upstream", "bypass"]


def tier_of(cache: ObjectCache, version: Version, start: int, end: int) -> Tier:
    """Where a read of [start, end) comes from: all sent from RAM, all on this node, the rest from peers, the
    upstream (to be cached), or the upstream straight (a version that cannot be pinned)."""
    if not version.info.pinnable:
        return "bypass"
    indices = version.chunk_indices(start, end, cache.chunk_bytes)
    if indices and all(_sent_from_ram(cache, version, index, _length(_chunk_part(cache, index, start, end)))
                       for index in indices):
        return "ram"
    if cache.complete(version, start, end) and not (version.fetched and not cache.stored(version, start, end)):
        return "disk"  # (a cold miss whose first chunk was read with the metadata may be complete already)
    return "peer" if cache.from_peers(version, start, end) else "upstream"


def _chunk_part(cache: ObjectCache, index: int, start: int, end: int) -> tuple[int, int]:
    """The offsets [low, high) within chunk `index` of the bytes [start, end) of the object it holds."""
    base = index * cache.chunk_bytes
    return max(start, base) - base, min(end, base + cache.chunk_bytes) - base


def _length(part: tuple[int, int]) -> int:
    return part[1] - part[0]
