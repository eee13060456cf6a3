"""A full cache disk (a small tmpfs): bytes served right, uncached, /readyz and /metrics say so, then it recovers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

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
