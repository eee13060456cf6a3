"""Reading one chunk from the node that owns it, falling back to the upstream for whatever the peer did not send.

On a local miss, a fill whose chunk is owned by another node reads it from that node's
`/_peer/` endpoint; the owner serves it from its own tiers or fills it from the upstream with
its own single flight, so concurrent misses on many nodes become one upstream read. A peer that
is down, slow past `peers.timeout` or wrong (bad status, other version, short or long body) is
marked unhealthy, and the bytes still missing come from the upstream: a dead peer costs at most
one timeout. A slow one too: a read must be done within `peers.timeout` plus its size at
`MIN_RATE` (1 MiB/s), however regularly its bytes trickle in. A request that came from a peer
is never forwarded to another one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

from bdn.errors import UpstreamError
from bdn.objects import ObjectInfo, ObjectRef
from bdn.peers.membership import Peers
from bdn.peers.wire import OBJECT_HEADER, VERSION_HEADER, encode_object
from bdn.sources import Source
from bdn.sources.http import counted

log = logging.getLogger("bdn.peers")
MIN_RATE = 1 << 20  # bytes/s: a peer read must finish within peers.timeout + its size at this rate


class PeerRefused(UpstreamError):
    """The owner refused the read by the source's access rules (401/403): no fault of the peer's health."""


class PeerRead:
    """A Source for one chunk fill: its bytes from the owning peer, the rest from the upstream if the peer fails."""

    def __init__(self, peers: Peers, peer: str, ref: ObjectRef, version_id: str, upstream: Source,
                 credential: str | None = None) -> None:
        self._peers, self._peer, self._credential = peers, peer, credential
        self._ref, self._version_id, self._upstream = ref, version_id, upstream
        self._tried = False

    async def stat(self, path: str) -> ObjectInfo:
        return await self._upstream.stat(path)

    async def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        received = 0
        if not self._tried:
            self._tried = True
            try:
                async for piece in self._from_peer(info, start, end):
                    received += len(piece)
                    self._peers.bytes_in[self._peer] += len(piece)
                    yield piece
                self._peers.succeeded(self._peer)
                return
            except PeerRefused as exc:  # the peer is healthy; this read (preheat, no client credential) is not for it
                log.info("peer %s refused %s bytes %d-%d (%s); using the upstream", self._peer, path, start, end - 1,
                         exc.detail)
            except Exception as exc:  # any failure of the peer: skip it, take the rest from the upstream
                self._peers.failed(self._peer)
                log.warning("peer %s failed for %s bytes %d-%d after %d bytes (%s); using the upstream",
                            self._peer, path, start, end - 1, received, type(exc).__name__)
        async for piece in self._upstream.read(path, info, start + received, end):
            yield piece

    async def _from_peer(self, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        url = f"{self._peer}/_peer/{quote(self._ref.source, safe='')}"
        headers = {OBJECT_HEADER: encode_object(self._ref, info), "Range": f"bytes={start}-{end - 1}"}
        if self._credential is not None:  # the owner applies the source's access rules to it, as to the client
            headers["Authorization"] = self._credential
        async with self._peers.session().get(url, headers=headers, allow_redirects=False) as response:
            if response.status in (401, 403):
                raise PeerRefused(f"peer answered {response.status}")
            if response.status != 206 or response.headers.get(VERSION_HEADER) != self._version_id:
                raise UpstreamError(f"peer answered {response.status} for another version or range")
            if response.headers.get("Content-Range") != f"bytes {start}-{end - 1}/{info.size}":
                raise UpstreamError("peer sent another range")
            deadline = time.monotonic() + self._peers.config.timeout + (end - start) / MIN_RATE
            async for piece in counted(response.content.iter_chunked(256 * 1024), end - start):
                yield piece
                if time.monotonic() > deadline:  # a trickle that beats the read timeout still ends here
                    raise UpstreamError(f"peer sent under {MIN_RATE // 1024} KiB/s")

    async def close(self) -> None:
        return None
