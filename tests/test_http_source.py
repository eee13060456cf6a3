"""The `{type: http}` source: byte-exact reads, strict checking of every upstream answer, stale-if-error.

Every fault the test origin can produce must end as a 502 with a JSON body (or, once the
headers are out, an aborted connection), and must leave nothing wrong in the cache: with the
fault cleared, the next read gets the right bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from tests.conftest import MiB, StartBdn, chunk_of, free_port, sha256
from tests.origin import Faults, Origin

CHUNK = MiB
SIZES = {
    "empty": 0,
    "small": 1000,
    "one-chunk": CHUNK,
    "two-chunks": 2 * CHUNK,
    "odd": 2 * CHUNK + 12345,
}


class RecordingOrigin(Origin):
    """The test origin, also keeping every request's full headers (the base log keeps only a few)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[str, str, dict[str, str]]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append((request.method, request.match_info["path"], dict(request.headers)))
        return await super()._handle(request)


@pytest.fixture
async def origin() -> AsyncIterator[RecordingOrigin]:
    server = RecordingOrigin()
    await server.start()
    yield server
    await server.stop()


def web_source(base_url: str) -> dict[str, Any]:
    return {"web": {"type": "http", "base_url": base_url}}


def chunk_files(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "chunks").rglob("*") if p.is_file()]


async def settle(cache_dir: Path) -> None:
    """Wait until no fill is writing under tmp/ (fills started by read-ahead may outlive a response)."""
    for _ in range(100):
        if not any((cache_dir / "tmp").iterdir()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fills still in progress: {list((cache_dir / 'tmp').iterdir())}")


async def expect_json_error(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    body = await response.read()
    assert response.status == status, body[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert set(doc) == {"error", "detail"}, doc
    assert isinstance(doc["error"], str) and doc["error"]
    assert isinstance(doc["detail"], str)
    assert "Traceback" not in body.decode()
    if code is not None:
        assert doc["error"] == code, doc
    return doc


@pytest.fixture
def objects(origin: RecordingOrigin) -> dict[str, bytes]:
    data = {name: os.urandom(size) for name, size in SIZES.items()}
    for name, body in data.items():
        origin.put(f"w/{name}.bin", body)
    return data


# -- byte-exact reads ------------------------------------------------------------------------------


async def test_whole_objects_match_origin(start_bdn: StartBdn, origin: RecordingOrigin, objects: dict[str, bytes],
                                          http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    for name, body in objects.items():
        for expected_cache in ("MISS", "HIT"):
            async with http.get(f"{node.url}/web/w/{name}.bin") as response:
                got = await response.read()
                assert response.status == 200, name
                assert sha256(got) == sha256(body), name
                assert response.headers["Content-Length"] == str(len(body))
                assert response.headers["ETag"] == origin.etag(f"w/{name}.bin")
                assert response.headers["Last-Modified"] == "Wed, 01 Jan 2025 00:00:00 GMT"
                assert response.headers["Accept-Ranges"] == "bytes"
                assert "Warning" not in response.headers
                assert response.headers["X-Cache"].startswith("HIT" if not body else expected_cache), name
    for name, body in objects.items():
        ranges = [entry.range for entry in origin.gets(f"w/{name}.bin")]
        if not body:  # only the speculative first read of a cold miss, answered 416 with no bytes
            assert len(ranges) <= 1, ranges
            continue
        chunks = sorted(chunk_of(header, len(body), CHUNK) for header in ranges)
        assert chunks == list(range((len(body) + CHUNK - 1) // CHUNK)), f"{name}: each chunk fetched once"


RANGES = [
    ("bytes=0-0", "small", slice(0, 1)),
    ("bytes=10-99", "small", slice(10, 100)),
    ("bytes=500-", "small", slice(500, 1000)),
    ("bytes=-100", "small", slice(900, 1000)),
    ("bytes=-5000", "small", slice(0, 1000)),
    ("bytes=900-5000", "small", slice(900, 1000)),
    (f"bytes={CHUNK - 10}-{CHUNK + 9}", "two-chunks", slice(CHUNK - 10, CHUNK + 10)),
    (f"bytes={CHUNK}-", "two-chunks", slice(CHUNK, 2 * CHUNK)),
    (f"bytes=-{CHUNK + 1}", "odd", slice(2 * CHUNK + 12345 - CHUNK - 1, 2 * CHUNK + 12345)),
    ("bytes=1-", "odd", slice(1, 2 * CHUNK + 12345)),
    (f"bytes={2 * CHUNK}-{2 * CHUNK}", "odd", slice(2 * CHUNK, 2 * CHUNK + 1)),
    (f"bytes={CHUNK - 1}-{CHUNK - 1}", "one-chunk", slice(CHUNK - 1, CHUNK)),
]


@pytest.mark.parametrize(("header", "name", "expected"), RANGES)
async def test_ranges_match_origin(start_bdn: StartBdn, origin: RecordingOrigin, objects: dict[str, bytes],
                                   http: aiohttp.ClientSession, header: str, name: str, expected: slice) -> None:
    node = await start_bdn(web_source(origin.url))
    body = objects[name]
    want = body[expected]
    for _ in ("cold", "warm"):
        async with http.get(f"{node.url}/web/w/{name}.bin", headers={"Range": header}) as response:
            got = await response.read()
            assert response.status == 206
            assert got == want
            start = expected.start
            assert response.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{len(body)}"
            assert response.headers["Content-Length"] == str(len(want))
    covering = range(expected.start // CHUNK, (expected.start + len(want) - 1) // CHUNK + 1)
    assert len(origin.gets(f"w/{name}.bin")) == len(covering), "only the covering chunks, each once"


@pytest.mark.parametrize(("client_path", "origin_path"), [
    ("dir/a%20b.bin", "dir/a b.bin"),
    ("dir/%E2%9C%93.bin", "dir/\u2713.bin"),
    ("q%3Fx.bin", "q?x.bin"),
    ("h%23x.bin", "h#x.bin"),
    ("100%25.bin", "100%.bin"),
    ("a%2Fb/c.bin", "a/b/c.bin"),
])
async def test_paths_map_to_the_origin_key(start_bdn: StartBdn, origin: RecordingOrigin,
                                           http: aiohttp.ClientSession, client_path: str, origin_path: str) -> None:
    body = os.urandom(3000)
    origin.put(origin_path, body)
    node = await start_bdn(web_source(origin.url))
    async with http.get(yarl.URL(f"{node.url}/web/{client_path}", encoded=True)) as response:
        assert response.status == 200, await response.read()
        assert await response.read() == body
    assert {path for _, path, _ in origin.headers} == {origin_path}


async def test_base_url_with_a_path_prefix(start_bdn: StartBdn, origin: RecordingOrigin,
                                           http: aiohttp.ClientSession) -> None:
    body = os.urandom(5000)
    origin.put("mirror/v1/model.bin", body)
    node = await start_bdn(web_source(origin.url + "/mirror/"))
    async with http.get(f"{node.url}/web/v1/model.bin", headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert await response.read() == body[100:200]
    assert {path for _, path, _ in origin.headers} == {"mirror/v1/model.bin"}


async def test_upstream_requests_carry_identity_and_if_match(start_bdn: StartBdn, origin: RecordingOrigin,
                                                             objects: dict[str, bytes],
                                                             http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    async with http.get(f"{node.url}/web/w/odd.bin", headers={"Accept-Encoding": "gzip, br"}) as response:
        assert response.status == 200
        assert await response.read() == objects["odd"]
        assert "Content-Encoding" not in response.headers
    etag = origin.etag("w/odd.bin")
    assert [m for m, _, _ in origin.headers].count("HEAD") == 1
    assert len(origin.gets("w/odd.bin")) == 3
    for method, path, headers in origin.headers:
        assert path == "w/odd.bin"
        assert headers.get("Accept-Encoding") == "identity", (method, headers)
        assert headers.get("User-Agent", "").startswith("bdn/")
        if method == "GET":
            assert headers.get("Range", "").startswith("bytes=")
    pinned = [entry for entry in origin.gets("w/odd.bin") if entry.if_match is not None]
    assert all(entry.if_match == etag for entry in pinned)
    # The one read without If-Match is the cold miss's speculative first chunk, sent with the HEAD
    # and used only because the HEAD then reported the same ETag and size.
    assert [entry.range for entry in origin.gets("w/odd.bin") if entry.if_match is None] == [f"bytes=0-{CHUNK - 1}"]


async def test_client_headers_are_not_forwarded_and_head_reads_no_bytes(start_bdn: StartBdn, origin: RecordingOrigin,
                                                                        objects: dict[str, bytes],
                                                                        http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    secret = {"Authorization": "Bearer client-secret", "Cookie": "session=client-secret",
              "X-Forwarded-For": "10.0.0.1", "If-None-Match": '"x"', "Range": "bytes=3-7"}
    async with http.head(f"{node.url}/web/w/small.bin", headers=secret) as response:
        assert response.status == 206
        assert await response.read() == b""
    assert origin.gets("w/small.bin") == [], "a HEAD never reads object bytes upstream"
    async with http.get(f"{node.url}/web/w/small.bin", headers=secret) as response:
        assert response.status == 206
        assert await response.read() == objects["small"][3:8]
    for _, _, headers in origin.headers:
        assert "client-secret" not in repr(headers)
        assert "X-Forwarded-For" not in headers and "If-None-Match" not in headers
    assert [entry.range for entry in origin.gets("w/small.bin")] == ["bytes=0-999"], "chunk-aligned, not the client's"


# -- strictness: faults become 502, nothing wrong is cached ----------------------------------------

FAULTS_502 = [
    ("ignore_range", True),
    ("wrong_content_range", True),
    ("gzip", True),
    ("status", 500),
    ("status", 504),
    ("status", 302),
    ("no_validators", True),
]


@pytest.mark.parametrize("name", ["small", "odd"])
@pytest.mark.parametrize(("fault", "value"), FAULTS_502)
async def test_fault_gives_502_and_nothing_is_cached(start_bdn: StartBdn, origin: RecordingOrigin,
                                                     objects: dict[str, bytes], http: aiohttp.ClientSession,
                                                     tmp_path: Path, fault: str, value: object, name: str) -> None:
    node = await start_bdn(web_source(origin.url))
    url = f"{node.url}/web/w/{name}.bin"
    setattr(origin.faults, fault, value)
    async with http.get(url) as response:
        await expect_json_error(response, 502)
    async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
        await expect_json_error(response, 502)
    await settle(tmp_path / "cache")
    assert chunk_files(tmp_path / "cache") == [], "nothing was committed from a faulty upstream"
    setattr(origin.faults, fault, getattr(Faults(), fault))
    async with http.get(url) as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(objects[name])
    async with http.get(url, headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206
        assert await response.read() == objects[name][10:20]


async def test_fault_on_head_gives_502_without_body(start_bdn: StartBdn, origin: RecordingOrigin,
                                                    objects: dict[str, bytes], http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    origin.faults.status = 500
    async with http.head(f"{node.url}/web/w/small.bin") as response:
        assert response.status == 502
        assert await response.read() == b""


async def read_outcome(http: aiohttp.ClientSession, url: str, size: int) -> str:
    """'502' for a JSON error, 'aborted' for a body cut short; fails on a complete-looking short body."""
    try:
        async with http.get(url) as response:
            if response.status == 502:
                await expect_json_error(response, 502)
                return "502"
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            got = await response.read()
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "aborted"
    raise AssertionError(f"a short upstream body was served as a complete {len(got)}-byte answer of {size}")


@pytest.mark.parametrize("fault", ["short_body", "long_body"])
@pytest.mark.parametrize("name", ["small", "one-chunk", "odd"])
async def test_short_or_long_body_on_a_cold_read(start_bdn: StartBdn, origin: RecordingOrigin,
                                                 objects: dict[str, bytes], http: aiohttp.ClientSession,
                                                 tmp_path: Path, name: str, fault: str) -> None:
    node = await start_bdn(web_source(origin.url))
    url = f"{node.url}/web/w/{name}.bin"
    setattr(origin.faults, fault, True)
    # The first half-chunk arrives before the upstream drops, so headers may already be out (bdn streams
    # a chunk as it lands): either a 502 before any byte, or a cut connection; never a short "complete" body.
    assert await read_outcome(http, url, len(objects[name])) in ("502", "aborted")
    await settle(tmp_path / "cache")
    assert chunk_files(tmp_path / "cache") == []
    setattr(origin.faults, fault, False)
    async with http.get(url) as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(objects[name])


async def test_short_body_on_a_later_chunk_aborts(start_bdn: StartBdn, origin: RecordingOrigin,
                                                  objects: dict[str, bytes], http: aiohttp.ClientSession,
                                                  tmp_path: Path) -> None:
    node = await start_bdn(web_source(origin.url))
    url = f"{node.url}/web/w/odd.bin"
    body = objects["odd"]
    async with http.get(url, headers={"Range": f"bytes=0-{CHUNK - 1}"}) as response:
        assert await response.read() == body[:CHUNK]
    await settle(tmp_path / "cache")
    assert len(chunk_files(tmp_path / "cache")) == 1
    origin.faults.short_body = True
    assert await read_outcome(http, url, len(body)) == "aborted"
    await settle(tmp_path / "cache")
    assert len(chunk_files(tmp_path / "cache")) == 1, "the failed chunks were not committed"
    origin.faults.short_body = False
    async with http.get(url) as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(body)


async def test_object_changed_between_stat_and_read(start_bdn: StartBdn, origin: RecordingOrigin,
                                                    http: aiohttp.ClientSession) -> None:
    old, new = os.urandom(3000), os.urandom(4000)
    origin.put("v.bin", old)
    node = await start_bdn(web_source(origin.url))
    url = f"{node.url}/web/v.bin"
    async with http.head(url) as response:
        assert response.headers["ETag"] == origin.etag("v.bin")
    origin.put("v.bin", new)
    async with http.get(url) as response:
        await expect_json_error(response, 502, "upstream_changed")
    async with http.get(url) as response:
        assert response.status == 200
        assert response.headers["ETag"] == origin.etag("v.bin")
        assert await response.read() == new


# -- upstream statuses and reachability ------------------------------------------------------------


async def test_upstream_404_is_404(start_bdn: StartBdn, origin: RecordingOrigin, http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    async with http.get(f"{node.url}/web/no/such.bin") as response:
        await expect_json_error(response, 404, "not_found")
    async with http.head(f"{node.url}/web/no/such.bin") as response:
        assert response.status == 404
        assert await response.read() == b""


@pytest.mark.parametrize(("upstream", "status", "code"), [
    (403, 403, "forbidden"), (401, 403, "forbidden"), (410, 404, "not_found"), (404, 404, "not_found"),
])
async def test_upstream_status_maps(start_bdn: StartBdn, origin: RecordingOrigin, objects: dict[str, bytes],
                                    http: aiohttp.ClientSession, upstream: int, status: int, code: str) -> None:
    node = await start_bdn(web_source(origin.url))
    origin.faults.status = upstream
    async with http.get(f"{node.url}/web/w/small.bin") as response:
        await expect_json_error(response, status, code)


async def test_origin_stopped_is_502(start_bdn: StartBdn, origin: RecordingOrigin, objects: dict[str, bytes],
                                     http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(origin.url))
    await origin.stop()
    async with http.get(f"{node.url}/web/w/small.bin") as response:
        await expect_json_error(response, 502, "upstream_unreachable")


async def test_closed_port_is_502(start_bdn: StartBdn, http: aiohttp.ClientSession) -> None:
    node = await start_bdn(web_source(f"http://127.0.0.1:{free_port()}"))
    async with http.get(f"{node.url}/web/w/small.bin") as response:
        await expect_json_error(response, 502, "upstream_unreachable")
    async with http.get(f"{node.url}/healthz") as response:
        assert response.status == 200


# -- stale-if-error ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "500"])
@pytest.mark.parametrize("ttl", ["0s", "100ms"])
async def test_fully_cached_object_is_served_stale(start_bdn: StartBdn, origin: RecordingOrigin,
                                                   objects: dict[str, bytes], http: aiohttp.ClientSession,
                                                   tmp_path: Path, how: str, ttl: str) -> None:
    node = await start_bdn(web_source(origin.url), metadata_ttl=ttl)
    url = f"{node.url}/web/w/odd.bin"
    body = objects["odd"]
    async with http.get(url) as response:
        assert await response.read() == body
        assert "Warning" not in response.headers
    await settle(tmp_path / "cache")
    await asyncio.sleep(0.15)
    if how == "stopped":
        await origin.stop()
    else:
        origin.faults.status = 500
    async with http.get(url) as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(body)
        assert response.headers["Warning"].startswith("110 ")
        assert response.headers["ETag"] == origin.etag("w/odd.bin")
    async with http.get(url, headers={"Range": "bytes=5-9"}) as response:
        assert response.status == 206
        assert await response.read() == body[5:10]
        assert "Warning" in response.headers


@pytest.mark.parametrize("how", ["stopped", "500"])
async def test_partially_cached_object_is_502(start_bdn: StartBdn, origin: RecordingOrigin,
                                              objects: dict[str, bytes], http: aiohttp.ClientSession,
                                              tmp_path: Path, how: str) -> None:
    node = await start_bdn(web_source(origin.url), metadata_ttl="0s")
    url = f"{node.url}/web/w/odd.bin"
    async with http.get(url, headers={"Range": "bytes=0-99"}) as response:
        assert await response.read() == objects["odd"][:100]
    await settle(tmp_path / "cache")
    assert len(chunk_files(tmp_path / "cache")) == 1
    if how == "stopped":
        await origin.stop()
    else:
        origin.faults.status = 500
    async with http.get(url) as response:
        await expect_json_error(response, 502)
    async with http.get(url, headers={"Range": "bytes=0-99"}) as response:
        await expect_json_error(response, 502)
