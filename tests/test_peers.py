"""The peer tier, with several bdn nodes on loopback ports: one upstream read per chunk for the cluster."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from bdn.config import PeersConfig
from bdn.peers import Peers
from bdn.state import CACHE_KEY
from tests.conftest import Bdn, MiB, StartBdn, chunk_of, free_port
from tests.origin import Origin


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

    async def read(node: Bdn) -> bytes:
        async with http.get(f"{node.url}/web/big.bin") as response:
            assert response.status == 200
            return await response.read()

    results = await asyncio.gather(*(read(node) for node in nodes))
    assert all(result == body for result in results)
    chunks = sorted(chunk_of(entry.range, len(body), MiB) for entry in origin.gets("big.bin"))
    assert chunks == list(range(13)), "the upstream served each chunk once for the whole cluster"
    assert sum(node.app[CACHE_KEY].peers.hits for node in nodes) >= 13  # type: ignore[union-attr]


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
