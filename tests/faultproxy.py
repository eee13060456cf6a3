"""A small fault-injecting TCP proxy for tests: pass bytes through, or cut, stall, reset or refuse answers.

It sits between bdn and an upstream (or a peer). A fault applies to the next `faults`
connections that reach it (all of them when None), after which bytes pass through untouched:
- `truncate`, `stall`, `reset`: after `after` bytes of answer, close cleanly, stop forwarding
  (holding the connection open until the client gives up), or close with a TCP RST;
- `status`: answer the connection's first request with `status` (and `retry_after`) and close;
- `garbage`: answer random bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "truncate", "stall", "reset", "status", "garbage"]
STALL_LIMIT = 60.0  # seconds a stalled connection is held at most


@dataclass
class FaultProxy:
    target_port: int
    mode: Mode = "pass"
    after: int = 100_000  # answer bytes passed on before a truncate, stall or reset
    faults: int | None = None  # connections still to fault; None: every connection
    status: int = 503
    retry_after: str | None = None
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
            if self.mode in ("status", "garbage") and self._take_fault():
                await self._refuse(client_reader, client_writer)
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            forward = asyncio.ensure_future(self._pipe(client_reader, upstream_writer, None))
            self._tasks.add(forward)
            forward.add_done_callback(self._tasks.discard)
            limit = self.after if self.mode in ("truncate", "stall", "reset") else None
            await self._pipe(upstream_reader, client_writer, limit)
            if limit is not None and not upstream_reader.at_eof() and self._take_fault():
                await self._fault(forward, client_writer)
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
            head = await reader.readuntil(b"\r\n\r\n")
            extra = f"Retry-After: {self.retry_after}\r\n" if self.retry_after is not None else ""
            body = b"" if head.startswith(b"HEAD ") else b"fault"
            writer.write(f"HTTP/1.1 {self.status} Fault\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                         f"Connection: close\r\n{extra}\r\n".encode() + body)
        await writer.drain()

    async def _fault(self, forward: asyncio.Future[None], writer: asyncio.StreamWriter) -> None:
        if self.mode == "stall":  # hold on until the client closes (its requests end `forward`)
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                await asyncio.wait_for(asyncio.shield(forward), STALL_LIMIT)
        elif self.mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

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
