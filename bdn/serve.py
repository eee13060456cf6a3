"""Write an object's bytes to a client: committed chunks by sendfile, chunks in flight as they land.

A response walks the chunks its range covers, in order. Before each chunk it makes sure the
next `fill_concurrency` chunks of the range are on disk or being fetched (read-ahead), so a
cold read keeps several upstream reads going while the client receives bytes in order. Once
headers are out, an error can no longer become a status: the connection is aborted, so the
client sees a short body and never one that looks complete.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from bdn.cache import ObjectCache, Version
from bdn.errors import BdnError
from bdn.fill import ChunkFill
from bdn.ranges import ByteRange
from bdn.requestlog import record_of
from bdn.sendfile import Sender

log = logging.getLogger("bdn.serve")


async def stream_range(request: web.Request, response: web.StreamResponse, cache: ObjectCache,
                       version: Version, byte_range: ByteRange, use_sendfile: bool, read_ahead: int) -> None:
    """Send `byte_range` of `version` as the body of the not yet prepared `response`.

    Headers go out with the first byte: if the first chunk's fill fails before producing one,
    the error still becomes a proper status (a 502 with a JSON body) instead of an abort.
    """
    indices = version.chunk_indices(byte_range.start, byte_range.end, cache.chunk_bytes)
    cache.prefetch(version, indices[:read_ahead])
    fd, fill = _open(cache, version, indices[0])
    sender: Sender | None = None
    try:
        if fill is not None:
            await fill.wait_beyond(byte_range.start - indices[0] * cache.chunk_bytes)
        writer = await response.prepare(request)
        transport = request.transport
        if transport is None or writer is None:
            raise ConnectionResetError("client went away before the body")
        sender = Sender(transport, writer, use_sendfile)
        try:
            for position, index in enumerate(indices):
                if position:
                    cache.prefetch(version, indices[position:position + read_ahead])
                    fd, fill = _open(cache, version, index)
                base = index * cache.chunk_bytes
                low = max(byte_range.start, base) - base
                high = min(byte_range.end, base + cache.chunk_bytes) - base
                owned, fd = fd, -1  # _send_chunk closes it, whatever happens
                await _send_chunk(owned, fill, sender, low, high)
            await response.write_eof()
        except BdnError as exc:
            log.warning("aborting %s after %d of %d bytes: %s", request.path, sender.sent, byte_range.length,
                        exc.detail)
            record_of(request).aborted = True
            transport.abort()
    finally:
        if fd >= 0:
            os.close(fd)
        if sender is not None:
            sender.close()
            record_of(request).bytes = sender.sent


def _open(cache: ObjectCache, version: Version, index: int) -> tuple[int, ChunkFill | None]:
    """An fd for reading one chunk now, and the fill still writing it (None once committed).

    A fill's fd is duplicated at once: the fill may end (and close its own) at the next await.
    """
    chunk = cache.chunk(version, index)
    if isinstance(chunk, int):
        return chunk, None
    return chunk.attach(), chunk


async def _send_chunk(fd: int, fill: ChunkFill | None, sender: Sender, low: int, high: int) -> None:
    """Bytes [low, high) of one chunk, from its committed file or following its fill; closes `fd`."""
    try:
        if fill is None:
            await sender.send(fd, low, high - low)
            return
        position = low
        while position < high:
            await fill.wait_beyond(position)
            available = min(fill.written, high)
            await sender.send(fd, position, available - position)
            position = available
    finally:
        os.close(fd)
