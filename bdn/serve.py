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
    first = cache.chunk(version, indices[0])
    if not isinstance(first, int):
        await first.wait_beyond(byte_range.start - indices[0] * cache.chunk_bytes)
    else:
        os.close(first)
    writer = await response.prepare(request)
    transport = request.transport
    if transport is None or writer is None:
        raise ConnectionResetError("client went away before the body")
    sender = Sender(transport, writer, use_sendfile)
    try:
        for position, index in enumerate(indices):
            cache.prefetch(version, indices[position:position + read_ahead])
            base = index * cache.chunk_bytes
            low = max(byte_range.start, base) - base
            high = min(byte_range.end, base + cache.chunk_bytes) - base
            await _send_chunk(cache.chunk(version, index), sender, low, high)
        await response.write_eof()
    except BdnError as exc:
        log.warning("aborting %s after %d of %d bytes: %s", request.path, sender.sent, byte_range.length, exc.detail)
        record_of(request).aborted = True
        transport.abort()
    finally:
        sender.close()
        record_of(request).bytes = sender.sent


async def _send_chunk(chunk: int | ChunkFill, sender: Sender, low: int, high: int) -> None:
    """Bytes [low, high) of one chunk: from its committed file, or following its fill."""
    fd = chunk if isinstance(chunk, int) else chunk.attach()
    try:
        if isinstance(chunk, int):
            await sender.send(fd, low, high - low)
            return
        position = low
        while position < high:
            await chunk.wait_beyond(position)
            available = min(chunk.written, high)
            await sender.send(fd, position, available - position)
            position = available
    finally:
        os.close(fd)
