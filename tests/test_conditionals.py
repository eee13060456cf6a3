"""Conditional requests (RFC 9110 §13) and one cache key per upstream URL, over HTTP against a running bdn."""

from __future__ import annotations

import os

import aiohttp
import pytest
import yarl

from tests.conftest import Bdn, MiB, StartBdn
from tests.origin import Origin

MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"  # the origin's Last-Modified for every object
EARLIER, LATER = "Tue, 31 Dec 2024 23:59:59 GMT", "Wed, 01 Jan 2025 00:00:01 GMT"


@pytest.fixture
async def node(start_bdn: StartBdn, origin: Origin) -> Bdn:
    origin.put("m.bin", os.urandom(MiB + 7))
    return await start_bdn({"web": {"type": "http", "base_url": origin.url}})


@pytest.mark.parametrize(("headers", "status"), [
    ({"If-Modified-Since": MODIFIED}, 304),
    ({"If-Modified-Since": LATER}, 304),
    ({"If-Modified-Since": EARLIER}, 200),
    ({"If-Modified-Since": "not a date"}, 200),
    ({"If-Modified-Since": MODIFIED, "If-None-Match": '"another"'}, 200),  # If-None-Match wins (§13.1.3)
    ({"If-Unmodified-Since": EARLIER}, 412),
    ({"If-Unmodified-Since": MODIFIED}, 200),
    ({"If-Unmodified-Since": LATER}, 200),
    ({"If-Unmodified-Since": "Wed, 01 Jan 2025 00:00:00"}, 200),  # no zone: not an HTTP-date, ignored
    ({"If-Unmodified-Since": EARLIER, "If-Match": "*"}, 200),  # If-Match wins (§13.1.4)
])
async def test_date_conditions(node: Bdn, origin: Origin, http: aiohttp.ClientSession, headers: dict[str, str],
                               status: int) -> None:
    async with http.get(f"{node.url}/web/m.bin", headers=headers) as response:
        assert response.status == status
        body = await response.read()
    if status == 200:
        assert body == origin.objects["m.bin"]
    if status == 304:
        assert body == b"" and response.headers["Last-Modified"] == MODIFIED
        assert response.headers["ETag"] == origin.etag("m.bin")


async def test_dot_segments_are_one_cache_key_for_an_http_source(node: Bdn, origin: Origin,
                                                                 http: aiohttp.ClientSession) -> None:
    origin.put("a/x.bin", os.urandom(1000))
    tags = []
    for path in ("a/x.bin", "a/./x.bin", "./a/x.bin", "a/%2e/x.bin"):
        async with http.get(yarl.URL(f"{node.url}/web/{path}", encoded=True)) as response:  # sent as written
            assert response.status == 200, path
            assert await response.read() == origin.objects["a/x.bin"]
            tags.append(response.headers["X-Cache"])
    assert tags[0] == "MISS" and all(tag.startswith("HIT") for tag in tags[1:]), tags
    assert len(origin.gets("a/x.bin")) == 1
