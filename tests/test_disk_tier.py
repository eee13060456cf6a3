"""The disk tier: survives restarts and `kill -9` mid-fill, keeps versions apart, stays under its budget."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BdnProcess, MiB, StartBdn, bdn_config, sha256
from tests.origin import Origin
from tests.proxy import CountingProxy


def s3_sources(endpoint: str) -> dict[str, Any]:
    return {"s3": {"type": "s3", "endpoint_url": endpoint, "region": "us-east-1"}}


def chunk_files(cache_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (cache_dir / "chunks").glob("*/*")}


def index_rows(cache_dir: Path) -> dict[str, int]:
    with sqlite3.connect(cache_dir / "index.sqlite") as db:
        return dict(db.execute("SELECT name, size FROM chunks").fetchall())


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes, str]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("X-Cache", "")


async def test_restart_serves_from_disk_with_zero_upstream_requests(
        bdn_process: Callable[[dict[str, Any]], BdnProcess], proxy: CountingProxy, s3: Any, bucket: str,
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    body = os.urandom(5 * MiB + 7)
    s3.put_object(Bucket=bucket, Key="m/weights.bin", Body=body)
    config = bdn_config(tmp_path / "cache", s3_sources(proxy.url), metadata_ttl="1h")
    node = bdn_process(config).start()
    status, got, cache = await fetch(http, f"{node.url}/s3/models/m/weights.bin")
    assert (status, sha256(got), cache) == (200, sha256(body), "MISS")
    assert node.stop() == 0
    proxy.log.clear()

    node = bdn_process(config).start()
    status, got, cache = await fetch(http, f"{node.url}/s3/models/m/weights.bin")
    assert (status, sha256(got), cache) == (200, sha256(body), "HIT")
    status, got, cache = await fetch(http, f"{node.url}/s3/models/m/weights.bin", Range="bytes=1048570-2097160")
    assert (status, got) == (206, body[1048570:2097161])
    assert cache in ("HIT", "HIT-RAM")  # the first read loads chunks into RAM in the background
    assert proxy.log == [], "no upstream request of any kind while metadata_ttl has not run out"


@pytest.mark.parametrize("kill_after", [64 * 1024, 1 * MiB + 3, 5 * MiB])
async def test_kill_9_mid_fill_never_serves_a_partial_chunk(
        bdn_process: Callable[[dict[str, Any]], BdnProcess], origin: Origin, tmp_path: Path,
        http: aiohttp.ClientSession, kill_after: int) -> None:
    body = os.urandom(8 * MiB)
    origin.put("model.bin", body)
    origin.faults.bytes_per_second = 4 * MiB
    cache_dir = tmp_path / "cache"
    config = bdn_config(cache_dir, {"web": {"type": "http", "base_url": origin.url}}, fill_concurrency=2)
    node = bdn_process(config).start()
    async with http.get(f"{node.url}/web/model.bin") as response:
        await response.content.readexactly(kill_after)
        node.kill()
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError)):
            await response.read()
    await asyncio.sleep(0.5)  # let the origin notice the dropped connections
    origin.faults.bytes_per_second = None

    node = bdn_process(config).start()
    status, got, _ = await fetch(http, f"{node.url}/web/model.bin")
    assert status == 200
    assert sha256(got) == sha256(body)
    for start in (0, MiB - 5, 3 * MiB, 8 * MiB - 100):
        status, got, _ = await fetch(http, f"{node.url}/web/model.bin", Range=f"bytes={start}-{start + 99}")
        assert (status, got) == (206, body[start:start + 100])
    assert node.stop() == 0
    assert chunk_files(cache_dir) == index_rows(cache_dir), "the index and the files on disk agree"
    assert list((cache_dir / "tmp").iterdir()) == []


async def test_overwritten_object_is_served_new_after_ttl_and_never_mixed(
        start_bdn: StartBdn, proxy: CountingProxy, s3: Any, bucket: str, http: aiohttp.ClientSession) -> None:
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
    s3.put_object(Bucket=bucket, Key="v.bin", Body=old)
    node = await start_bdn(s3_sources(proxy.url), metadata_ttl="1s")
    url = f"{node.url}/s3/models/v.bin"
    status, got, _ = await fetch(http, url, Range=f"bytes=0-{MiB - 1}")  # only chunk 0 of the old version
    assert (status, got) == (206, old[:MiB])
    s3.put_object(Bucket=bucket, Key="v.bin", Body=new)

    # Within the TTL bdn still believes in the old version: chunk 0 comes from disk, chunk 1 is read
    # upstream pinned to the old ETag, which now fails: the client must see a broken body, not a mix.
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(http, url)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, got, _ = await fetch(http, url)
        if got == new:
            break
        assert got == old
        await asyncio.sleep(0.3)
    assert (status, got) == (200, new)
    assert all(entry.range is None or entry.range.startswith("bytes=") for entry in proxy.log)


async def within_budget(cache_dir: Path, budget: int) -> None:
    """Chunk files add up to at most `budget` once the last commit (and its eviction) is through."""
    deadline = time.monotonic() + 10
    while sum(chunk_files(cache_dir).values()) > budget:
        assert time.monotonic() < deadline, "disk tier over budget"
        await asyncio.sleep(0.02)


async def test_eviction_keeps_the_disk_tier_under_budget(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                         http: aiohttp.ClientSession) -> None:
    bodies = {f"o{i}.bin": os.urandom(MiB) for i in range(10)}
    for path, body in bodies.items():
        origin.put(path, body)
    cache_dir = tmp_path / "cache"
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=cache_dir,
                           disk_bytes="4MiB", ram_bytes=0)
    for path, body in bodies.items():
        status, got, _ = await fetch(http, f"{node.url}/web/{path}")
        assert (status, got) == (200, body)
        await within_budget(cache_dir, 4 * MiB)
    status, got, cache = await fetch(http, f"{node.url}/web/o9.bin")
    assert (status, got, cache) == (200, bodies["o9.bin"], "HIT")
    status, got, cache = await fetch(http, f"{node.url}/web/o0.bin")
    assert (status, got, cache) == (200, bodies["o0.bin"], "MISS")
    assert len(origin.gets("o0.bin")) == 2
