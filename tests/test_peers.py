"""The peer tier, with several bdn nodes on loopback ports: one upstream read per chunk for the cluster."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bdn.config import PeersConfig
from bdn.objects import ObjectRef
from bdn.peers.membership import Peers, owner_key
from tests.conftest import Bdn, BdnProcess, MiB, StartBdn, bdn_config, chunk_of, free_port
from tests.faultproxy import FaultProxy, Mode
from tests.origin import Origin


async def scrape(http: aiohttp.ClientSession, node: Bdn, name: str) -> float:
    """The sum over labels of one sample of the node's /metrics."""
    async with http.get(f"{node.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


def a_name_owned_by(member: str, static: list[str], self: str, chunks: int) -> tuple[str, list[int]]:
    """An object name of which `member` owns some of the first `chunks` chunks in the view of node `self`, and those.

    Ownership hashes the member URLs, whose ports are random: with two members, a given name has
    no chunk of the other's one time in 2**chunks.
    """
    view = Peers(PeersConfig(static=tuple(static), self=self))
    for name in (f"k{n}.bin" for n in range(64)):
        owned = [index for index in range(chunks) if view.owner(owner_key(ObjectRef("web", name), index)) == member]
        if owned:
            return name, owned
    raise AssertionError(f"{member} owns no chunk of 64 names: ownership changed")


def upstream_reads_by_chunk(origin: Origin, name: str, chunks: int) -> dict[int, list[int]]:
    """Each 1 MiB chunk's upstream reads of `name`, by first byte; every read ends on a chunk's last byte."""
    spans = [tuple(int(part) for part in (entry.range or "")[len("bytes="):].split("-"))
             for entry in origin.gets(name)]
    reads = {index: sorted(first for first, last in spans if last == (index + 1) * MiB - 1)
             for index in range(chunks)}
    assert len(spans) == sum(map(len, reads.values())), spans
    return reads


async def start_cluster(start_bdn: StartBdn, origin: Origin, tmp_path: Path, nodes: int = 3,
                        **cache: object) -> list[Bdn]:
    ports = [free_port() for _ in range(nodes)]
    static = [f"http://127.0.0.1:{port}" for port in ports]
    return [await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=tmp_path / f"n{i}",
                            port=port, peers={"static": static, "self": f"127.0.0.1:{port}", "timeout": "1s"},
                            chunk_bytes="1MiB", **cache)
            for i, port in enumerate(ports)]


async def test_three_nodes_fetch_each_chunk_from_upstream_once(start_bdn: StartBdn, origin: Origin,
                                                               tmp_path: Path, http: aiohttp.ClientSession) -> None:
    body = os.urandom(12 * MiB + 3)
    origin.put("big.bin", body)
    nodes = await start_cluster(start_bdn, origin, tmp_path)

    async def read(node: Bdn) -> tuple[bytes, str]:
        async with http.get(f"{node.url}/web/big.bin") as response:
            assert response.status == 200
            return await response.read(), response.headers["X-Cache"]

    results = await asyncio.gather(*(read(node) for node in nodes))
    assert all(result == body for result, _ in results)
    assert {cache for _, cache in results} <= {"MISS", "HIT-PEER"}
    chunks = sorted(chunk_of(entry.range, len(body), MiB) for entry in origin.gets("big.bin"))
    assert chunks == list(range(13)), "the upstream served each chunk once for the whole cluster"
    hits = [await scrape(http, node, "bdn_peer_hits_total") for node in nodes]
    received = [await scrape(http, node, "bdn_peer_received_bytes_total") for node in nodes]
    sent = [await scrape(http, node, "bdn_peer_sent_bytes_total") for node in nodes]
    assert sum(hits) >= 2 * 9, "each node got the chunks it does not own from their owners"
    assert sum(received) == sum(sent) > 0
    async with http.get(f"{nodes[0].url}/web/big.bin", headers={"Range": "bytes=0-0"}) as response:
        assert response.headers["X-Cache"] in ("HIT", "HIT-RAM", "HIT-PEER")


async def test_dead_owner_costs_a_timeout_not_a_download(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                         http: aiohttp.ClientSession) -> None:
    body = os.urandom(6 * MiB)
    origin.put("m.bin", body)
    nodes = await start_cluster(start_bdn, origin, tmp_path)
    await nodes[1].stop()  # the owner of about a third of the chunks is gone
    began = time.monotonic()
    async with http.get(f"{nodes[0].url}/web/m.bin") as response:
        assert response.status == 200
        assert await response.read() == body
    assert time.monotonic() - began < 10
    async with http.get(f"{nodes[2].url}/web/m.bin", headers={"Range": "bytes=100-5000000"}) as response:
        assert await response.read() == body[100:5000001]


async def test_peer_endpoint_refuses_other_addresses(start_bdn: StartBdn, origin: Origin, tmp_path: Path) -> None:
    origin.put("x.bin", b"x" * 1000)
    nodes = await start_cluster(start_bdn, origin, tmp_path, nodes=2)
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as stranger, \
            stranger.get(f"{nodes[0].url}/_peer/web", headers={"X-Bdn-Object": "e30="}) as response:
        assert response.status == 403
    assert origin.gets("x.bin") == []


@pytest.mark.parametrize("members", [3, 8])
def test_a_joining_node_moves_about_its_share_of_chunks(members: int) -> None:
    static = tuple(f"http://10.0.0.{i}:8080" for i in range(1, members + 1))
    before = Peers(PeersConfig(static=static, self="10.0.0.1:8080"))
    after = Peers(PeersConfig(static=(*static, "http://10.0.0.99:8080"), self="10.0.0.1:8080"))
    keys = [f"web\0obj{i}\0{i % 7}" for i in range(4000)]

    def owners(peers: Peers) -> list[str]:
        return [peers.owner(key) or peers.self_url for key in keys]

    moved = sum(a != b for a, b in zip(owners(before), owners(after), strict=True)) / len(keys)
    assert abs(moved - 1 / (members + 1)) < 0.03, moved
    assert all(b == "http://10.0.0.99:8080" for a, b in zip(owners(before), owners(after), strict=True) if a != b)


@pytest.mark.parametrize("mode", ["garbage", "truncate", "stall", "status", "trickle"])
async def test_a_bad_peer_is_detected_skipped_and_the_bytes_are_right(
        start_bdn: StartBdn, origin: Origin, tmp_path: Path, http: aiohttp.ClientSession, mode: Mode) -> None:
    """A reaches its peer B through a fault proxy that spoils every answer: random bytes, a body cut
    short, a body stalled past `peers.timeout`, a body trickling in a byte per 0.5 s (never a read
    timeout, but past the transfer's deadline), or a 503. A's client gets the right bytes in bounded
    time, and whatever B did not deliver A read from the upstream itself."""
    chunks = 8
    body = os.urandom(chunks * MiB)
    sources = {"web": {"type": "http", "base_url": origin.url}}
    b_port = free_port()
    proxy = FaultProxy(b_port, mode=mode, status=503)  # truncate and stall: after 100 000 bytes of answer
    await proxy.start()
    try:
        a_port = free_port()
        name, owned = a_name_owned_by(proxy.url, [proxy.url], f"127.0.0.1:{a_port}", chunks)
        origin.put(name, body)
        # A reaches B only through the proxy; B knows itself by its real address.
        await start_bdn(sources, cache_dir=tmp_path / "b", port=b_port, chunk_bytes="1MiB",
                        peers={"static": [f"http://127.0.0.1:{a_port}"], "self": f"127.0.0.1:{b_port}"})
        a = await start_bdn(sources, cache_dir=tmp_path / "a", port=a_port, chunk_bytes="1MiB",
                            peers={"static": [f"http://127.0.0.1:{proxy.port}"], "self": f"127.0.0.1:{a_port}",
                                   "timeout": "1s"})
        began = time.monotonic()
        async with http.get(f"{a.url}/web/{name}") as response:
            assert response.status == 200
            assert await response.read() == body
        elapsed = time.monotonic() - began
        assert elapsed < 10, "a bad peer costs at most about one peers.timeout"
        if mode == "stall":
            assert elapsed >= 1.0, "A waited out peers.timeout on the stalled answer"
        errors = await scrape(http, a, "bdn_peer_errors_total")
        received = await scrape(http, a, "bdn_peer_received_bytes_total")
        assert errors >= 1
        assert await scrape(http, a, "bdn_peer_hits_total") == 0, "no answer of B's got through whole"
        assert proxy.faulted >= 1
    finally:
        await proxy.stop()
    # The upstream's reads of each chunk, by first byte (A's cold read of its own chunk 0, if any, is
    # the speculative one of the same span).
    reads = upstream_reads_by_chunk(origin, name, chunks)
    assert all(reads[index] == [index * MiB] for index in range(chunks) if index not in owned), reads
    if mode in ("garbage", "status"):
        # B never saw a request: A read each of B's chunks whole from the upstream, once.
        assert received == 0
        assert all(reads[index] == [index * MiB] for index in owned), reads
    else:
        # B read each chunk it was asked for whole from the upstream, sent A part of it, and A read
        # the rest from the upstream, from exactly the byte where B's answer broke off.
        resumed = [first - index * MiB for index in owned for first in reads[index][1:]]
        assert all(reads[index][0] == index * MiB for index in owned), reads
        assert len(resumed) == errors, reads
        assert all(0 < offset < MiB for offset in resumed), reads
        assert sum(resumed) == received, "every byte B delivered was used, and only the rest re-read"


async def test_owner_killed_mid_transfer(start_bdn: StartBdn, bdn_process: Callable[[dict[str, Any]], BdnProcess],
                                         origin: Origin, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    chunks = 8
    body = os.urandom(chunks * MiB)
    # 512 KiB/s per connection: each 1 MiB chunk takes ~2 s, all 8 in flight at once (fill_concurrency 8),
    # so the owner is surely still sending when it is killed.
    origin.faults.bytes_per_second = 512 * 1024
    sources = {"web": {"type": "http", "base_url": origin.url}}
    a_port = free_port()
    owner = bdn_process(bdn_config(tmp_path / "b", sources, chunk_bytes="1MiB"))
    static = [f"http://127.0.0.1:{a_port}", owner.url]
    name, owned = a_name_owned_by(owner.url, static, f"127.0.0.1:{a_port}", chunks)
    origin.put(name, body)
    owner.config_path.write_text(yaml.safe_dump({
        **bdn_config(tmp_path / "b", sources, chunk_bytes="1MiB"), "listen": f"127.0.0.1:{owner.port}",
        "peers": {"static": static, "self": f"127.0.0.1:{owner.port}"}}))
    owner.start()
    a = await start_bdn(sources, cache_dir=tmp_path / "a", port=a_port, chunk_bytes="1MiB",
                        peers={"static": static, "self": f"127.0.0.1:{a_port}", "timeout": "1s"})

    async def read() -> bytes:
        async with http.get(f"{a.url}/web/{name}") as response:
            assert response.status == 200
            return await response.read()

    async def kill_owner_mid_transfer() -> float:
        """kill -9 the owner once A has some, not all, of the owner's chunks; the bytes A had by then."""
        deadline = time.monotonic() + 5
        while (received := await scrape(http, a, "bdn_peer_received_bytes_total")) == 0:
            assert time.monotonic() < deadline, "A got no byte from the owner within 5 s"
            await asyncio.sleep(0.01)
        owner.kill()
        return received

    began = time.monotonic()
    got, received = await asyncio.gather(read(), kill_owner_mid_transfer())
    elapsed = time.monotonic() - began
    assert got == body
    assert 0 < received < len(owned) * MiB, "the owner died while sending its chunks to A"
    assert elapsed < 10, elapsed
    errors = await scrape(http, a, "bdn_peer_errors_total")
    assert errors >= 1
    assert errors + await scrape(http, a, "bdn_peer_hits_total") == len(owned)
    # Each chunk's reads from the upstream, by first byte: A's own chunks once; the owner's once by the
    # owner, and the bytes A had not got from it once more by A, from where the owner's stream broke off.
    reads = upstream_reads_by_chunk(origin, name, chunks)
    assert all(reads[index] == [index * MiB] for index in range(chunks) if index not in owned), reads
    assert all(reads[index][0] == index * MiB for index in owned), reads
    assert sum(len(reads[index]) - 1 for index in owned) == errors, reads
    assert any(index * MiB < first for index in owned for first in reads[index][1:]), \
        "A took only the rest of a broken chunk from the upstream"


async def test_a_request_from_a_peer_is_never_forwarded(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                        http: aiohttp.ClientSession) -> None:
    body = os.urandom(6 * MiB)
    origin.put("loop.bin", body)
    sources = {"web": {"type": "http", "base_url": origin.url}}
    a_port, b_port, c_port = free_port(), free_port(), free_port()
    urls = {port: f"http://127.0.0.1:{port}" for port in (a_port, b_port, c_port)}
    # Views that disagree: A sends chunks to B, and B would send most of them on to C if it forwarded.
    c = await start_bdn(sources, cache_dir=tmp_path / "c", port=c_port, chunk_bytes="256KiB",
                        peers={"static": list(urls.values()), "self": f"127.0.0.1:{c_port}"})
    await start_bdn(sources, cache_dir=tmp_path / "b", port=b_port, chunk_bytes="256KiB",
                    peers={"static": [urls[b_port], urls[c_port]], "self": f"127.0.0.1:{b_port}"})
    a = await start_bdn(sources, cache_dir=tmp_path / "a", port=a_port, chunk_bytes="256KiB",
                        peers={"static": [urls[b_port]], "self": f"127.0.0.1:{a_port}"})
    async with http.get(f"{a.url}/web/loop.bin") as response:
        assert await response.read() == body
    assert await scrape(http, a, "bdn_peer_hits_total") >= 1, "A did read from B"
    assert await scrape(http, c, "bdn_peer_sent_bytes_total") == 0, "B never passed A's requests on to C"
    chunks = sorted(chunk_of(entry.range, len(body), 256 * 1024) for entry in origin.gets("loop.bin"))
    assert chunks == list(range(24)), "24 chunks: some are B's in A's view and C's in B's, almost surely"


async def test_dns_discovery_adds_what_the_name_resolves_to() -> None:
    peers = Peers(PeersConfig(dns="localhost", port=18080, static=("http://10.1.2.3:8080",), self="10.1.2.3:8080"))
    await peers.refresh()
    assert "http://127.0.0.1:18080" in peers.members
    assert "http://10.1.2.3:8080" in peers.members
    assert peers.is_peer_address("127.0.0.1") and not peers.is_peer_address("127.0.0.2")
