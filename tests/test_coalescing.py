"""Single flight: many cold readers of one object cause one upstream read per chunk, and only the chunks needed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from tests.conftest import MiB, StartBdn, chunk_of, sha256
from tests.origin import Origin
from tests.proxy import CountingProxy

SIZE = 64 * MiB
CHUNK = 4 * MiB


def s3_sources(endpoint: str) -> dict[str, Any]:
    return {"s3": {"type": "s3", "endpoint_url": endpoint, "region": "us-east-1"}}


async def test_32_concurrent_cold_gets_fetch_each_chunk_once(start_bdn: StartBdn, proxy: CountingProxy, s3: Any,
                                                             bucket: str, http: aiohttp.ClientSession) -> None:
    body = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
    node = await start_bdn(s3_sources(proxy.url), chunk_bytes="4MiB")

    async def read() -> tuple[int, str, str]:
        async with http.get(f"{node.url}/s3/models/big.bin") as response:
            return response.status, sha256(await response.read()), response.headers["X-Cache"]

    results = await asyncio.gather(*(read() for _ in range(32)))
    assert all(status == 200 for status, _, _ in results)
    assert {digest for _, digest, _ in results} == {sha256(body)}
    ranges = [entry.range for entry in proxy.gets("/big.bin")]
    expected = [f"bytes={i}-{min(i + CHUNK, SIZE) - 1}" for i in range(0, SIZE, CHUNK)]
    assert sorted(ranges, key=str) == sorted(expected, key=str), "each chunk exactly once"
    assert len(proxy.heads("/big.bin")) == 1, "one metadata request for all 32 readers"


async def test_cold_range_fetches_only_covering_chunks(start_bdn: StartBdn, proxy: CountingProxy, s3: Any,
                                                       bucket: str, http: aiohttp.ClientSession) -> None:
    body = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
    node = await start_bdn(s3_sources(proxy.url), chunk_bytes="4MiB")
    start, end = 10 * MiB, 13 * MiB  # covers chunks 2 and 3 (8-12 MiB, 12-16 MiB)
    async with http.get(f"{node.url}/s3/models/big.bin", headers={"Range": f"bytes={start}-{end - 1}"}) as response:
        assert response.status == 206
        assert await response.read() == body[start:end]
    assert sorted(e.range or "" for e in proxy.gets("/big.bin")) == sorted([
        f"bytes={8 * MiB}-{12 * MiB - 1}", f"bytes={12 * MiB}-{16 * MiB - 1}"])
    async with http.get(f"{node.url}/s3/models/big.bin", headers={"Range": f"bytes={start}-{end - 1}"}) as response:
        assert await response.read() == body[start:end]
        assert response.headers["X-Cache"].startswith("HIT")
    assert len(proxy.gets("/big.bin")) == 2, "the second read is served from disk"


async def test_client_disconnect_does_not_cancel_a_shared_fill(start_bdn: StartBdn, origin: Origin,
                                                               http: aiohttp.ClientSession) -> None:
    body = os.urandom(4 * MiB)
    origin.put("slow.bin", body)
    origin.faults.bytes_per_second = 8 * MiB
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, chunk_bytes="4MiB")
    url = f"{node.url}/web/slow.bin"

    async def leaver() -> None:
        async with http.get(url) as response:
            await response.content.readexactly(65536)
        # leaving the block closes the connection mid-body

    staying = asyncio.ensure_future(http.get(url))
    await leaver()
    async with await staying as response:
        assert response.status == 200
        assert await response.read() == body
    assert len(origin.gets("slow.bin")) == 1


async def test_first_byte_arrives_before_the_chunk_is_complete(start_bdn: StartBdn, origin: Origin,
                                                               http: aiohttp.ClientSession) -> None:
    body = os.urandom(4 * MiB)
    origin.put("stream.bin", body)
    origin.faults.bytes_per_second = 2 * MiB  # the chunk takes about 2 s to arrive
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, chunk_bytes="4MiB")
    async with http.get(f"{node.url}/web/stream.bin") as response:
        first = await response.content.readexactly(65536)
        assert origin.completed == 0, "bytes reached the client while the upstream was still sending"
        rest = await response.read()
    assert first + rest == body


async def test_cold_miss_reads_its_first_chunk_alongside_the_metadata(start_bdn: StartBdn, origin: Origin,
                                                                      http: aiohttp.ClientSession) -> None:
    body = os.urandom(3 * MiB)
    origin.put("spec.bin", body)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, chunk_bytes="1MiB")
    async with http.get(f"{node.url}/web/spec.bin", headers={"Range": f"bytes={MiB + 5}-"}) as response:
        assert response.status == 206
        assert await response.read() == body[MiB + 5:]
    reads = [(entry.range, entry.if_match) for entry in origin.gets("spec.bin")]
    assert reads[0] == (f"bytes={MiB}-{2 * MiB - 1}", None), "the speculative read, sent with the HEAD"
    assert sorted(r for r, _ in reads) == [f"bytes={MiB}-{2 * MiB - 1}", f"bytes={2 * MiB}-{3 * MiB - 1}"]


async def test_speculative_read_of_another_version_is_dropped(start_bdn: StartBdn, origin: Origin,
                                                             http: aiohttp.ClientSession) -> None:
    body = os.urandom(2 * MiB)
    origin.put("moved.bin", body)
    origin.faults.unpinned_etag = '"some-other-version"'  # as if the object changed between GET and HEAD
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, chunk_bytes="1MiB")
    async with http.get(f"{node.url}/web/moved.bin") as response:
        assert response.status == 200
        assert await response.read() == body
    first_chunk = [entry.if_match for entry in origin.gets("moved.bin") if entry.range == f"bytes=0-{MiB - 1}"]
    assert first_chunk == [None, origin.etag("moved.bin")], "dropped, then read again pinned to the version"


async def test_cold_whole_read_fills_chunks_in_parallel(start_bdn: StartBdn, origin: Origin,
                                                        http: aiohttp.ClientSession) -> None:
    body = os.urandom(8 * MiB)
    origin.put("par.bin", body)
    origin.faults.bytes_per_second = 4 * MiB  # each chunk read takes ~0.25 s: reads overlap or crawl
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, chunk_bytes="1MiB",
                           fill_concurrency=4)
    async with http.get(f"{node.url}/web/par.bin") as response:
        assert await response.read() == body
    assert 3 <= origin.max_in_flight <= 4, "up to fill_concurrency chunk reads at once"
    assert sorted(chunk_of(e.range, len(body), MiB) for e in origin.gets("par.bin")) == list(range(8))
