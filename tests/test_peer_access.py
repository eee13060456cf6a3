"""`/_peer/` keeps a source's access rules: a member's address alone reads nothing a client could not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bdn.objects import ObjectInfo, ObjectRef
from bdn.peers import wire
from bdn.sources.hf import HubFile
from bdn.state import CACHE_KEY
from tests.conftest import Bdn, MiB, StartBdn, free_port
from tests.hub import FakeHub
from tests.origin import Origin

TOKEN = "pod-token-0123456789abcdef"
BDN_TOKEN = "hf_bdn_own_token_0123456789"
USER_TOKEN = "hf_user_token_0123456789ab"


async def start_pair(start_bdn: StartBdn, tmp_path: Path, sources: dict[str, Any]) -> list[Bdn]:
    ports = [free_port(), free_port()]
    static = [f"http://127.0.0.1:{port}" for port in ports]
    return [await start_bdn(sources, cache_dir=tmp_path / f"n{i}", port=port,
                            peers={"static": static, "self": f"127.0.0.1:{port}", "timeout": "2s"})
            for i, port in enumerate(ports)]


def asked(ref: ObjectRef, info: ObjectInfo, **headers: str) -> dict[str, str]:
    return {wire.OBJECT_HEADER: wire.encode_object(ref, info), **headers}


async def test_a_token_source_is_401_on_peer_reads_without_the_clients_token(
        start_bdn: StartBdn, origin: Origin, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    body = os.urandom(4 * MiB + 1)
    origin.put("m.bin", body)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    web = {"web": {"type": "http", "base_url": origin.url, "clients": {"bearer_tokens_file": str(tokens)}}}
    first, second = await start_pair(start_bdn, tmp_path, web)
    info = ObjectInfo(size=len(body), etag=origin.etag("m.bin"))
    for headers in ({}, {"Authorization": "Bearer not-the-token-0123456789"}):
        async with http.get(f"{first.url}/_peer/web", headers=asked(ObjectRef("web", "m.bin"), info, **headers)) as r:
            assert r.status == 401, headers  # from 127.0.0.1, a member's address
    assert origin.log == [], "nothing was read for a refused peer request"
    # A client with the token reads the object through both nodes; the peer reads carry its token.
    for node in (first, second):
        async with http.get(f"{node.url}/web/m.bin", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            assert await response.read() == body
    served = sum(node.app[CACHE_KEY].peers.bytes_out.total() for node in (first, second))  # type: ignore[union-attr]
    assert served > 0, "chunks owned by the other node came from it"
    assert len(origin.gets("m.bin")) <= 5 + 1, "each chunk read upstream once for the pair (and one speculation)"


@pytest.fixture
async def hub() -> Any:
    server = FakeHub()
    await server.start()
    server.add_repo("acme/secret", {"w.bin": os.urandom(3 * MiB)}, private=True, tokens=(BDN_TOKEN, USER_TOKEN))
    yield server
    await server.stop()


async def test_a_private_hub_file_is_refused_on_peer_reads_without_a_token_the_hub_accepts(
        start_bdn: StartBdn, hub: FakeHub, tmp_path: Path, http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BDN_TEST_HF_TOKEN", BDN_TOKEN)
    first, second = await start_pair(start_bdn, tmp_path, {"hf": hub.source(token_env="BDN_TEST_HF_TOKEN")})
    url = f"{first.url}/hf/acme/secret/resolve/main/w.bin"
    async with http.get(url, headers={"Authorization": f"Bearer {USER_TOKEN}"}) as response:
        assert response.status == 200
        body = await response.read()
        sha = response.headers["X-Repo-Commit"]
        etag = response.headers["ETag"]
    ref = ObjectRef("hf", HubFile("model", "acme/secret", sha, "w.bin").path)
    info = ObjectInfo(size=len(body), etag=etag)
    for node in (first, second):
        for headers in ({}, {"Authorization": "Bearer hf_someone_else_0123456789"}):
            async with http.get(f"{node.url}/_peer/hf", headers=asked(ref, info, **headers)) as response:
                assert response.status in (401, 404), headers  # the Hub's own answer for a private repo
        async with http.get(f"{node.url}/_peer/hf",
                            headers=asked(ref, info, Authorization=f"Bearer {USER_TOKEN}")) as response:
            assert response.status == 200
            assert await response.read() == body


async def test_members_on_distinct_addresses_serve_each_other(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                              http: aiohttp.ClientSession) -> None:
    """A multi-homed node: without leaving from its `self` address, every peer read was a 403 and fell back."""
    body = os.urandom(6 * MiB + 5)
    origin.put("m.bin", body)
    hosts = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    ports = [free_port() for _ in hosts]
    static = [f"http://{host}:{port}" for host, port in zip(hosts, ports, strict=True)]
    nodes = [await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=tmp_path / host,
                             port=port, host=host, peers={"static": static, "self": f"{host}:{port}", "timeout": "2s"})
             for host, port in zip(hosts, ports, strict=True)]
    for node in nodes:
        async with http.get(f"{node.url}/web/m.bin") as response:
            assert response.status == 200
            assert await response.read() == body
    peer_tiers = [node.app[CACHE_KEY].peers for node in nodes]
    assert all(tier is not None for tier in peer_tiers)
    assert sum(tier.errors.total() for tier in peer_tiers if tier) == 0, "no peer read was refused or failed"
    assert sum(tier.hits.total() for tier in peer_tiers if tier) > 0, "chunks came from their owners"
    assert len(origin.gets("m.bin")) <= 7 + 1, "each chunk read upstream once for the cluster (and one speculation)"
