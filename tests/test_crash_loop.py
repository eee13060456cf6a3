"""`kill -9` at random points of fills, 20 times: every read is the origin's bytes; at start, index and files agree."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bdn.objects import ObjectInfo, ObjectRef, chunk_name, version_id
from tests.conftest import BdnProcess, MiB, bdn_config
from tests.origin import Origin

KiB = 1 << 10
CHUNK = 256 * KiB
SIZE = 12 * MiB + 4321  # 49 chunks, the last one short
ROUNDS = 20
SEED = 84
MAX_KILL_DELAY = 0.5  # seconds after the reads start: before, during and after the first commits
ORIGIN_RATE = 1 * MiB  # bytes per second per upstream response: one chunk takes about 250 ms
READY_TIMEOUT = 15.0
READS_TIMEOUT = 20.0
PATH = "model.bin"

StartProcess = Callable[[dict[str, Any]], BdnProcess]


@dataclass
class Read:
    """One client GET: what it asked for and what came back before it ended or was cut."""

    start: int
    end: int  # exclusive
    ranged: bool
    status: int = 0
    body: bytes = b""
    error: BaseException | None = None


def make_body() -> bytes:
    return random.Random(SEED).randbytes(SIZE)


def object_version(origin: Origin) -> str:
    return version_id(ObjectRef("web", PATH), ObjectInfo(size=SIZE, etag=origin.etag(PATH)))


def config_for(cache_dir: Path, origin: Origin) -> dict[str, Any]:
    return bdn_config(cache_dir, {"web": {"type": "http", "base_url": origin.url}}, chunk_bytes=f"{CHUNK}",
                      fill_concurrency=4, metadata_ttl="1h")


def index_rows(cache_dir: Path) -> dict[str, int]:
    """The `chunks` table, read-only (the index is in WAL mode: committed rows may still sit in the WAL)."""
    db = sqlite3.connect(f"file:{cache_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT name, size FROM chunks").fetchall())
    finally:
        db.close()


def chunk_files(cache_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in (cache_dir / "chunks").glob("*/*")}


def chunk_file(cache_dir: Path, name: str) -> Path:
    return cache_dir / "chunks" / name[:2] / name


def expected_chunks(version: str, body: bytes) -> dict[str, bytes]:
    return {chunk_name(version, index): body[index * CHUNK:(index + 1) * CHUNK]
            for index in range(-(-SIZE // CHUNK))}


def assert_rows_are_whole_chunks(cache_dir: Path, chunks: dict[str, bytes], where: str) -> dict[str, int]:
    """Every indexed chunk is a chunk of the object, and its file holds exactly that chunk's bytes."""
    rows = index_rows(cache_dir)
    for name, size in rows.items():
        assert name in chunks, f"{where}: index row {name} is not a chunk of the object"
        assert size == len(chunks[name]), f"{where}: index row {name}: size {size}, chunk has {len(chunks[name])}"
        path = chunk_file(cache_dir, name)
        assert path.exists(), f"{where}: index row {name} has no file"
        assert path.read_bytes() == chunks[name], f"{where}: chunk file {name} does not hold the origin's bytes"
    return rows


def assert_consistent_after_start(cache_dir: Path, chunks: dict[str, bytes], where: str) -> dict[str, int]:
    """After start: rows and files are the same set with the same sizes, all correct, and `tmp/` is empty."""
    rows = assert_rows_are_whole_chunks(cache_dir, chunks, where)
    files = chunk_files(cache_dir)
    assert sorted(set(files) - set(rows)) == [], f"{where}: orphan chunk files survived start-up"
    assert sorted(set(rows) - set(files)) == [], f"{where}: dangling index rows survived start-up"
    assert rows == files, f"{where}: index sizes and file sizes disagree after start-up"
    assert list((cache_dir / "tmp").iterdir()) == [], f"{where}: tmp/ not emptied at start-up"
    return rows


async def wait_ready(http: aiohttp.ClientSession, node: BdnProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            async with http.get(f"{node.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        except (TimeoutError, aiohttp.ClientError):
            pass
        assert time.monotonic() < deadline, f"bdn not ready within {READY_TIMEOUT}s"
        await asyncio.sleep(0.05)


async def run_read(http: aiohttp.ClientSession, url: str, read: Read) -> Read:
    headers = {"Range": f"bytes={read.start}-{read.end - 1}"} if read.ranged else {}
    try:
        async with http.get(url, headers=headers) as response:
            read.status = response.status
            async for piece in response.content.iter_any():
                read.body += piece
    except (aiohttp.ClientError, ConnectionError) as exc:
        read.error = exc
    return read


def assert_read(read: Read, body: bytes, cut_allowed: bool) -> None:
    """A finished read is exactly the bytes asked for; a read cut by the kill got a prefix of them."""
    want = body[read.start:read.end]
    what = f"GET {read.start}-{read.end - 1} (ranged={read.ranged})"
    assert read.body == want[:len(read.body)], f"{what}: wrong bytes at some offset below {len(read.body)}"
    if read.error is not None and cut_allowed:
        return
    assert read.error is None, f"{what}: {read.error!r}"
    assert read.status == (206 if read.ranged else 200), f"{what}: status {read.status}"
    assert len(read.body) == len(want), f"{what}: {len(read.body)} bytes of {len(want)}"


def plan_reads(rng: random.Random) -> list[Read]:
    """One to three reads: the whole object and/or ranges of up to 2 MiB anywhere in it."""
    reads = []
    if rng.random() < 0.4:
        reads.append(Read(0, SIZE, ranged=False))
    for _ in range(rng.randint(0 if reads else 1, 2)):
        start = rng.randrange(SIZE)
        reads.append(Read(start, min(SIZE, start + rng.randint(1, 2 * MiB)), ranged=True))
    return reads


def upstream_bytes(origin: Origin) -> int:
    """Bytes the origin was asked for by the GETs in its log (a Range's end is clamped to the size)."""
    total = 0
    for entry in origin.gets(PATH):
        if entry.range is None:
            total += SIZE
            continue
        first, last = (int(part) for part in entry.range.removeprefix("bytes=").split("-"))
        total += min(last + 1, SIZE) - first
    return total


async def test_twenty_kill_9_restarts_mid_fill(bdn_process: StartProcess, origin: Origin, tmp_path: Path,
                                               http: aiohttp.ClientSession) -> None:
    body = make_body()
    origin.put(PATH, body)
    origin.faults.bytes_per_second = ORIGIN_RATE
    cache_dir = tmp_path / "cache"
    config = config_for(cache_dir, origin)
    chunks = expected_chunks(object_version(origin), body)
    rng = random.Random(SEED)
    for round_ in range(ROUNDS):
        node = bdn_process(config).start()
        await wait_ready(http, node)
        assert_consistent_after_start(cache_dir, chunks, f"start {round_}")
        url = f"{node.url}/web/{PATH}"
        reads = [asyncio.ensure_future(run_read(http, url, read)) for read in plan_reads(rng)]
        await asyncio.sleep(rng.uniform(0, MAX_KILL_DELAY))
        node.kill()
        done = await asyncio.wait_for(asyncio.gather(*reads), READS_TIMEOUT)
        for read in done:
            assert_read(read, body, cut_allowed=True)
        assert_rows_are_whole_chunks(cache_dir, chunks, f"after kill {round_}")  # orphans and tmp/ may remain

    origin.faults.bytes_per_second = None
    node = bdn_process(config).start()
    await wait_ready(http, node)
    cached = assert_consistent_after_start(cache_dir, chunks, "final start")
    missing = sum(len(data) for name, data in chunks.items() if name not in cached)
    origin.log.clear()
    read = await asyncio.wait_for(run_read(http, f"{node.url}/web/{PATH}", Read(0, SIZE, ranged=False)),
                                  READS_TIMEOUT)
    assert_read(read, body, cut_allowed=False)
    assert cached, "no chunk survived twenty crashes: the cache made no progress"
    assert upstream_bytes(origin) <= missing + CHUNK, "the final read refetched chunks that were on disk"
    assert node.stop() == 0
    assert chunk_files(cache_dir) == index_rows(cache_dir)


async def test_start_drops_orphans_dangling_rows_and_wrong_sizes(
        bdn_process: StartProcess, origin: Origin, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    body = make_body()
    origin.put(PATH, body)
    cache_dir = tmp_path / "cache"
    config = config_for(cache_dir, origin)
    version = object_version(origin)
    chunks = expected_chunks(version, body)
    node = bdn_process(config).start()
    read = await asyncio.wait_for(run_read(http, f"{node.url}/web/{PATH}", Read(0, SIZE, ranged=False)),
                                  READS_TIMEOUT)
    assert_read(read, body, cut_allowed=False)
    assert node.stop() == 0
    assert set(index_rows(cache_dir)) == set(chunks)

    stranger = "ab" + "0" * 62 + ".0"  # a chunk of no object bdn knows, never indexed
    chunk_file(cache_dir, stranger).parent.mkdir(exist_ok=True)
    chunk_file(cache_dir, stranger).write_bytes(os.urandom(CHUNK))
    unindexed, fileless, short = (chunk_name(version, index) for index in (3, 5, 7))
    with sqlite3.connect(cache_dir / "index.sqlite") as db:
        db.execute("DELETE FROM chunks WHERE name = ?", (unindexed,))
    chunk_file(cache_dir, fileless).unlink()
    os.truncate(chunk_file(cache_dir, short), CHUNK // 2)
    (cache_dir / "tmp" / "leftover").write_bytes(b"half a chunk")

    node = bdn_process(config).start()
    await wait_ready(http, node)
    rows = assert_consistent_after_start(cache_dir, chunks, "start after planting")
    assert not chunk_file(cache_dir, stranger).exists()
    assert not chunk_file(cache_dir, unindexed).exists()
    assert not chunk_file(cache_dir, short).exists()
    assert set(chunks) - set(rows) == {unindexed, fileless, short}

    origin.log.clear()
    read = await asyncio.wait_for(run_read(http, f"{node.url}/web/{PATH}", Read(0, SIZE, ranged=False)),
                                  READS_TIMEOUT)
    assert_read(read, body, cut_allowed=False)
    for start in (3 * CHUNK - 10, 5 * CHUNK + 1, 7 * CHUNK + CHUNK // 2):
        read = await run_read(http, f"{node.url}/web/{PATH}", Read(start, start + 100, ranged=True))
        assert_read(read, body, cut_allowed=False)
    refetched = sorted(entry.range or "" for entry in origin.gets(PATH))
    assert refetched == sorted(f"bytes={i * CHUNK}-{(i + 1) * CHUNK - 1}" for i in (3, 5, 7))
    assert node.stop() == 0
    assert chunk_files(cache_dir) == index_rows(cache_dir)
