"""The upstream interface every source implements, and the name → factory table.

A source knows how to `stat` a path (→ `ObjectInfo`) and how to `read` a byte range of one
version of it as an async iterator of bytes. It raises only `bdn.errors` types: `NotFound`,
`Forbidden`, `UpstreamUnreachable`, `VersionChanged` (the object is no longer that version)
and `UpstreamError` (anything else the upstream got wrong). The cache code never knows which
upstream it talks to. A source checks what it reads: a body of any other length than asked
for is an `UpstreamError`, never bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bdn.config import GcsSourceConfig, HfSourceConfig, HttpSourceConfig, S3SourceConfig, SourceConfig, UpstreamConfig
from bdn.objects import ObjectInfo


class Source(Protocol):
    """One configured upstream."""

    async def stat(self, path: str) -> ObjectInfo:
        """Size, ETag and friends of the current version of `path`."""
        ...

    def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of exactly version `info` of `path`, streamed as they arrive."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class Speculation:
    """A ranged read started before the object's version was known (to save a round trip on a cold miss).

    Its bytes may be used only if `fits` the version that `stat` then reports; otherwise `close` it.
    """

    etag: str
    content_range: str  # as the upstream sent it
    body: AsyncIterator[bytes]  # checked against the announced length, like any read
    close: Callable[[], None]

    def fits(self, info: ObjectInfo, start: int, end: int) -> bool:
        return info.pinnable and bool(self.etag) and self.etag == info.etag and (
            self.content_range == f"bytes {start}-{end - 1}/{info.size}")


@runtime_checkable
class Speculating(Protocol):
    """A source that can start a read of a byte range without knowing the object's version."""

    async def speculate(self, path: str, start: int, end: int) -> Speculation | None:
        """The read, once its headers are in, or None if it failed (never raises)."""
        ...


def make_source(config: SourceConfig, upstream: UpstreamConfig) -> Source:
    """Build the source a config entry describes (imports its client library only when used)."""
    if isinstance(config, S3SourceConfig):
        from bdn.sources.s3 import S3Source

        return S3Source(config, upstream)
    if isinstance(config, HttpSourceConfig):
        from bdn.sources.http import HttpSource

        return HttpSource(config, upstream)
    if isinstance(config, GcsSourceConfig):
        from bdn.sources.gcs import GcsSource

        return GcsSource(config, upstream)
    if isinstance(config, HfSourceConfig):
        from bdn.sources.hf import HfSource

        return HfSource(config, upstream)
    raise TypeError(f"no source for {type(config).__name__}")
