"""Turn an object version into a response: conditionals and Range (RFC 9110), then the body.

A body walks the chunks its range covers, in order: committed chunks go out by sendfile,
chunks in flight as their fill lands them. Before each chunk the next `fill_concurrency`
chunks of the range are made sure to be on disk or being fetched (read-ahead), so a cold read
keeps several upstream reads going while the client receives bytes in order. Headers go out
with the first byte, so a fill that fails before producing one still becomes a proper 502.
Once headers are out, an error can no longer become a status: the connection is aborted, so
the client sees a short body and never one that looks complete. The one error a body survives
is the cache disk failing under a fill: the rest of that chunk comes from a new, uncached fill.

Objects whose source gives a content digest (Hugging Face files) are trusted only once the
whole object hashed to it: until then the last byte of a response is held back until the
check passes (a mismatch aborts the response), and a range that stops short of the end waits
for the check before its first byte.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Final, Literal

from aiohttp import web

from bdn.cache.fill import ChunkFill
from bdn.cache.object_cache import ObjectCache, Version
from bdn.errors import BdnError, CacheDiskError, PreconditionFailed, RangeNotSatisfiable
from bdn.front.ranges import ByteRange, Unsatisfiable, if_range_allows, parse, unsatisfied_content_range
from bdn.front.send import Sender
from bdn.objects import chunk_name
from bdn.ops.requestlog import record_of
from bdn.state import CACHE_KEY, CONFIG_KEY

log = logging.getLogger("bdn.serve")
SMALL_BODY = 64 * 1024  # bodies up to this size, when in RAM, are answered in one piece
RAM_PART = 1 << 20  # parts of a chunk up to this size are sent from RAM, larger ones by sendfile
FOLLOW_BATCH = 1 << 20  # bytes a reader following a fill waits for between sends (after its first)


def _etag_listed(header: str, etag: str, weak: bool) -> bool:
    """Whether an If-Match/If-None-Match list names `etag` (RFC 9110 §8.8.3.2 comparison)."""
    def bare(tag: str) -> str:
        return tag[2:] if weak and tag.startswith("W/") else tag

    listed = [tag.strip() for tag in header.split(",")]
    return "*" in listed or any(bare(tag) == bare(etag) for tag in listed if tag)


def _object_headers(version: Version) -> dict[str, str]:
    info = version.info
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": info.content_type or "application/octet-stream",
    }
    if info.etag:
        headers["ETag"] = info.etag
    if info.last_modified:
        headers["Last-Modified"] = info.last_modified
    if version.stale:
        headers["Warning"] = '110 bdn "Response is Stale"'
    return headers


def _check_preconditions(request: web.Request, version: Version) -> web.Response | None:
    """412 or 304 when the request's conditions say so (RFC 9110 §13.2.2 order)."""
    etag = version.info.etag
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _etag_listed(if_match, etag, weak=False):
        raise PreconditionFailed("If-Match does not match the object's ETag")
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_listed(if_none_match, etag, weak=True):
        return web.Response(status=304, headers={"ETag": etag})
    return None


def _selected_range(request: web.Request, version: Version) -> ByteRange | None:
    info = version.info
    if not if_range_allows(request.headers.get("If-Range"), info.etag, info.last_modified):
        return None
    try:
        return parse(request.headers.get("Range"), info.size)
    except Unsatisfiable:
        raise RangeNotSatisfiable(
            f"range not satisfiable for {info.size} bytes",
            headers={"Content-Range": unsatisfied_content_range(info.size)},
        ) from None


async def respond(request: web.Request, version: Version, extra_headers: dict[str, str],
                  whole_object_headers: dict[str, str] | None = None) -> web.StreamResponse:
    """The whole answer to a GET or HEAD of `version`, with `extra_headers` added.

    `whole_object_headers` (whole-object checksums) are added only to answers that carry the
    whole object with 200: a client checks them against the body (PROTOCOLS.md 2.4, 3.6).
    """
    cache = request.app[CACHE_KEY]
    not_modified = _check_preconditions(request, version)
    if not_modified is not None:
        return not_modified
    selected = _selected_range(request, version)
    size = version.info.size
    byte_range = selected or ByteRange(0, size)
    headers = {**_object_headers(version), **extra_headers, "Content-Length": str(byte_range.length)}
    record = record_of(request)
    record.source = version.ref.source
    record.cache = _cache_result(cache, version, byte_range)
    headers["X-Cache"] = record.cache
    if selected is not None:
        headers["Content-Range"] = selected.content_range(size)
    elif whole_object_headers:
        headers.update(whole_object_headers)
    status = 206 if selected is not None else 200
    if request.method == "HEAD" or byte_range.length == 0:
        return web.Response(status=status, headers=headers)
    if byte_range.length <= SMALL_BODY and (body := cache.ram_body(version, byte_range.start, byte_range.end)):
        record.bytes = len(body)  # one write of headers and body: the hot path for small files and ranges
        return web.Response(status=status, headers=headers, body=body)
    response = web.StreamResponse(status=status, headers=headers)
    await stream_range(request, response, cache, version, byte_range)
    return response


def _cache_result(cache: ObjectCache, version: Version, byte_range: ByteRange) -> str:
    """`X-Cache`: HIT-RAM (sent from RAM), HIT (all on the node), HIT-PEER (the rest from peers), or MISS."""
    indices = version.chunk_indices(byte_range.start, byte_range.end, cache.chunk_bytes)
    if indices and all(_sent_from_ram(cache, version, index, byte_range) for index in indices):
        return "HIT-RAM"
    if cache.complete(version, byte_range.start, byte_range.end) and not (
            version.fetched and not cache.stored(version, byte_range.start, byte_range.end)):
        return "HIT"  # (a cold miss whose first chunk was read with the metadata may be complete already)
    return "HIT-PEER" if cache.from_peers(version, byte_range.start, byte_range.end) else "MISS"


IN_RAM: Final = "ram"
Opened = tuple[int, ChunkFill | None] | Literal["ram"]  # a chunk ready to send: an fd (and its fill), or in RAM


async def stream_range(request: web.Request, response: web.StreamResponse, cache: ObjectCache,
                       version: Version, byte_range: ByteRange) -> None:
    """Send `byte_range` of `version` as the body of the not yet prepared `response`."""
    config = request.app[CONFIG_KEY]
    read_ahead = config.cache.fill_concurrency
    checked = cache.verified(version)
    if not checked and byte_range.end < version.info.size:
        await cache.verify(version)  # the last byte cannot be held back: check before the first one
        checked = True
    body = ByteRange(byte_range.start, byte_range.end - (0 if checked else 1))
    first = await _first_chunk(cache, version, body, read_ahead)
    sender: Sender | None = None
    try:
        writer = await response.prepare(request)
        record_of(request).first_byte_at = time.monotonic()  # headers leave with the first byte's arrival
        transport = request.transport
        if transport is None or writer is None:
            raise ConnectionResetError("client went away before the body")
        sender = Sender(transport, writer, config.cache.sendfile, cache.io, config.downstream.send_timeout)
        try:
            opened, first = first, None
            await _send_span(cache, version, sender, body, read_ahead, opened)
            if not checked:
                await cache.verify(version)
                await _send_span(cache, version, sender, ByteRange(body.end, byte_range.end), read_ahead, None)
            await response.write_eof()
        except BdnError as exc:
            log.warning("aborting %s after %d of %d bytes: %s", request.path, sender.sent, byte_range.length,
                        exc.detail)
            record_of(request).aborted = True
            transport.abort()
        except ConnectionError:  # the client went away mid-body: ordinary, not an error of bdn's
            log.debug("client left %s after %d of %d bytes", request.path, sender.sent, byte_range.length)
            record_of(request).aborted = True
            transport.abort()
    finally:
        if isinstance(first, tuple):
            os.close(first[0])
        if sender is not None:
            sender.close()
            record_of(request).bytes = sender.sent


async def _first_chunk(cache: ObjectCache, version: Version, span: ByteRange, read_ahead: int) -> Opened | None:
    """The span's first chunk, opened, once its first wanted byte is there (so errors still become a status)."""
    if span.length <= 0:
        return None
    indices = version.chunk_indices(span.start, span.end, cache.chunk_bytes)
    cache.prefetch(version, indices[:read_ahead])
    opened = _open(cache, version, indices[0], span)
    if isinstance(opened, tuple) and opened[1] is not None:
        try:
            await opened[1].wait_beyond(span.start - indices[0] * cache.chunk_bytes)
        except BaseException:
            os.close(opened[0])
            raise
    return opened


def _open(cache: ObjectCache, version: Version, index: int, span: ByteRange) -> Opened:
    return IN_RAM if _sent_from_ram(cache, version, index, span) else cache.open_chunk(version, index)


def _sent_from_ram(cache: ObjectCache, version: Version, index: int, span: ByteRange) -> bool:
    """Whether chunk `index` is in RAM and its part of `span` should be sent from there.

    Measured (benchmarks/RESULTS.md): large parts go out cheaper by sendfile from the page
    cache than written from RAM through the transport; small ones the other way round.
    """
    base = index * cache.chunk_bytes
    part = min(span.end, base + cache.chunk_bytes) - max(span.start, base)
    name = chunk_name(version.id, index)
    return cache.ram.has(name) and (part <= RAM_PART or not cache.disk.has(name))


async def _send_span(cache: ObjectCache, version: Version, sender: Sender, span: ByteRange, read_ahead: int,
                     opened: Opened | None) -> None:
    """Bytes of `span`, chunk by chunk with read-ahead; `opened` is its first chunk, already open (and owned)."""
    indices = version.chunk_indices(span.start, span.end, cache.chunk_bytes)
    for position, index in enumerate(indices):
        if opened is None:
            cache.prefetch(version, indices[position:position + read_ahead])
            opened = _open(cache, version, index, span)
        base = index * cache.chunk_bytes
        low, high = max(span.start, base) - base, min(span.end, base + cache.chunk_bytes) - base
        chunk, opened = opened, None
        if isinstance(chunk, tuple):
            await _send_filled(cache, version, index, chunk, sender, low, high)
        else:
            await _send_from_ram(cache, version, index, sender, low, high)


async def _send_filled(cache: ObjectCache, version: Version, index: int, chunk: tuple[int, ChunkFill | None],
                       sender: Sender, low: int, high: int) -> None:
    """Bytes [low, high) of an opened chunk; if its fill lost the cache disk mid-write, the rest from a new fill.

    The disk tier then refuses new temp files for a while, so the new fill streams uncached.
    """
    before = sender.sent
    try:
        await _send_chunk(chunk[0], chunk[1], sender, low, high)
    except CacheDiskError:
        resumed = low + sender.sent - before
        log.warning("cache disk failed under a fill; sending bytes %d+ of a chunk from a new, uncached one", resumed)
        fd, fill = cache.open_chunk(version, index)
        await _send_chunk(fd, fill, sender, resumed, high)


async def _send_from_ram(cache: ObjectCache, version: Version, index: int, sender: Sender, low: int,
                         high: int) -> None:
    """Bytes [low, high) of a chunk in the RAM tier, written from it to the socket without a copy.

    The chunk is looked up again before each write and no reference to it is held while the
    client is waited on, so a chunk the tier evicts is freed at once, whatever the clients still
    sending from it: RAM stays within `ram_bytes`. Once the chunk has left RAM, the rest of the
    part comes from disk, or from a new fill.
    """
    name = chunk_name(version.id, index)

    def view_of(start: int, end: int) -> memoryview | None:
        data = cache.ram.get(name)
        return None if data is None else memoryview(data)[start:end]

    position = await sender.send_memory(view_of, low, high)
    if position < high:
        await _send_filled(cache, version, index, cache.open_chunk(version, index), sender, position, high)


async def _send_chunk(fd: int, fill: ChunkFill | None, sender: Sender, low: int, high: int) -> None:
    """Bytes [low, high) of one chunk, from its committed file or following its fill; closes `fd`."""
    try:
        if fill is None:
            await sender.send(fd, low, high - low)
            return
        position = low
        while position < high:
            # The first bytes go out as soon as they land; after that, wake per FOLLOW_BATCH bytes,
            # not per upstream read, so 32 readers of one fill cost 4x fewer wake-ups and syscalls.
            target = position if position == low else min(position + FOLLOW_BATCH, high) - 1
            await fill.wait_beyond(target)
            available = min(fill.written, high)
            await sender.send(fd, position, available - position)
            position = available
    finally:
        os.close(fd)
