"""The object cache: the current version of an object, and its chunks in RAM, on disk or in flight.

`version()` answers from the stored metadata while it is younger than `metadata_ttl` (its age
survives restarts), otherwise revalidates with one single-flighted `stat` upstream; a changed
ETag is a new version with new chunk names. An unreachable upstream is survived
(stale-if-error) only when every chunk of the last known version is on disk.
`open_chunk()` gives a reader a committed chunk file or the fill producing it; `verify()`
checks a whole object against the digest its source vouches for before it is trusted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bdn.cache.disk import DiskTier
from bdn.cache.fill import ChunkFill, Fills
from bdn.cache.flight import SingleFlight
from bdn.cache.metadata import Metadata
from bdn.cache.ram import RamTier
from bdn.errors import UpstreamError
from bdn.objects import ObjectInfo, ObjectRef, chunk_name, chunk_span, version_id
from bdn.peers.membership import Peers, owner_key
from bdn.peers.reader import PeerRead
from bdn.sources import Source, Speculating, Speculation
from bdn.sources.digests import Hasher, hasher_for
from bdn.sources.retry import RetryPolicy

log = logging.getLogger("bdn.cache")
HASH_PIECE = 4 * 1024 * 1024
IO_THREADS = 8


@dataclass(frozen=True)
class Version:
    """One version of one object, as the cache serves it."""

    ref: ObjectRef
    info: ObjectInfo
    id: str
    stale: bool = False  # served from cache because the upstream could not be asked
    fetched: bool = False  # its metadata was just asked upstream for this request
    from_peer: bool = False  # asked for by a peer: its fills never go to another peer (no loops)
    credential: str | None = field(default=None, repr=False)  # the client's Authorization, for a peer to check

    def chunk_indices(self, start: int, end: int, chunk_bytes: int) -> range:
        if end <= start:
            return range(0)
        return range(start // chunk_bytes, (end - 1) // chunk_bytes + 1)


def _drop_speculation(guess: asyncio.Future[Speculation | None]) -> None:
    speculation = None if guess.cancelled() else guess.result()
    if speculation is not None:
        speculation.close()


def _hash_file(hasher: Hasher, fd: int, length: int) -> None:
    """Feed `length` bytes of `fd` from offset 0 to `hasher` (runs in a thread; hashlib drops the GIL)."""
    offset = 0
    while offset < length:
        piece = os.pread(fd, min(HASH_PIECE, length - offset), offset)
        if not piece:
            raise UpstreamError("chunk file ended early while checking its digest")
        hasher.update(piece)
        offset += len(piece)


class ObjectCache:
    """Metadata, disk chunks and fills for every source; see the module docstring."""

    def __init__(self, sources: Mapping[str, Source], disk: DiskTier, chunk_bytes: int, metadata_ttl: float,
                 ram_bytes: int = 0, peers: Peers | None = None, retry: RetryPolicy | None = None) -> None:
        self.sources = sources
        self.peers = peers
        self.disk = disk
        # Threads for file reads the loop must not do (RAM loads, digest checks, the no-sendfile path);
        # bdn's own, so they never queue behind other users of the default executor.
        self.io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="bdn-io")
        self.ram = RamTier(ram_bytes, self.io)
        self.retry = retry or RetryPolicy()
        # While the disk refuses writes, fills in flight hold no more than the RAM tier's budget in memory.
        self.fills = Fills(disk, self.ram, self.retry, uncached_limit=max(1, ram_bytes // chunk_bytes))
        self.chunk_bytes = chunk_bytes
        self.metadata_ttl = metadata_ttl
        self.metadata = Metadata(disk, self.retry)
        self._checks: SingleFlight[str, None] = SingleFlight()
        self.checksum_failures = 0  # objects whose bytes did not match their upstream digest
        self.coalesced = 0  # chunk reads that joined a fill already in flight instead of starting one

    async def version(self, ref: ObjectRef, immutable: bool = False, first_byte: int | None = None) -> Version:
        """The version of `ref` to serve: known and fresh, revalidated, or stale when the upstream is away.

        A stale version is served only if all of it is on disk (stale-if-error). `first_byte`
        (the first byte a GET wants) lets a cold miss read its first chunk speculatively,
        alongside the metadata request, instead of after it.
        """
        async def stat() -> dict[str, Any]:
            source = self.sources[ref.source]
            speculate = (first_byte is not None and isinstance(source, Speculating)
                         and self.metadata.peek(ref.key) is None
                         and self._owner(ref, first_byte // self.chunk_bytes) is None)
            if not speculate:
                return (await source.stat(ref.path)).to_json()
            assert first_byte is not None
            return (await self._stat_speculating(ref, source, first_byte)).to_json()

        def servable(known: dict[str, Any]) -> bool:
            return self.complete(self.version_of(ref, ObjectInfo.from_json(known)))

        value, freshness = await self.metadata.get(ref.key, stat, None if immutable else self.metadata_ttl, servable)
        version = self.version_of(ref, ObjectInfo.from_json(value), freshness == "stale")
        return dataclasses.replace(version, fetched=True) if freshness == "fetched" else version

    async def _stat_speculating(self, ref: ObjectRef, source: Source, first_byte: int) -> ObjectInfo:
        """Stat, with the chunk holding `first_byte` read at the same time; the read fills that chunk if it
        turns out to be of the version stat reports (same ETag and size), and is dropped otherwise.

        A cold miss then costs one upstream round trip before its first byte, not two.
        """
        assert isinstance(source, Speculating)
        start = first_byte // self.chunk_bytes * self.chunk_bytes
        guess = asyncio.ensure_future(source.speculate(ref.path, start, start + self.chunk_bytes))
        try:
            info = await source.stat(ref.path)
        except BaseException:
            guess.add_done_callback(_drop_speculation)
            raise
        speculation = await guess
        if speculation is None:
            return info
        end = min(start + self.chunk_bytes, info.size)
        version = self.version_of(ref, info)
        name = chunk_name(version.id, start // self.chunk_bytes)
        usable = start < info.size and speculation.fits(info, start, end)
        if not usable or self._committed(name) or self.fills.get(name) is not None:
            speculation.close()
            return info
        self.fills.start(name, source, ref.path, info, start, end, lambda: self.metadata.expire(ref.key),
                         first=speculation.body)
        return info

    def version_of(self, ref: ObjectRef, info: ObjectInfo, stale: bool = False) -> Version:
        return Version(ref, info, version_id(ref, info), stale)

    def _committed(self, name: str) -> bool:
        """Whether a chunk is in RAM or on disk (not just being filled)."""
        return self.ram.has(name) or self.disk.has(name)

    def stored(self, version: Version, start: int, end: int) -> bool:
        """Whether every chunk covering [start, end) is committed (in RAM or on disk), not just being filled."""
        return all(self._committed(chunk_name(version.id, index))
                   for index in version.chunk_indices(start, end, self.chunk_bytes))

    def complete(self, version: Version, start: int = 0, end: int | None = None) -> bool:
        """Whether every byte of [start, end) is local: on disk, or already written by a fill."""
        end = version.info.size if end is None else end
        for index in version.chunk_indices(start, end, self.chunk_bytes):
            name = chunk_name(version.id, index)
            if self.ram.has(name):
                continue
            fill = self.fills.get(name)
            if fill is None and not self.disk.has(name):
                return False
            needed = min(end - index * self.chunk_bytes, self.chunk_bytes)
            if fill is not None and (fill.written < needed or fill.error is not None):
                return False
        return True

    def ram_body(self, version: Version, start: int, end: int) -> bytes | None:
        """Bytes [start, end) when one checked chunk in RAM holds them all, else None."""
        first, last = start // self.chunk_bytes, (end - 1) // self.chunk_bytes
        data = self.ram.get(chunk_name(version.id, first)) if first == last else None
        if data is None or not self.verified(version):
            return None
        base = first * self.chunk_bytes
        return data[start - base:end - base]

    def chunk(self, version: Version, index: int) -> int | ChunkFill:
        """An fd of the committed chunk (caller closes), or the fill producing it (started if needed)."""
        name = chunk_name(version.id, index)
        fill = self.fills.get(name)
        if fill is not None:
            self.coalesced += 1
            return fill
        fd = self.disk.open_chunk(name)
        if fd is not None:
            start, end = chunk_span(index, self.chunk_bytes, version.info.size)
            self.ram.load(name, fd, end - start)
            return fd
        return self._start_fill(version, index, name)

    def open_chunk(self, version: Version, index: int) -> tuple[int, ChunkFill | None]:
        """An fd for reading one chunk now (caller closes), and the fill still writing it (None once on disk).

        A fill's fd is duplicated at once: the fill may end, and close its own, at the next await.
        """
        chunk = self.chunk(version, index)
        if isinstance(chunk, int):
            return chunk, None
        return chunk.attach(), chunk

    async def whole_chunk(self, version: Version, index: int) -> int:
        """An fd of chunk `index` once all its bytes are there, filling it if needed (caller closes)."""
        fd, fill = self.open_chunk(version, index)
        if fill is not None:
            try:
                await fill.wait_finished()
            except BaseException:
                os.close(fd)
                raise
        return fd

    def verified(self, version: Version) -> bool:
        """Whether the version needs no content check (no digest, or it already passed one)."""
        return version.info.digest is None or self.metadata.peek(self._verified_key(version)) is not None

    async def verify(self, version: Version) -> None:
        """Fill the whole object if needed and check it against its digest; on mismatch drop it and raise.

        One check per version runs at a time, whatever the number of readers waiting for it.
        """
        if not self.verified(version):
            await self._checks.do(version.id, lambda: self._verify(version))

    async def _verify(self, version: Version) -> None:
        size = version.info.size
        hasher, expected = hasher_for(version.info.digest or "", size)
        indices = version.chunk_indices(0, size, self.chunk_bytes)
        self.prefetch(version, indices)
        for index in indices:
            fd = await self.whole_chunk(version, index)
            try:
                start, end = chunk_span(index, self.chunk_bytes, size)
                await asyncio.get_running_loop().run_in_executor(self.io, _hash_file, hasher, fd, end - start)
            finally:
                os.close(fd)
        if hasher.hexdigest() != expected:
            self.checksum_failures += 1
            log.error("checksum mismatch for %s/%s: expected %s, got %s; dropping its chunks",
                      version.ref.source, version.ref.path, version.info.digest, hasher.hexdigest())
            names = [chunk_name(version.id, index) for index in indices]
            self.ram.discard(names)
            await self.disk.remove(names)
            raise UpstreamError(f"{version.ref.path} does not match its digest upstream")
        await self.metadata.put(self._verified_key(version), {"digest": version.info.digest})

    @staticmethod
    def _verified_key(version: Version) -> str:
        return f"verified\0{version.id}"

    def prefetch(self, version: Version, indices: range) -> None:
        """Start fills for chunks of `indices` that are neither stored, loading into RAM, nor in flight.

        While the disk refuses writes and the RAM tier cannot hold a chunk, a fill's bytes are gone
        once it ends, so reading ahead would read chunks twice: each is then filled when a reader
        gets to it.
        """
        if not version.info.pinnable or (self.disk.write_error is not None and not self.ram.admits(self.chunk_bytes)):
            return
        for index in indices:
            name = chunk_name(version.id, index)
            if not self._committed(name) and not self.ram.loading(name) and self.fills.get(name) is None:
                self._start_fill(version, index, name)

    def _start_fill(self, version: Version, index: int, name: str) -> ChunkFill:
        start, end = chunk_span(index, self.chunk_bytes, version.info.size)
        source: Source = self.sources[version.ref.source]
        owner = self._owner(version.ref, index) if not version.from_peer else None
        if owner is not None and self.peers is not None:
            source = PeerRead(self.peers, owner, version.ref, version.id, source, version.credential)
        return self.fills.start(name, source, version.ref.path, version.info, start, end,
                                lambda: self.metadata.expire(version.ref.key))

    def from_peers(self, version: Version, start: int, end: int) -> bool:
        """Whether every chunk of [start, end) not committed here belongs to another (healthy) node."""
        if self.peers is None or version.from_peer:
            return False
        return all(self._owner(version.ref, index) is not None
                   for index in version.chunk_indices(start, end, self.chunk_bytes)
                   if not self._committed(chunk_name(version.id, index)))

    def _owner(self, ref: ObjectRef, index: int) -> str | None:
        """The other node that owns chunk `index` of `ref`, or None when this node fills it itself."""
        return None if self.peers is None else self.peers.owner(owner_key(ref, index))

    async def close(self) -> None:
        await self.fills.close()
        self.io.shutdown(wait=False, cancel_futures=True)
        for source in self.sources.values():
            await source.close()
