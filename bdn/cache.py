"""The object cache: current version of an object (metadata with a TTL), and its chunks on disk or in flight.

`info()` answers from the stored metadata while it is younger than `metadata_ttl` (its age
survives restarts), otherwise revalidates with one single-flighted `stat` upstream; a changed
ETag is a new version with new chunk names. An unreachable upstream is survived
(stale-if-error) only when every chunk of the last known version is on disk.
`chunk()` gives a reader either a committed chunk file or the fill that is producing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bdn.fill import ChunkFill, Fills
from bdn.metadata import Metadata
from bdn.objects import ObjectInfo, ObjectRef, chunk_name, chunk_span, version_id
from bdn.sources import Source
from bdn.tiers.disk import DiskTier


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
        self.metadata = Metadata(disk)

    async def version(self, ref: ObjectRef, immutable: bool = False) -> Version:
        """The version of `ref` to serve: known and fresh, revalidated, or stale when the upstream is away.

        A stale version is served only if all of it is on disk (stale-if-error).
        """
        async def stat() -> dict[str, Any]:
            return (await self.sources[ref.source].stat(ref.path)).to_json()

        def servable(known: dict[str, Any]) -> bool:
            return self.complete(self._version(ref, ObjectInfo.from_json(known)))

        value, stale = await self.metadata.get(ref.key, stat, None if immutable else self.metadata_ttl, servable)
        return self._version(ref, ObjectInfo.from_json(value), stale)

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
                                lambda: self.metadata.expire(version.ref.key))

    async def close(self) -> None:
        await self.fills.close()
        for source in self.sources.values():
            await source.close()
