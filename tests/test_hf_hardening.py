"""An `hf` source under hostile input and a hostile Hub: bad repo ids, redirects and page links to other origins.

Each test talks to a real bdn in front of tests/hub.py's fake Hub. Anything that must never be
contacted is a listening socket that counts connections: "no SSRF" is asserted as zero of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, set_client_factory, snapshot_download
from huggingface_hub.utils._http import default_client_factory

from bdn.config import ConfigError
from bdn.sources.hf import may_read_from
from tests.conftest import Bdn, MiB, StartBdn
from tests.hub import HOST, FakeHub
from tests.test_http_source import expect_json_error

BDN_TOKEN = "hf_bdn_node_token"
USER_TOKEN = "hf_user_with_access"
FILES = {"config.json": b'{"model_type": "tiny"}\n', "w.bin": os.urandom(2 * MiB)}
ODD_IDS = ("acme/_under.score_", "n" * 96, f"{'o' * 96}/{'m' * 96}")  # valid for the Hub, however odd
BAD_IDS = ("a--b", "acme/tiny.git", "acme/model.", "acme/-x", "acme/x_-", "a..b", "a" * 97, f"acme/{'b' * 97}",
           "acme/caf%C3%A9")
BAD_ID_TARGETS = (("GET", "/hf/{id}/resolve/main/config.json"), ("HEAD", "/hf/{id}/resolve/main/w.bin"),
                  ("GET", "/hf/datasets/{id}/resolve/main/x.jsonl"), ("GET", "/hf/api/models/{id}"),
                  ("GET", "/hf/api/datasets/{id}"), ("GET", "/hf/api/datasets/{id}/revision/main"),
                  ("GET", "/hf/api/models/{id}/tree/main"), ("GET", "/hf/api/spaces/{id}/auth-check"),
                  ("POST", "/hf/api/models/{id}/paths-info/main"))


class Knocks:
    """A listener that counts the connections it gets and closes them: a host bdn must never contact."""

    def __init__(self) -> None:
        self.count = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str) -> int:
        self.server = await asyncio.start_server(self._knock, host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _knock(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.count += 1
        writer.close()


@pytest.fixture
async def knocks() -> AsyncIterator[Knocks]:
    counter = Knocks()
    yield counter
    if counter.server is not None:
        counter.server.close()


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    server = FakeHub()
    await server.start()
    server.add_repo("acme/tiny", FILES)
    server.add_repo("acme/copy", FILES)
    server.add_repo("acme/secret", FILES, private=True, tokens=(BDN_TOKEN, USER_TOKEN))
    for repo_id in ODD_IDS:
        server.add_repo(repo_id, FILES)
    yield server
    await server.stop()


@pytest.fixture
async def node(hub: FakeHub, start_bdn: StartBdn, monkeypatch: pytest.MonkeyPatch) -> Bdn:
    monkeypatch.setenv("BDN_TEST_HF_TOKEN", BDN_TOKEN)
    return await start_bdn({"hf": hub.source(token_env="BDN_TEST_HF_TOKEN")})


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert logged == [], [r.getMessage() for r in logged]


async def download(node: Bdn, repo_id: str, filename: str, cache_dir: Path) -> bytes:
    path = await asyncio.to_thread(hf_hub_download, repo_id, filename, endpoint=f"{node.url}/hf", token=False,
                                   cache_dir=cache_dir)
    return Path(path).read_bytes()


# -- repo ids -----------------------------------------------------------------------------------


async def test_bad_repo_ids_are_a_400_and_never_reach_the_hub(node: Bdn, hub: FakeHub, http: aiohttp.ClientSession,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    for repo_id in BAD_IDS:
        for method, target in BAD_ID_TARGETS:
            async with http.request(method, node.url + target.format(id=repo_id), data={"paths": "x"}) as response:
                if method == "HEAD":
                    assert response.status == 400, (repo_id, target)
                else:
                    await expect_json_error(response, 400, "bad_request")
    assert hub.log == []
    no_errors_logged(caplog)


async def test_odd_but_valid_repo_ids_are_served(node: Bdn, tmp_path: Path) -> None:
    for repo_id in ODD_IDS:
        assert await download(node, repo_id, "w.bin", tmp_path) == FILES["w.bin"], repo_id


async def test_a_bad_repo_id_in_a_preheat_fails_the_job(node: Bdn, hub: FakeHub, http: aiohttp.ClientSession,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    urls = ["hf://a--b@main", "hf://acme/x.git", "hf://datasets/acme/-x@main"]
    async with http.post(f"{node.url}/v1/warm", json={"urls": urls}) as response:
        assert response.status == 202
        job = await response.json()
    for _ in range(200):
        async with http.get(f"{node.url}/v1/warm/{job['id']}") as response:
            job = await response.json()
        if job["state"] != "running":
            break
        await asyncio.sleep(0.02)
    assert job["state"] == "failed"
    assert len(job["errors"]) == len(urls)
    assert all(error.startswith(f"{url}: not a Hub repo id") for error, url in zip(job["errors"], urls, strict=True))
    assert hub.log == []
    no_errors_logged(caplog)


# -- redirects and page links ---------------------------------------------------------------------


Setup = Callable[[FakeHub, str], None]


def redirect(prefix: str, status: int = 307) -> Setup:
    return lambda hub, elsewhere: hub.redirect(prefix, f"{elsewhere}{prefix}", status)


def next_page_elsewhere(hub: FakeHub, elsewhere: str) -> None:
    hub.page_size, hub.next_page_origin = 1, elsewhere


OFF_THE_HUB: dict[str, tuple[str, str, Setup]] = {  # what bdn is asked, and how the Hub sends it elsewhere
    "repo info": ("GET", "/hf/api/models/acme/tiny", redirect("/api/models/acme/tiny", 302)),
    "revision": ("GET", "/hf/api/models/acme/tiny/revision/main", redirect("/api/models/acme/tiny/revision/")),
    "tree": ("GET", "/hf/api/models/acme/tiny/tree/main", redirect("/api/models/acme/tiny/tree/")),
    "tree page": ("GET", "/hf/api/models/acme/tiny/tree/main", next_page_elsewhere),
    "paths-info": ("POST", "/hf/api/models/acme/tiny/paths-info/main", redirect("/api/models/acme/tiny/paths-info/")),
    "auth-check": ("GET", "/hf/api/models/acme/secret/auth-check", redirect("/api/models/acme/secret/auth-check")),
    "resolve": ("GET", "/hf/acme/tiny/resolve/main/config.json", redirect("/acme/tiny/resolve/", 302)),
}


@pytest.mark.parametrize("case", list(OFF_THE_HUB))
async def test_the_hub_cannot_send_metadata_calls_to_another_host(
        case: str, node: Bdn, hub: FakeHub, knocks: Knocks, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    method, target, setup = OFF_THE_HUB[case]
    setup(hub, f"http://127.0.0.2:{await knocks.start('127.0.0.2')}")
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    async with http.request(method, node.url + target, headers=headers, data={"paths": "config.json"}) as response:
        await expect_json_error(response, 502, "upstream_error")
    assert knocks.count == 0, "bdn never connected to a host the Hub pointed it to"
    assert hub.log, "the Hub was asked"
    no_errors_logged(caplog)


async def test_the_guard_survives_a_replaced_client_factory(node: Bdn, hub: FakeHub, knocks: Knocks,
                                                           http: aiohttp.ClientSession) -> None:
    redirect("/api/models/acme/tiny")(hub, f"http://127.0.0.2:{await knocks.start('127.0.0.2')}")
    set_client_factory(default_client_factory)  # what any other code in the process may do
    async with http.get(f"{node.url}/hf/api/models/acme/tiny") as response:
        await expect_json_error(response, 502, "upstream_error")
    assert knocks.count == 0


@pytest.mark.parametrize("location", ["/api/models/acme/loop", "http://127.0.0.1:99999/x", "http://[::1/x"])
async def test_a_broken_redirect_is_a_502(location: str, node: Bdn, hub: FakeHub, http: aiohttp.ClientSession,
                                          caplog: pytest.LogCaptureFixture) -> None:
    hub.redirect("/api/models/acme/loop", location)
    hub.redirect("/acme/tiny/resolve/", location, 302)
    for target in ("/hf/api/models/acme/loop", "/hf/acme/tiny/resolve/main/config.json"):
        async with http.get(node.url + target) as response:
            assert response.status == 502, await response.text()
            assert (await response.json())["error"].startswith("upstream_")
    no_errors_logged(caplog)


async def test_a_renamed_repo_still_works(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    """The Hub answers a renamed repo's old URLs with relative 307s to the new name: same origin, followed."""
    hub.redirect("/api/models/acme/old-name", "/api/models/acme/tiny")
    hub.redirect("/acme/old-name/", "/acme/tiny/")
    folder = Path(await asyncio.to_thread(snapshot_download, "acme/old-name", endpoint=f"{node.url}/hf", token=False,
                                          cache_dir=tmp_path))
    assert {name: (folder / name).read_bytes() for name in FILES} == FILES
    assert hub.requests("hub", contains="/old-name/") and hub.requests("hub", contains="/acme/tiny/")
    assert hub.storage_gets(), "the LFS file came from the storage host"


async def test_the_guard_holds_only_bdns_own_calls(start_bdn: StartBdn, hub: FakeHub, knocks: Knocks,
                                                   tmp_path: Path) -> None:
    """Two bdn apps on two Hubs in one process work side by side; the process's own client is not restricted."""
    other = FakeHub()
    await other.start()
    try:
        other.add_repo("acme/tiny", {"w.bin": os.urandom(2 * MiB)})
        nodes = [await start_bdn({"hf": hub.source()}), await start_bdn({"hf": other.source()}, tmp_path / "other")]
        files = await asyncio.gather(*(download(nodes[i % 2], "acme/tiny", "w.bin", tmp_path / f"client{i}")
                                       for i in range(4)))
        assert files == [FILES["w.bin"], other.file("acme/tiny", "w.bin").data] * 2
        redirect("/api/models/acme/tiny")(hub, f"http://127.0.0.2:{await knocks.start('127.0.0.2')}")
        with pytest.raises(httpx2.TransportError):  # the knocking host closed the connection
            await asyncio.to_thread(HfApi(endpoint=hub.url, token=False).repo_info, "acme/tiny")
        assert knocks.count >= 1, "the library itself, used outside bdn, still follows redirects"
    finally:
        await other.stop()


# -- the Hub's own origin is scheme, host and port -------------------------------------------------------


@pytest.mark.parametrize("where", ["http://localhost:{port}", "https://localhost:{port}"])
async def test_the_hubs_host_on_another_port_is_not_the_hub(where: str, start_bdn: StartBdn, hub: FakeHub,
                                                            knocks: Knocks, http: aiohttp.ClientSession,
                                                            tmp_path: Path) -> None:
    node = await start_bdn({"hf": {**hub.source(), "endpoint": f"http://localhost:{hub.port}"}})
    assert await download(node, "acme/tiny", "w.bin", tmp_path) == FILES["w.bin"]  # storage on 127.0.0.1: allowed
    hub.storage_url = where.format(port=await knocks.start(HOST))  # e.g. a Redis beside the Hub
    async with http.get(f"{node.url}/hf/acme/copy/resolve/main/w.bin") as response:
        doc = await expect_json_error(response, 502, "upstream_error")
    assert doc["detail"].endswith(f"outside its own origin and storage_hosts: {hub.storage_url}")
    assert knocks.count == 0


async def test_an_endpoint_with_no_origin_to_hold_calls_to_is_refused(start_bdn: StartBdn) -> None:
    with pytest.raises(ConfigError, match=r"sources\.hf\.endpoint: expected an http"):
        await start_bdn({"hf": {"type": "hf", "endpoint": "http://hub.internal:99999"}})


@pytest.mark.parametrize(("location", "endpoint", "allowed"), [
    ("https://huggingface.co/acme/tiny/resolve/main/x", "https://huggingface.co", True),
    ("https://HuggingFace.co:443/x", "https://huggingface.co", True),
    ("http://huggingface.co/x", "https://huggingface.co", False),
    ("https://huggingface.co:6379/x", "https://huggingface.co", False),
    ("https://cdn-lfs.hf.co/repos/x?sig=1", "https://huggingface.co", True),
    ("https://cdn-lfs.hf.co:8443/x", "https://huggingface.co", True),  # storage hosts are host names, any port
    ("http://cdn-lfs.hf.co/x", "https://huggingface.co", False),  # no plain http from an https Hub
    ("http://cdn-lfs.hf.co/x", "http://mirror.internal", True),
    ("https://hf.co.evil.example/x", "https://huggingface.co", False),
    ("https://huggingface.co@evil.example/x", "https://huggingface.co", False),
    ("https://huggingface.co:99999/x", "https://huggingface.co", False),
    ("ftp://cdn-lfs.hf.co/x", "https://huggingface.co", False),
    ("//cdn-lfs.hf.co/x", "https://huggingface.co", False),
])
def test_where_file_reads_may_go(location: str, endpoint: str, allowed: bool) -> None:
    assert may_read_from(location, endpoint, ("*.hf.co",)) is allowed

