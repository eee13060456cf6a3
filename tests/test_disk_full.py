"""A full or failing cache disk (a small tmpfs, write errors mid-fill): bytes served right, uncached, /readyz
and /metrics say so, then it recovers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bdn.state import CACHE_KEY
from tests.conftest import Bdn, MiB, StartBdn, sha256
from tests.origin import Origin
from tests.test_upstream_faults import metric

SIZE = 3 * MiB + 100  # four 1 MiB chunks


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on this machine: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(mount: Path) -> Path:
    """Take all but 256 KiB of the filesystem's free space (less than one chunk)."""
    stats = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 256 * 1024))
    return filler


async def readiness(node: Bdn, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{node.url}/readyz") as response:
        assert response.status == 200
        status: str = (await response.json())["status"]
        return status


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("X-Cache", "")


async def test_full_disk_serves_uncached_then_recovers(start_bdn: StartBdn, origin: Origin, small_disk: Path,
                                                       http: aiohttp.ClientSession) -> None:
    data, other = os.urandom(SIZE), os.urandom(SIZE)
    origin.put("a.bin", data)
    origin.put("b.bin", other)
    cache_dir = small_disk / "cache"
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=cache_dir, ram_bytes=0,
                           disk_retry="200ms")
    filler = fill_up(small_disk)
    url = f"{node.url}/web/a.bin"

    status, body, _ = await get(http, url)
    assert status == 200 and sha256(body) == sha256(data)
    status, body, _ = await get(http, url, {"Range": "bytes=1000-2500000"})
    assert status == 206 and body == data[1000:2500001]
    readers = await asyncio.gather(*(get(http, f"{node.url}/web/b.bin") for _ in range(4)))
    assert [(status, sha256(body)) for status, body, _ in readers] == [(200, sha256(other))] * 4
    assert await readiness(node, http) == "degraded"
    assert await metric(node, http, "bdn_cache_disk_writable") == 0
    assert await metric(node, http, "bdn_cache_disk_write_errors_total") >= 1
    assert await metric(node, http, "bdn_uncached_fills_total") >= 4
    assert not list((cache_dir / "tmp").iterdir()), "uncached fills leave nothing on the disk"
    before = len(origin.gets("a.bin"))
    status, body, _ = await get(http, url)
    assert status == 200 and sha256(body) == sha256(data)
    assert len(origin.gets("a.bin")) > before, "nothing was cached while the disk was full"

    filler.unlink()
    for _ in range(50):
        if await readiness(node, http) == "ready":
            break
        await asyncio.sleep(0.1)
    assert await readiness(node, http) == "ready"
    assert await metric(node, http, "bdn_cache_disk_writable") == 1
    status, body, _ = await get(http, url)
    assert status == 200 and sha256(body) == sha256(data)
    before = len(origin.gets("a.bin"))
    status, body, cache = await get(http, url)
    assert (status, sha256(body), cache) == (200, sha256(data), "HIT")
    assert len(origin.gets("a.bin")) == before, "cached again once space came back"


async def test_a_write_error_mid_fill_finishes_the_chunk_uncached(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                                  http: aiohttp.ClientSession) -> None:
    """The disk fails under fills in flight (their temp files turn read-only): clients still get every byte."""
    data = os.urandom(4 * MiB - 1)  # four chunks, none small enough to be done before the fault
    origin.put("w.bin", data)
    origin.faults.bytes_per_second = 2 * MiB  # each 1 MiB chunk takes ~0.5 s: all four are mid-fill below
    cache_dir = tmp_path / "cache"
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=cache_dir, ram_bytes=0)
    fills = node.app[CACHE_KEY].fills
    reading = asyncio.create_task(get(http, f"{node.url}/web/w.bin"))
    deadline = asyncio.get_running_loop().time() + 10
    while fills.in_flight < 4 or not all(fill.written for fill in fills._fills.values()):
        assert asyncio.get_running_loop().time() < deadline, "the fills did not start"
        await asyncio.sleep(0.01)
    for fill in fills._fills.values():  # an I/O error from here on: every write of these fills fails
        assert fill.temp is not None
        read_only = os.open(fill.temp, os.O_RDONLY)
        os.dup2(read_only, fill._fd)
        os.close(read_only)
    status, body, cache = await reading
    assert (status, sha256(body), cache) == (200, sha256(data), "MISS")
    assert await readiness(node, http) == "degraded"
    assert await metric(node, http, "bdn_cache_disk_write_errors_total") >= 1
    assert len(origin.gets("w.bin")) == 8, "each chunk once by its broken fill, once more by an uncached one"
    assert not list((cache_dir / "chunks").rglob("*.*")) and not list((cache_dir / "tmp").iterdir())


async def test_uncached_fills_read_upstream_a_ram_budget_at_a_time(
        start_bdn: StartBdn, origin: Origin, small_disk: Path, http: aiohttp.ClientSession) -> None:
    """With the disk full, fills live in memory: only ram_bytes of them (4 chunks here) read at once, not 8."""
    data = os.urandom(12 * MiB)
    origin.put("c.bin", data)
    origin.faults.bytes_per_second = 8 * MiB  # slow enough for read-ahead to pile fills up
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=small_disk / "cache",
                           ram_bytes="4MiB")
    fill_up(small_disk)
    status, body, _ = await get(http, f"{node.url}/web/c.bin")
    assert status == 200 and sha256(body) == sha256(data)
    assert await metric(node, http, "bdn_uncached_fills_total") >= 12
    # four fills, plus the first chunk's read that went out with the metadata request, before any fill
    assert 4 <= origin.max_in_flight <= 5, origin.max_in_flight
