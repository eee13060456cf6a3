"""The regional peer tier: who the peers are, which one owns a chunk, and reading a chunk from it.

Membership is `peers.static` plus the addresses `peers.dns` resolves to (a Kubernetes headless
Service), refreshed every `peers.refresh`. A chunk's owner is chosen by rendezvous
(highest-random-weight) hashing of the chunk's key, which names the object and the chunk index
but not its version, over the members: a node that comes or goes moves only its own share.

On a local miss, a fill whose chunk is owned by another node reads it from that node's
`/_peer/` endpoint (`PeerRead`); the owner serves it from its own tiers or fills it from the
upstream with its own single flight, so concurrent misses on many nodes become one upstream
read. A peer that is down, slow past `peers.timeout` or wrong (bad status, other version,
short or long body) is marked unhealthy with exponential backoff, and the bytes still missing
come from the upstream: a dead peer costs at most one timeout. A request that came from a
peer is never forwarded to another one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from bdn.addresses import IP, parse_ip
from bdn.config import PeersConfig
from bdn.errors import UpstreamError
from bdn.objects import ObjectInfo, ObjectRef
from bdn.sources import Source
from bdn.sources.http import client_session, counted

log = logging.getLogger("bdn.peers")
OBJECT_HEADER = "X-Bdn-Object"  # the asking node's ObjectRef and ObjectInfo, base64 JSON
VERSION_HEADER = "X-Bdn-Version"  # the owner's version id of what it sends
MAX_BACKOFF = 30.0


def owner_key(ref: ObjectRef, index: int) -> str:
    return f"{ref.key}\0{index}"


def encode_object(ref: ObjectRef, info: ObjectInfo) -> str:
    payload = {"source": ref.source, "path": ref.path, "info": info.to_json()}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def decode_object(header: str) -> tuple[ObjectRef, ObjectInfo]:
    payload: dict[str, Any] = json.loads(base64.b64decode(header, validate=True))
    return ObjectRef(payload["source"], payload["path"]), ObjectInfo.from_json(payload["info"])


class Peers:
    """Membership, ownership and health of the peer tier (see the module docstring)."""

    def __init__(self, config: PeersConfig) -> None:
        self.config = config
        self.self_url = f"http://{config.self}"
        self.members: list[str] = sorted({self.self_url, *config.static})
        self._addresses: set[IP] = set()  # of the members: IP literals, and what their host names resolve to
        self._resolved: dict[str, set[IP]] = {}  # member host name → its addresses, as last resolved
        self._down_until: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self.hits: Counter[str] = Counter()  # per peer: chunk reads it answered in full
        self.errors: Counter[str] = Counter()  # per peer: reads that failed and fell back to the upstream
        self.bytes_in: Counter[str] = Counter()  # per peer: bytes received from it
        self.bytes_out: Counter[str] = Counter()  # per asking address: bytes this node sent on /_peer/
        self._note_addresses()

    def _note_addresses(self) -> None:
        hosts = {urlsplit(member).hostname or "" for member in self.members}
        literal = {ip for host in hosts if (ip := parse_ip(host)) is not None}
        named = {address for host, addresses in self._resolved.items() if host in hosts for address in addresses}
        self._addresses = literal | named

    async def refresh(self) -> None:
        """Re-resolve `peers.dns` into the member list (static members always stay), and members' host names."""
        if self.config.dns:
            found = await _resolve(self.config.dns, self.config.port)
            if found is not None:
                urls = {f"http://{_host(str(address))}:{self.config.port}" for address in found}
                self.members = sorted({self.self_url, *self.config.static, *urls})
        for host in {urlsplit(member).hostname or "" for member in self.members}:
            if host and parse_ip(host) is None and (addresses := await _resolve(host, 0)) is not None:
                self._resolved[host] = addresses
        self._note_addresses()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.config.refresh)

    def is_peer_address(self, address: str | None) -> bool:
        """Whether a client address (`request.remote`) is one of the members'."""
        return parse_ip(address) in self._addresses

    def owner(self, key: str) -> str | None:
        """The member owning `key` if it is another, healthy node; None if this node should fill it."""
        best = max(self.members, key=lambda member: hashlib.sha256(f"{member}\0{key}".encode()).digest())
        if best == self.self_url or not self.healthy(best):
            return None
        return best

    def _failed(self, peer: str) -> None:
        backoff = min(MAX_BACKOFF, self._backoff.get(peer, 0.5) * 2)
        self._backoff[peer] = backoff
        self._down_until[peer] = time.monotonic() + backoff
        self.errors[peer] += 1

    def _succeeded(self, peer: str) -> None:
        self._backoff.pop(peer, None)
        self._down_until.pop(peer, None)
        self.hits[peer] += 1

    def healthy(self, peer: str) -> bool:
        return time.monotonic() >= self._down_until.get(peer, 0.0)

    def reader(self, peer: str, ref: ObjectRef, version_id: str, upstream: Source) -> PeerRead:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout,
                                            sock_read=self.config.timeout)
            self._session = client_session(timeout)
        return PeerRead(self, self._session, peer, ref, version_id, upstream)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def _resolve(name: str, port: int) -> set[IP] | None:
    """The addresses `name` resolves to, or None (logged) when it cannot be resolved now."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("peer discovery: cannot resolve %s: %s", name, exc)
        return None
    return {ip for info in infos if (ip := parse_ip(str(info[4][0]))) is not None}


class PeerRead:
    """A Source for one chunk fill: its bytes from the owning peer, the rest from the upstream if the peer fails."""

    def __init__(self, peers: Peers, session: aiohttp.ClientSession, peer: str, ref: ObjectRef,
                 version_id: str, upstream: Source) -> None:
        self._peers, self._session, self._peer = peers, session, peer
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
                self._peers._succeeded(self._peer)
                return
            except Exception as exc:  # any failure of the peer: skip it, take the rest from the upstream
                self._peers._failed(self._peer)
                log.warning("peer %s failed for %s bytes %d-%d after %d bytes (%s); using the upstream",
                            self._peer, path, start, end - 1, received, type(exc).__name__)
        async for piece in self._upstream.read(path, info, start + received, end):
            yield piece

    async def _from_peer(self, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        url = f"{self._peer}/_peer/{quote(self._ref.source, safe='')}"
        headers = {OBJECT_HEADER: encode_object(self._ref, info), "Range": f"bytes={start}-{end - 1}"}
        async with self._session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 206 or response.headers.get(VERSION_HEADER) != self._version_id:
                raise UpstreamError(f"peer answered {response.status} for another version or range")
            if response.headers.get("Content-Range") != f"bytes {start}-{end - 1}/{info.size}":
                raise UpstreamError("peer sent another range")
            async for piece in counted(response.content.iter_chunked(256 * 1024), end - start):
                yield piece

    async def close(self) -> None:
        return None
