"""A small fault-injecting TCP proxy for tests: pass bytes through, cut answers short, or answer garbage."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "truncate", "garbage"]


@dataclass
class FaultProxy:
    target_port: int
    mode: Mode = "pass"
    truncate_after: int = 100_000  # answer bytes passed on before the cut, in "truncate" mode
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.mode == "garbage":
                await client_reader.read(65536)
                client_writer.write(os.urandom(4096))
                await client_writer.drain()
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            limit = self.truncate_after if self.mode == "truncate" else None
            forward = asyncio.ensure_future(self._pipe(client_reader, upstream_writer, None))
            self._tasks.add(forward)
            forward.add_done_callback(self._tasks.discard)
            await self._pipe(upstream_reader, client_writer, limit)
            forward.cancel()
            upstream_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                client_writer.close()

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
