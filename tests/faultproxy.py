"""A small fault-injecting TCP proxy for tests: pass bytes through, or cut, stall, reset or refuse answers.

It sits between bdn and an upstream (or a peer). A fault applies to the next `faults`
connections that reach it (all of them when None), after which bytes pass through untouched:
- `truncate`, `stall`, `reset`, `trickle`: after `after` bytes of answer, close cleanly, stop
  forwarding (holding the connection open until the client gives up), close with a TCP RST, or
  forward one byte every `TRICKLE_GAP` seconds (never long enough apart for a read timeout);
- `status`: answer the connection's first request with `status` (and `retry_after`) and close;
- `garbage`: answer random bytes.

Connections are kept alive and reused, so a fault aimed at one request rather than one
connection needs the proxy to read the requests: with `range_start` set, `status` answers only
the requests whose Range begins at that byte (each counting as one of `faults`) and passes
every other request through; `on_request`, when set, is awaited with each request head before
it is forwarded (or faulted), e.g. to change the object upstream just before a given read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "truncate", "stall", "reset", "status", "garbage", "trickle"]
STALL_LIMIT = 60.0  # seconds a stalled (or trickling) connection is held at most
TRICKLE_GAP = 0.5  # seconds between the bytes of a trickle


@dataclass(frozen=True)
class Request:
    """A request head as it passed through the proxy."""

    method: str
    target: str
    headers: dict[str, str]  # names lower-cased

    @staticmethod
    def parse(head: bytes) -> Request:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return Request(method, target, headers)

    @property
    def range_start(self) -> int | None:
        """The first byte a `Range: bytes=N-...` header asks for."""
        value = self.headers.get("range", "")
        if not value.startswith("bytes="):
            return None
        first = value[len("bytes="):].split("-", 1)[0]
        return int(first) if first.isdigit() else None


@dataclass
class FaultProxy:
    target_port: int
    mode: Mode = "pass"
    after: int = 100_000  # answer bytes passed on before a truncate, stall or reset
    faults: int | None = None  # connections still to fault; None: every connection
    status: int = 503
    retry_after: str | None = None
    range_start: int | None = None  # `status` faults only requests whose Range begins at this byte
    on_request: Callable[[Request], Awaitable[None]] | None = None  # awaited with each request head
    port: int = 0
    connections: int = 0
    faulted: int = 0  # faults injected so far
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def _take_fault(self) -> bool:
        if self.mode == "pass" or self.faults == 0:
            return False
        if self.faults is not None:
            self.faults -= 1
        self.faulted += 1
        return True

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.mode in ("status", "garbage") and self.range_start is None and self._take_fault():
                await self._refuse(client_reader, client_writer)
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            if self.range_start is None and self.on_request is None:
                forward = asyncio.ensure_future(self._pipe(client_reader, upstream_writer, None))
            else:
                forward = asyncio.ensure_future(self._requests(client_reader, upstream_writer, client_writer))
            self._tasks.add(forward)
            forward.add_done_callback(self._tasks.discard)
            limit = self.after if self.mode in ("truncate", "stall", "reset", "trickle") else None
            await self._pipe(upstream_reader, client_writer, limit)
            if limit is not None and not upstream_reader.at_eof() and self._take_fault():
                await self._fault(forward, client_writer, upstream_reader)
            else:
                await self._pipe(upstream_reader, client_writer, None)
            forward.cancel()
            upstream_writer.close()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # a cancelled connection (at stop) ends quietly, as asyncio's server callback expects
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                client_writer.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "garbage":
            await reader.read(65536)
            writer.write(os.urandom(4096))
        else:
            writer.write(self._status_answer(await reader.readuntil(b"\r\n\r\n")))
        await writer.drain()

    def _status_answer(self, head: bytes) -> bytes:
        extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after is not None else ""
        body = b"" if head.startswith(b"HEAD ") else b"fault"
        return (f"HTTP/1.1 {self.status} Fault\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                f"Connection: close\r\n{extra}\r\n".encode() + body)

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                        client: asyncio.StreamWriter) -> None:
        """Forward the client's requests one by one, faulting those `range_start` picks (see the docstring).

        The client sends a request only once it has read the answer before (no pipelining), so a
        fault answer written here never interleaves with an upstream answer.
        """
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection
            except asyncio.LimitOverrunError:
                raise ConnectionError("request head too long for the fault proxy") from None
            request = Request.parse(head)
            if self.on_request is not None:
                await self.on_request(request)
            picked = self.range_start is not None and request.range_start == self.range_start
            if picked and self.mode == "status" and self._take_fault():
                client.write(self._status_answer(head))
                await client.drain()
                client.close()
                upstream.close()  # ends the answer pipe too: the upstream has nothing left to send
                return
            upstream.write(head)
            await upstream.drain()
            if "chunked" in request.headers.get("transfer-encoding", "").lower():
                await self._pipe(reader, upstream, None)  # a body of unknown length: no more requests to read
                return
            await self._pipe(reader, upstream, int(request.headers.get("content-length", "0")))

    async def _fault(self, forward: asyncio.Future[None], writer: asyncio.StreamWriter,
                     upstream: asyncio.StreamReader) -> None:
        if self.mode == "trickle":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trickle(upstream, writer), STALL_LIMIT)
        elif self.mode == "stall":  # hold on until the client closes (its requests end `forward`)
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                await asyncio.wait_for(asyncio.shield(forward), STALL_LIMIT)
        elif self.mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    @staticmethod
    async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1):
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(TRICKLE_GAP)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int | None) -> None:
        passed = 0
        while limit is None or passed < limit:
            data = await reader.read(65536 if limit is None else min(65536, limit - passed))
            if not data:
                return
            writer.write(data)
            await writer.drain()
            passed += len(data)
