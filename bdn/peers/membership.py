"""Peer membership and ownership: who the peers are, which one owns a chunk, and which are healthy.

Membership is `peers.static` plus the addresses `peers.dns` resolves to (a Kubernetes headless
Service), refreshed every `peers.refresh`. A chunk's owner is chosen by rendezvous
(highest-random-weight) hashing of the chunk's key, which names the object and the chunk index
but not its version, over the members: a node that comes or goes moves only its own share. A
peer whose read failed is skipped for an exponential backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp

from bdn.addresses import IP, parse_ip
from bdn.config import PeersConfig
from bdn.objects import ObjectRef
from bdn.sources.http import client_session

log = logging.getLogger("bdn.peers")
MAX_BACKOFF = 30.0


def owner_key(ref: ObjectRef, index: int) -> str:
    return f"{ref.key}\0{index}"


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

    def failed(self, peer: str) -> None:
        """A read from `peer` failed: skip it for a backoff that doubles with each failure."""
        backoff = min(MAX_BACKOFF, self._backoff.get(peer, 0.5) * 2)
        self._backoff[peer] = backoff
        self._down_until[peer] = time.monotonic() + backoff
        self.errors[peer] += 1

    def succeeded(self, peer: str) -> None:
        self._backoff.pop(peer, None)
        self._down_until.pop(peer, None)
        self.hits[peer] += 1

    def healthy(self, peer: str) -> bool:
        return time.monotonic() >= self._down_until.get(peer, 0.0)

    def session(self) -> aiohttp.ClientSession:
        """The one client session for reads from peers, made on first use, leaving from this node's address."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout,
                                            sock_read=self.config.timeout)
            self._session = client_session(timeout, self._source_address())
        return self._session

    def _source_address(self) -> str | None:
        """`peers.self`'s IP, so reads leave from the address the other members know this node by.

        On a multi-homed node the kernel would pick another source address, which the owner's
        `/_peer/` check does not know. A host name (not an IP) leaves the choice to the kernel.
        """
        host = urlsplit(self.self_url).hostname or ""
        return str(ip) if (ip := parse_ip(host)) is not None and not ip.is_unspecified else None

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


