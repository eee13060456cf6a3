"""The RAM tier: filled by fills and by disk reads, serves without the disk, stays within `ram_bytes`
(loads in flight included)."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

from bdn.cache.ram import RamTier
from bdn.state import CACHE_KEY
from tests.conftest import MiB, StartBdn
from tests.origin import Origin
from tests.test_slow_clients import open_get


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, bytes, str]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("X-Cache", "")


async def ram_holds(ram: RamTier, size: int) -> None:
    """Wait until `size` bytes are stored in the tier: loads still reading count in used_bytes but serve nothing."""
    deadline = time.monotonic() + 10
    while ram.used_bytes - ram._reserved < size:
        assert time.monotonic() < deadline, "chunks did not reach the RAM tier"
        await asyncio.sleep(0.02)


async def test_hot_chunks_are_served_from_ram_without_the_disk(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                                http: aiohttp.ClientSession) -> None:
    body = os.urandom(2 * MiB + 99)
    origin.put("m.bin", body)
    cache_dir = tmp_path / "cache"
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=cache_dir, ram_bytes="16MiB")
    url = f"{node.url}/web/m.bin"
    assert await fetch(http, url) == (200, body, "MISS")
    await ram_holds(node.app[CACHE_KEY].ram, len(body))  # fills commit just after their last byte went out
    for chunk in (cache_dir / "chunks").glob("*/*"):
        chunk.unlink()  # from here on, only RAM can answer
    assert await fetch(http, url) == (200, body, "HIT-RAM")
    assert await fetch(http, url, Range=f"bytes={MiB - 3}-{MiB + 2}") == (206, body[MiB - 3:MiB + 3], "HIT-RAM")
    assert await fetch(http, url, Range="bytes=-10") == (206, body[-10:], "HIT-RAM")
    assert len(origin.gets("m.bin")) == 3, "one upstream read per chunk, ever"


async def test_disk_reads_fill_ram(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                   http: aiohttp.ClientSession) -> None:
    body = os.urandom(3 * MiB)
    origin.put("d.bin", body)
    cache_dir = tmp_path / "cache"
    sources = {"web": {"type": "http", "base_url": origin.url}}
    first = await start_bdn(sources, cache_dir=cache_dir, ram_bytes="16MiB")
    assert await fetch(http, f"{first.url}/web/d.bin") == (200, body, "MISS")
    await first.stop()
    node = await start_bdn(sources, cache_dir=cache_dir, ram_bytes="16MiB")  # a restart: RAM is empty
    assert await fetch(http, f"{node.url}/web/d.bin") == (200, body, "HIT")
    await ram_holds(node.app[CACHE_KEY].ram, len(body))
    assert await fetch(http, f"{node.url}/web/d.bin") == (200, body, "HIT-RAM")


async def test_ram_tier_stays_within_its_budget(start_bdn: StartBdn, origin: Origin,
                                                http: aiohttp.ClientSession) -> None:
    bodies = {f"o{i}.bin": os.urandom(MiB) for i in range(10)}
    for path, body in bodies.items():
        origin.put(path, body)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, ram_bytes="4MiB")
    ram = node.app[CACHE_KEY].ram
    for path, body in bodies.items():
        assert (await fetch(http, f"{node.url}/web/{path}"))[:2] == (200, body)
        assert ram.used_bytes <= 4 * MiB
    deadline = time.monotonic() + 10
    while (await fetch(http, f"{node.url}/web/o9.bin"))[2] != "HIT-RAM":  # its fill commits after the last byte
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert ram.evictions == 6 and ram.used_bytes == 4 * MiB
    assert (await fetch(http, f"{node.url}/web/o0.bin"))[2] == "HIT"  # still on disk, no longer in RAM


async def landed(ram: RamTier) -> None:
    """Wait for the tier's loads in flight to land (their reads run in its executor)."""
    deadline = time.monotonic() + 10
    while ram._reserved:
        assert time.monotonic() < deadline, "loads did not land"
        await asyncio.sleep(0.01)


async def test_loads_in_flight_count_against_the_budget(tmp_path: Path) -> None:
    chunk = tmp_path / "chunk"
    chunk.write_bytes(os.urandom(MiB))
    with ThreadPoolExecutor(2) as io:
        ram = RamTier(4 * MiB, io)
        fd = os.open(chunk, os.O_RDONLY)
        try:
            for index in range(6):  # all started before any lands: six reservations asked for, four fit
                ram.load(f"c{index}", fd, MiB)
                assert ram.used_bytes <= 4 * MiB
        finally:
            os.close(fd)  # the tier reads from its own duplicate
        await landed(ram)
        assert [ram.has(f"c{index}") for index in range(6)] == [True] * 4 + [False] * 2
        assert ram.used_bytes == 4 * MiB and ram.evictions == 0
        loaded = ram.get("c0")
        assert loaded is not None and loaded[:] == chunk.read_bytes()


async def test_a_discarded_load_never_lands(tmp_path: Path) -> None:
    chunk = tmp_path / "chunk"
    chunk.write_bytes(os.urandom(MiB))
    with ThreadPoolExecutor(1) as io:
        ram = RamTier(8 * MiB, io)
        fd = os.open(chunk, os.O_RDONLY)
        ram.load("bad", fd, MiB)
        ram.load("short", fd, MiB + 1)  # the file holds fewer bytes than the chunk should: never stored
        os.close(fd)
        ram.discard(["bad"])  # as a failed digest check does while the chunk is still loading
        assert ram.used_bytes == MiB + 1
        await landed(ram)
        assert not ram.has("bad") and not ram.has("short") and ram.used_bytes == 0


async def test_a_reader_stalled_on_a_ram_chunk_does_not_keep_it(start_bdn: StartBdn, origin: Origin, tmp_path: Path,
                                                                http: aiohttp.ClientSession) -> None:
    """A response sending from a RAM chunk holds none of it while it waits: the tier's eviction frees it."""
    chunk = 16 * MiB  # more than loopback's socket buffers take (~3 MiB), so the reader stalls bdn mid-part
    bodies = {f"r{i}.bin": os.urandom(chunk) for i in range(6)}
    for path, body in bodies.items():
        origin.put(path, body)
    cache_dir = tmp_path / "cache"
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, cache_dir=cache_dir,
                           chunk_bytes="16MiB", ram_bytes="64MiB", disk_bytes="16MiB")
    ram = node.app[CACHE_KEY].ram
    for path in ("r0.bin", "r1.bin"):  # the disk holds one chunk: r1 evicts r0 there, RAM keeps both
        assert (await fetch(http, f"{node.url}/web/{path}"))[:2] == (200, bodies[path])
    await ram_holds(ram, 2 * chunk)
    assert len(list((cache_dir / "chunks").glob("*/*"))) == 1, "r0 is in RAM only"
    reader, writer = await open_get(node.runner.addresses[0][1], "/web/r0.bin")  # a small buffer, not read
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"X-Cache: HIT-RAM" in head
        await asyncio.sleep(0.5)  # bdn fills the socket buffers and waits on this reader
        for path in ("r2.bin", "r3.bin", "r4.bin", "r5.bin"):  # the tier holds four: r1, then r0, leave it
            assert (await fetch(http, f"{node.url}/web/{path}"))[:2] == (200, bodies[path])
        deadline = time.monotonic() + 10
        while ram.evictions < 2:  # r5's fill commits just after its last byte went out, then loads
            assert time.monotonic() < deadline, "r0 did not leave RAM"
            await asyncio.sleep(0.02)
        await landed(ram)
        assert ram.used_bytes == 4 * chunk
        gets = len(origin.gets("r0.bin"))
        body = await reader.readexactly(chunk)
    finally:
        writer.close()
    assert body == bodies["r0.bin"]
    assert len(origin.gets("r0.bin")) == gets + 1, "the rest came from a new fill, not from memory the tier let go"
