"""The object cache: current version of an object (metadata with a TTL), and its chunks on disk or in flight.

`info()` answers from the stored metadata while it is younger than `metadata_ttl` (its age
survives restarts), otherwise revalidates with one single-flighted `stat` upstream; a changed
ETag is a new version with new chunk names. An unreachable upstream is survived
(stale-if-error) only when every chunk of the last known version is on disk.
`chunk()` gives a reader either a committed chunk file or the fill that is producing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from bdn.errors import NotFound, UpstreamError
from bdn.fill import ChunkFill, Fills
from bdn.flight import SingleFlight
from bdn.objects import ObjectInfo, ObjectRef, chunk_name, chunk_span, version_id
from bdn.sources import Source
from bdn.tiers.disk import DiskTier

log = logging.getLogger("bdn.cache")


@dataclass(frozen=True)
class Version:
    """One version of one object, as the cache serves it."""

    ref: ObjectRef
    info: ObjectInfo
    id: str
    stale: bool = False  # served from cache because the upstream could not be asked

    def chunk_indices(self, start: int, end: int, chunk_bytes: int) -> range:
        if end <= start:
            return range(0)
        return range(start // chunk_bytes, (end - 1) // chunk_bytes + 1)


class ObjectCache:
    """Metadata, disk chunks and fills for every source; see the module docstring."""

    def __init__(self, sources: Mapping[str, Source], disk: DiskTier, chunk_bytes: int, metadata_ttl: float) -> None:
        self.sources = sources
        self.disk = disk
        self.fills = Fills(disk)
        self.chunk_bytes = chunk_bytes
        self.metadata_ttl = metadata_ttl
        self._stats: SingleFlight[str, ObjectInfo] = SingleFlight()

    async def version(self, ref: ObjectRef) -> Version:
        known = self.disk.meta(ref.key)
        if known is not None and time.time() - known[1] < self.metadata_ttl:
            return self._version(ref, known[0])
        try:
            info = await self._stats.do(ref.key, lambda: self._revalidate(ref))
        except NotFound:
            await self.disk.drop_meta(ref.key)
            raise
        except UpstreamError as exc:
            if known is not None and self.complete(self._version(ref, known[0])):
                log.warning("serving %s/%s stale from cache: %s", ref.source, ref.path, exc.detail)
                return self._version(ref, known[0], stale=True)
            raise
        return self._version(ref, info)

    async def _revalidate(self, ref: ObjectRef) -> ObjectInfo:
        checked_at = time.time()
        info = await self.sources[ref.source].stat(ref.path)
        await self.disk.put_meta(ref.key, info, checked_at)
        return info

    def _version(self, ref: ObjectRef, info: ObjectInfo, stale: bool = False) -> Version:
        return Version(ref, info, version_id(ref, info), stale)

    def complete(self, version: Version, start: int = 0, end: int | None = None) -> bool:
        """Whether every byte of [start, end) is local: on disk, or already written by a fill."""
        end = version.info.size if end is None else end
        for index in version.chunk_indices(start, end, self.chunk_bytes):
            name = chunk_name(version.id, index)
            fill = self.fills.get(name)
            if fill is None and not self.disk.has(name):
                return False
            needed = min(end - index * self.chunk_bytes, self.chunk_bytes)
            if fill is not None and (fill.written < needed or fill.error is not None):
                return False
        return True

    def chunk(self, version: Version, index: int) -> int | ChunkFill:
        """An fd of the committed chunk (caller closes), or the fill producing it (started if needed)."""
        name = chunk_name(version.id, index)
        fill = self.fills.get(name)
        if fill is not None:
            return fill
        fd = self.disk.open_chunk(name)
        if fd is not None:
            return fd
        return self._start_fill(version, index, name)

    def prefetch(self, version: Version, indices: range) -> None:
        """Start fills for chunks of `indices` that are neither on disk nor in flight."""
        for index in indices:
            name = chunk_name(version.id, index)
            if not self.disk.has(name) and self.fills.get(name) is None:
                self._start_fill(version, index, name)

    def _start_fill(self, version: Version, index: int, name: str) -> ChunkFill:
        start, end = chunk_span(index, self.chunk_bytes, version.info.size)
        source = self.sources[version.ref.source]
        return self.fills.start(name, source, version.ref.path, version.info, start, end,
                                lambda: self.disk.expire_meta(version.ref.key))

    async def close(self) -> None:
        await self.fills.close()
        for source in self.sources.values():
            await source.close()
