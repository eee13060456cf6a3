"""An `hf` source under hostile input: bad repo ids.

Each test talks to a real bdn in front of tests/hub.py's fake Hub.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from huggingface_hub import hf_hub_download

from tests.conftest import Bdn, MiB, StartBdn
from tests.hub import FakeHub
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


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    server = FakeHub()
    await server.start()
    server.add_repo("acme/tiny", FILES)
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
