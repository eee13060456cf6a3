"""Slow, stalled and idle clients never slow a shared fill or grow bdn's memory, and are cut in bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import BdnProcess, MiB, StartBdn, bdn_config, sha256
from tests.origin import Origin

KiB = 1 << 10


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KiB
    raise AssertionError("no VmRSS")


async def open_get(port: int, path: str, receive_buffer: int = 4 * KiB) -> tuple[asyncio.StreamReader,
                                                                                asyncio.StreamWriter]:
    """A raw GET on a socket with a small receive buffer, so a reader that does not read holds bdn up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=KiB)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bdn\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def bytes_until_closed(reader: asyncio.StreamReader, seconds: float) -> int | None:
    """Bytes read until the server closes the connection, or None if it is still open after `seconds`."""
    received = 0
    try:
        async with asyncio.timeout(seconds):
            while piece := await reader.read(64 * KiB):
                received += len(piece)
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return received


async def test_slow_readers_neither_slow_the_shared_fill_nor_grow_memory(
        bdn_process: Callable[[dict[str, Any]], BdnProcess], origin: Origin, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    size = 64 * MiB
    data = os.urandom(size)
    origin.put("big.bin", data)
    cache_dir = tmp_path / "cache"
    node = bdn_process(bdn_config(cache_dir, {"web": {"type": "http", "base_url": origin.url}}, ram_bytes=0)).start()
    assert node.proc is not None
    async with http.get(f"{node.url}/healthz") as response:
        assert response.status == 200
    baseline = rss_bytes(node.proc.pid)
    slow = [await open_get(node.port, "/web/big.bin") for _ in range(3)]
    received = [0] * len(slow)
    async with http.get(f"{node.url}/web/big.bin") as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data), "the fast reader got every byte"
    for _ in range(3):  # the slow readers read 1 KiB a second while bdn holds their responses
        for index, (reader, _) in enumerate(slow):
            received[index] += len(await reader.read(KiB))
        await asyncio.sleep(1)
    chunks = [p for p in (cache_dir / "chunks").rglob("*") if p.is_file()]
    assert len(chunks) == size // MiB, "the whole object was filled while the slow readers were still reading"
    assert len(origin.gets("big.bin")) == size // MiB, "each chunk was read upstream once"
    assert all(count < MiB for count in received)
    growth = rss_bytes(node.proc.pid) - baseline
    assert growth < 24 * MiB, f"bdn grew by {growth / MiB:.1f} MiB with three stuck 64 MiB responses"
    for _, writer in slow:
        writer.close()


async def test_a_stalled_reader_is_cut_after_the_send_timeout(start_bdn: StartBdn, origin: Origin,
                                                              http: aiohttp.ClientSession) -> None:
    data = os.urandom(8 * MiB)
    origin.put("s.bin", data)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, downstream={"send_timeout": "1s"})
    reader, writer = await open_get(port_of(node.url), "/web/s.bin")
    await asyncio.sleep(2.5)  # reads nothing for longer than send_timeout
    received = await bytes_until_closed(reader, 5)
    writer.close()
    assert received is not None, "bdn closed the stalled connection"
    assert received < len(data), "the stalled response was cut short"
    async with http.get(f"{node.url}/web/s.bin") as response:
        assert sha256(await response.read()) == sha256(data), "others are served as before"


async def test_idle_and_slow_header_connections_time_out(start_bdn: StartBdn, origin: Origin) -> None:
    origin.put("i.bin", b"idle")
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, downstream={"idle_timeout": "1s"})
    port = port_of(node.url)
    silent = await asyncio.open_connection("127.0.0.1", port)
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(b"GET /web/i.bin HTTP/1.1\r\nHost: bdn\r\n")  # headers never finished
    kept = await asyncio.open_connection("127.0.0.1", port)
    kept[1].write(b"GET /web/i.bin HTTP/1.1\r\nHost: bdn\r\n\r\n")  # answered, then idle on keep-alive
    trickle = await asyncio.open_connection("127.0.0.1", port)
    trickle[1].write(b"GET /web/i.bin HTTP/1.1\r\n")
    for _ in range(4):  # a header line every half second: never a complete request
        await asyncio.sleep(0.5)
        if trickle[1].transport.is_closing() or trickle[0].at_eof():
            break
        with contextlib.suppress(RuntimeError, ConnectionError):  # closed by bdn meanwhile
            trickle[1].write(b"X-Slow: 1\r\n")
    results = await asyncio.gather(*(bytes_until_closed(reader, 5) for reader, _ in (silent, partial, kept, trickle)))
    for _, writer in (silent, partial, kept, trickle):
        writer.close()
    assert results[0] == 0 and results[1] == 0 and results[3] == 0, results
    assert results[2] is not None and results[2] > 0, "the kept-alive connection got its answer, then was closed"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
