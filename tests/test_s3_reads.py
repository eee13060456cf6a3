"""S3 objects through bdn: whole and range reads match moto byte for byte, at every edge size."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest

from tests.conftest import MiB, StartBdn, sha256
from tests.proxy import CountingProxy

CHUNK = MiB
SIZES = {
    "empty": 0,
    "small": 1000,
    "one-chunk": CHUNK,
    "two-chunks": 2 * CHUNK,
    "odd": 2 * CHUNK + 12345,
}


def s3_sources(endpoint: str) -> dict[str, Any]:
    return {"s3": {"type": "s3", "endpoint_url": endpoint, "region": "us-east-1"}}


SEND_PATHS = {  # cache keys for each way bytes leave bdn
    "sendfile": {"sendfile": True, "ram_bytes": 0},
    "fallback": {"sendfile": False, "ram_bytes": 0},
    "ram": {"sendfile": True, "ram_bytes": "64MiB"},
}


@pytest.fixture(params=list(SEND_PATHS))
def start(request: pytest.FixtureRequest, start_bdn: StartBdn) -> StartBdn:
    """Every read test runs through each send path: the kernel's sendfile, the thread fallback, the RAM tier."""

    async def start_with(sources: dict[str, Any], **cache: Any) -> Any:
        return await start_bdn(sources, **SEND_PATHS[request.param], **cache)

    return start_with


@pytest.fixture
def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    data = {name: os.urandom(size) for name, size in SIZES.items()}
    for name, body in data.items():
        s3.put_object(Bucket=bucket, Key=f"w/{name}.bin", Body=body)
    return data


async def test_whole_objects_match_origin(start: StartBdn, proxy: CountingProxy, objects: dict[str, bytes],
                                          http: aiohttp.ClientSession) -> None:
    node = await start(s3_sources(proxy.url))
    for name, body in objects.items():
        for expected_cache in ("MISS", "HIT"):
            async with http.get(f"{node.url}/s3/models/w/{name}.bin") as response:
                got = await response.read()
                assert response.status == 200, name
                assert sha256(got) == sha256(body), name
                assert response.headers["Content-Length"] == str(len(body))
                assert response.headers["Accept-Ranges"] == "bytes"
                assert response.headers["ETag"].startswith('"')
                assert "Last-Modified" in response.headers
                expected = "HIT" if len(body) == 0 else expected_cache
                assert response.headers["X-Cache"].startswith(expected), name


RANGES = [
    # (header, size name, expected slice or status)
    ("bytes=0-0", "small", slice(0, 1)),
    ("bytes=10-99", "small", slice(10, 100)),
    ("bytes=500-", "small", slice(500, 1000)),
    ("bytes=-100", "small", slice(900, 1000)),
    ("bytes=-5000", "small", slice(0, 1000)),  # suffix longer than the object: whole object, 206
    ("bytes=900-5000", "small", slice(900, 1000)),  # end past the size is clamped
    (f"bytes={CHUNK - 10}-{CHUNK + 9}", "two-chunks", slice(CHUNK - 10, CHUNK + 10)),  # crosses the border
    (f"bytes={CHUNK}-", "two-chunks", slice(CHUNK, 2 * CHUNK)),
    (f"bytes=-{CHUNK + 1}", "odd", slice(2 * CHUNK + 12345 - CHUNK - 1, 2 * CHUNK + 12345)),
    ("bytes=1-", "odd", slice(1, 2 * CHUNK + 12345)),
    (f"bytes={CHUNK - 1}-{CHUNK - 1}", "one-chunk", slice(CHUNK - 1, CHUNK)),
]


@pytest.mark.parametrize(("header", "name", "expected"), RANGES)
async def test_ranges_match_origin(start: StartBdn, proxy: CountingProxy, objects: dict[str, bytes],
                                   http: aiohttp.ClientSession, header: str, name: str, expected: slice) -> None:
    node = await start(s3_sources(proxy.url))
    body = objects[name]
    for _ in ("cold", "warm"):
        async with http.get(f"{node.url}/s3/models/w/{name}.bin", headers={"Range": header}) as response:
            got = await response.read()
            assert response.status == 206
            want = body[expected]
            assert got == want
            start = expected.start
            assert response.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{len(body)}"
            assert response.headers["Content-Length"] == str(len(want))


@pytest.mark.parametrize(
    ("header", "name", "status"),
    [
        ("bytes=1000-", "small", 416),
        ("bytes=5000-6000", "small", 416),
        ("bytes=-0", "small", 416),
        ("bytes=0-", "empty", 416),
        ("bytes=-10", "empty", 200),  # a suffix of an empty body: the empty body
        ("bytes=5-1", "small", 200),  # last < first: invalid, ignored
        ("bytes=abc", "small", 200),  # syntactically invalid: ignored
        ("items=0-1", "small", 200),  # another unit: ignored
        ("bytes=0-1,5-6", "small", 200),  # multi-range: answered with the whole body
        ("bytes=", "small", 200),
    ],
)
async def test_unsatisfiable_and_ignored_ranges(start: StartBdn, proxy: CountingProxy,
                                                objects: dict[str, bytes], http: aiohttp.ClientSession,
                                                header: str, name: str, status: int) -> None:
    node = await start(s3_sources(proxy.url))
    body = objects[name]
    async with http.get(f"{node.url}/s3/models/w/{name}.bin", headers={"Range": header}) as response:
        got = await response.read()
        assert response.status == status
        if status == 416:
            assert response.headers["Content-Range"] == f"bytes */{len(body)}"
        else:
            assert got == body


async def test_if_range(start: StartBdn, proxy: CountingProxy, objects: dict[str, bytes],
                        http: aiohttp.ClientSession) -> None:
    node = await start(s3_sources(proxy.url))
    url = f"{node.url}/s3/models/w/small.bin"
    async with http.head(url) as head:
        etag, last_modified = head.headers["ETag"], head.headers["Last-Modified"]
    for if_range, status in ((etag, 206), ('"other"', 200), (last_modified, 206),
                             ("Thu, 01 Jan 1970 00:00:00 GMT", 200), (f"W/{etag}", 200)):
        async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": if_range}) as response:
            got = await response.read()
            assert response.status == status, if_range
            assert got == (objects["small"][:10] if status == 206 else objects["small"])


async def test_head_sends_get_headers_without_body(start: StartBdn, proxy: CountingProxy,
                                                   objects: dict[str, bytes], http: aiohttp.ClientSession) -> None:
    node = await start(s3_sources(proxy.url))
    url = f"{node.url}/s3/models/w/odd.bin"
    async with http.head(url, headers={"Range": "bytes=10-19"}) as head:
        assert head.status == 206
        assert head.headers["Content-Length"] == "10"
        assert head.headers["Content-Range"] == f"bytes 10-19/{SIZES['odd']}"
        assert await head.read() == b""
    async with http.head(url) as head:
        assert head.status == 200
        assert head.headers["Content-Length"] == str(SIZES["odd"])
    assert proxy.gets() == [], "a HEAD never reads object bytes upstream"


async def test_conditional_requests(start: StartBdn, proxy: CountingProxy, objects: dict[str, bytes],
                                    http: aiohttp.ClientSession) -> None:
    node = await start(s3_sources(proxy.url))
    url = f"{node.url}/s3/models/w/small.bin"
    async with http.head(url) as head:
        etag = head.headers["ETag"]
    async with http.get(url, headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert await response.read() == b""
    async with http.get(url, headers={"If-Match": '"nope"'}) as response:
        assert response.status == 412
    async with http.get(url, headers={"If-Match": etag, "Range": "bytes=0-4"}) as response:
        assert response.status == 206
        assert await response.read() == objects["small"][:5]


async def test_r2_is_the_same_code_with_region_auto(start_bdn: StartBdn, proxy: CountingProxy, s3: Any,
                                                    http: aiohttp.ClientSession) -> None:
    s3.create_bucket(Bucket="r2bucket")
    body = os.urandom(2 * CHUNK + 5)
    s3.put_object(Bucket="r2bucket", Key="m/w.bin", Body=body)
    node = await start_bdn({"r2": {"type": "s3", "endpoint_url": proxy.url, "region": "auto"}})
    async with http.get(f"{node.url}/r2/r2bucket/m/w.bin", headers={"Range": f"bytes={CHUNK - 2}-"}) as response:
        assert response.status == 206
        assert await response.read() == body[CHUNK - 2:]
    assert any("/auto/s3/aws4_request" in (entry.authorization or "") for entry in proxy.log)
