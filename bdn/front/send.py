"""Send a byte range of a file to a client socket with the kernel's sendfile, under any event loop.

uvloop has no `loop.sendfile`, so aiohttp's FileResponse silently falls back to reading the
file into Python through a thread pool. bdn calls `os.sendfile` on a duplicate of the client
socket's fd instead (a duplicate, because event loops refuse `add_writer` on an fd a transport
owns), waits for writability on that duplicate when the socket buffer is full, and never
copies payload into user space. Before the first byte it makes sure the transport's own
buffer (the response headers) is flushed, so bytes go out in order.

The fallback, used when sendfile is switched off (`cache.sendfile: false`) or the socket
refuses it, reads pieces in a thread and writes them through the transport. Bytes held in
memory (the RAM tier) are written to the same duplicate socket fd straight from their buffer,
which is asked for afresh before each write, so nothing refers to it while the client lags.

Payload waits on the client are bounded: a client that accepts no byte for `send_timeout`
(a stalled reader) is cut, while a slow one that keeps taking bytes is served at its pace.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from aiohttp.abc import AbstractStreamWriter

FALLBACK_PIECE = 256 * 1024
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK}


class SendfileUnsupported(Exception):
    """The socket cannot take sendfile; use the fallback for this connection."""


class Sender:
    """Sends file ranges on one response; `sent` counts payload bytes delivered to the socket."""

    def __init__(self, transport: asyncio.Transport, writer: AbstractStreamWriter, use_sendfile: bool,
                 io: Executor, send_timeout: float) -> None:
        self._transport = transport
        self._send_timeout = send_timeout
        self._io = io
        self._writer = writer
        self._use_sendfile = use_sendfile
        self._sock_fd: int | None = None
        self.sent = 0

    async def send(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of `fd` from `offset`; raises ConnectionError if the client went away."""
        if self._use_sendfile:
            try:
                await self._sendfile(fd, offset, count)
                return
            except SendfileUnsupported:
                self._use_sendfile = False
        await self._fallback(fd, offset, count)

    async def _flush_transport(self) -> None:
        if self._transport.get_write_buffer_size() == 0:
            return
        high = self._transport.get_write_buffer_limits()[1]
        self._transport.set_write_buffer_limits(high=0, low=0)
        try:
            await self._client(self._writer.drain())
        finally:
            self._transport.set_write_buffer_limits(high=high)

    async def send_memory(self, view_of: Callable[[int, int], memoryview | None], start: int, end: int) -> int:
        """Send bytes [start, end) of a buffer straight to the socket; returns where it stopped.

        `view_of(a, b)` gives a view of bytes [a, b) afresh before each write, or None once the
        buffer is gone (then this stops there). No view is held while the client is waited on, so
        the buffer can be freed meanwhile: a RAM chunk the tier evicts is not kept alive by a slow
        client, and no byte is copied in user space.
        """
        sock_fd = await self._socket_fd()
        position = start
        while position < end:
            view = view_of(position, end)
            if view is None:
                break
            wanted = len(view)
            try:
                done = os.write(sock_fd, view)
            except BlockingIOError:
                done = 0
            except OSError as exc:
                raise ConnectionResetError(f"client connection lost: {exc.strerror}") from None
            finally:
                view.release()
            position += done
            self.sent += done
            if done < wanted:
                await self._client(self._writable())
        return position

    async def _socket_fd(self) -> int:
        """The duplicate of the client socket's fd, once the transport's own buffer (headers) has gone out."""
        if self._transport.is_closing():
            raise ConnectionResetError("client connection closed")
        await self._flush_transport()  # headers go out first
        if self._sock_fd is None:
            sock = self._transport.get_extra_info("socket")
            if sock is None:
                raise ConnectionResetError("client connection closed")
            self._sock_fd = os.dup(sock.fileno())
        return self._sock_fd

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        sock_fd = await self._socket_fd()
        end = offset + count
        while offset < end:
            try:
                done = os.sendfile(sock_fd, fd, offset, end - offset)
            except BlockingIOError:
                await self._client(self._writable())
                continue
            except OSError as exc:
                if exc.errno in _UNSUPPORTED and self.sent == 0:
                    raise SendfileUnsupported from exc
                raise ConnectionResetError(f"client connection lost: {exc.strerror}") from None
            if done == 0:
                raise ConnectionResetError("file ended before the range was sent")
            offset += done
            self.sent += done

    async def _client(self, wait: Awaitable[Any]) -> None:
        """Await `wait`, a wait on the client; ConnectionResetError once no byte has left for `send_timeout`."""
        task = asyncio.ensure_future(wait)
        try:
            while True:
                buffered = self._transport.get_write_buffer_size()
                done, _ = await asyncio.wait({task}, timeout=self._send_timeout)
                if done:
                    task.result()
                    return
                if self._transport.get_write_buffer_size() >= buffered:  # nothing left the buffer: stalled
                    raise ConnectionResetError(f"client took no byte for {self._send_timeout:g}s")
        finally:
            if not task.done():
                task.cancel()

    async def _writable(self) -> None:
        assert self._sock_fd is not None
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(self._sock_fd, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_writer(self._sock_fd)

    async def _fallback(self, fd: int, offset: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        end = offset + count
        while offset < end:
            piece = await loop.run_in_executor(self._io, os.pread, fd, min(FALLBACK_PIECE, end - offset), offset)
            if not piece:
                raise ConnectionResetError("file ended before the range was sent")
            await self._client(self._writer.write(piece))
            offset += len(piece)
            self.sent += len(piece)

    def close(self) -> None:
        if self._sock_fd is not None:
            os.close(self._sock_fd)
            self._sock_fd = None

