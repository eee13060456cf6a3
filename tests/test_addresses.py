"""Who is asking: peers named by host name, and IPv4 clients seen through a dual-stack listener as ::ffff:a.b.c.d."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from bdn.addresses import parse_ip
from bdn.config import AdminConfig, PeersConfig
from bdn.peers.membership import Peers
from bdn.state import CACHE_KEY
from tests.conftest import MiB, StartBdn, free_port
from tests.origin import Origin
from tests.test_peers import a_name_owned_by, scrape


def test_an_ipv4_mapped_address_is_its_ipv4_address() -> None:
    assert parse_ip("::ffff:127.0.0.1") == parse_ip("127.0.0.1") == parse_ip("[::ffff:7f00:1]")
    assert parse_ip("::1") != parse_ip("127.0.0.1")
    assert parse_ip("localhost") is None and parse_ip(None) is None and parse_ip("") is None
    admin = AdminConfig()
    assert admin.allows("::ffff:127.0.0.1") and admin.allows("127.0.0.1") and admin.allows("::1")
    assert not admin.allows("::ffff:10.0.0.1") and not admin.allows("10.0.0.1") and not admin.allows("garbage")


async def test_peer_members_match_by_address_whatever_their_spelling() -> None:
    peers = Peers(PeersConfig(static=("http://localhost:18081", "http://[::ffff:10.9.8.7]:18082"),
                              self="10.1.2.3:18080"))
    assert not peers.is_peer_address("127.0.0.1"), "a host name is not an address until it is resolved"
    await peers.refresh()
    assert peers.is_peer_address("127.0.0.1") and peers.is_peer_address("::ffff:127.0.0.1")
    assert peers.is_peer_address("10.9.8.7") and peers.is_peer_address("10.1.2.3")
    assert not peers.is_peer_address("127.0.0.2") and not peers.is_peer_address(None)


async def test_peers_listed_by_host_name_accept_each_other(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                           http: aiohttp.ClientSession) -> None:
    body = os.urandom(8 * MiB)
    sources = {"web": {"type": "http", "base_url": origin.url}}
    ports = [free_port(), free_port()]
    static = [f"http://localhost:{port}" for port in ports]
    name, owned = a_name_owned_by(static[1], static, f"localhost:{ports[0]}", 8)
    origin.put(name, body)
    nodes = [await start_bdn(sources, cache_dir=tmp_path / f"n{port}", port=port, chunk_bytes="1MiB",
                             peers={"static": static, "self": f"localhost:{port}", "timeout": "2s"})
             for port in ports]
    for node in nodes:  # the first refresh, which resolves the names, runs as the app starts
        await node.app[CACHE_KEY].peers.refresh()
    async with http.get(f"{nodes[0].url}/web/{name}") as response:
        assert response.status == 200
        assert await response.read() == body
    assert await scrape(http, nodes[0], "bdn_peer_errors_total") == 0, "the owner answered its /_peer/ reads"
    assert await scrape(http, nodes[0], "bdn_peer_hits_total") == len(owned)
    assert await scrape(http, nodes[1], "bdn_peer_sent_bytes_total") > 0
