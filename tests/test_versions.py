"""One version per answer: an origin that changes an object under bdn, ignores If-Match, gives only a weak
ETag, or answers GETs with other validators than HEAD never gets two versions mixed, served or cached."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from bdn.cache.object_cache import ObjectCache
from bdn.state import CACHE_KEY
from tests.conftest import StartBdn
from tests.origin import Origin

MiB = 1 << 20
WEB = "web"


def sources(origin: Origin) -> dict[str, dict[str, str]]:
    return {WEB: {"type": "http", "base_url": origin.url}}


async def fills_done(cache: ObjectCache) -> None:
    """Wait for the state asserted next (fills commit just after their last byte is sent), never for a time."""
    for _ in range(500):
        if cache.fills.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("fills still in flight")


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes, str]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("X-Cache", "")


async def test_object_changed_under_an_origin_that_ignores_if_match_is_never_mixed(
        start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession) -> None:
    old, new = os.urandom(5 * MiB), os.urandom(5 * MiB)
    origin.put("m.bin", old)
    node = await start_bdn(sources(origin))
    url = f"{node.url}/{WEB}/m.bin"
    assert await get(http, url, Range="bytes=0-99") == (206, old[:100], "MISS")  # chunk 0 of the old version
    origin.put("m.bin", new)  # same size, new ETag; the origin sends it whatever If-Match says
    origin.faults.ignore_if_match = True
    with pytest.raises(aiohttp.ClientPayloadError):  # chunk 0 went out; chunk 1 came back as another version
        await get(http, url)
    status, body, _ = await get(http, url)  # the new version, read afresh: never old and new mixed
    assert (status, body) == (200, new)
    status, body, tag = await get(http, url)
    assert (status, body) == (200, new) and tag.startswith("HIT")
    cache = node.app[CACHE_KEY]
    await fills_done(cache)
    assert cache.disk.used_bytes == 5 * MiB + MiB, "the new version's 5 chunks, and the old version's chunk 0 only"


async def test_weak_etag_only_is_served_straight_through_and_never_cached(
        start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession) -> None:
    body = os.urandom(3 * MiB + 5)
    origin.put("weak.bin", body)
    origin.faults.weak_etag_only = True
    node = await start_bdn(sources(origin))
    url = f"{node.url}/{WEB}/weak.bin"
    for _ in range(2):
        assert await get(http, url) == (200, body, "BYPASS")
    assert await get(http, url, Range="bytes=1048570-2097160") == (206, body[1048570:2097161], "BYPASS")
    # one upstream read per answer, and the cold miss's speculative read of chunk 0 (dropped: nothing to pin it to)
    assert len(origin.gets("weak.bin")) == 3 + 1
    assert all(entry.if_match is None for entry in origin.gets("weak.bin"))
    assert node.app[CACHE_KEY].disk.used_bytes == 0, "nothing of it is stored"


async def test_head_and_get_that_disagree_are_bypassed_after_the_first_read(
        start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession) -> None:
    body = os.urandom(2 * MiB)
    origin.put("split.bin", body)
    origin.faults.get_etag = '"what-get-says"'
    node = await start_bdn(sources(origin))
    url = f"{node.url}/{WEB}/split.bin"
    status, _, _ = await get(http, url)
    assert status == 502, "the read that finds out cannot send bytes it could not pin"
    for _ in range(2):
        assert await get(http, url) == (200, body, "BYPASS")
    await fills_done(node.app[CACHE_KEY])
    assert node.app[CACHE_KEY].disk.used_bytes == 0


async def test_a_weak_etag_object_cannot_be_preheated(start_bdn: StartBdn, origin: Origin,
                                                      http: aiohttp.ClientSession) -> None:
    origin.put("weak.bin", os.urandom(MiB))
    origin.faults.weak_etag_only = True
    node = await start_bdn(sources(origin))
    async with http.post(f"{node.url}/v1/warm", json={"urls": [f"{WEB}://weak.bin"]}) as response:
        assert response.status == 202
        job = await response.json()
    while job["state"] == "running":
        async with http.get(f"{node.url}/v1/warm/{job['id']}") as response:
            job = await response.json()
    assert job["state"] == "failed" and "cannot preheat" in job["errors"][0]
    assert node.app[CACHE_KEY].disk.used_bytes == 0
