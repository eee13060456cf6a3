"""A real HTTP origin for tests: objects in memory, Range and ETags, a request log, and fault switches.

It serves `GET`/`HEAD /{path}` on 127.0.0.1 like a well-behaved CDN (206 with Content-Range,
`If-Match` → 412 on a changed object) until a test flips a fault switch, after which it
misbehaves in exactly one way: ignores Range, lies in Content-Range, compresses, sends a
short or long body, or answers an error status.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from dataclasses import dataclass, field

from aiohttp import web

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    if_match: str | None


@dataclass
class Faults:
    ignore_range: bool = False  # answer 200 + whole body to a Range request
    wrong_content_range: bool = False  # shift Content-Range by one byte
    gzip: bool = False  # Content-Encoding: gzip on bodies
    short_body: bool = False  # announce the right length, close after half the bytes
    long_body: bool = False  # announce no length (chunked) and send 1000 bytes more than the range
    status: int | None = None  # answer every request with this status
    no_validators: bool = False  # send neither ETag nor Last-Modified
    bytes_per_second: int | None = None  # throttle bodies (written in 64 KiB pieces)
    unpinned_etag: str | None = None  # ETag sent to GETs without If-Match (a version change in between)
    ignore_if_match: bool = False  # never answer 412: a changed object is sent anyway, under its new ETag
    weak_etag_only: bool = False  # ETag W/"..." and no Last-Modified: nothing a read can be pinned to
    get_etag: str | None = None  # the ETag of every GET answer, whatever HEAD says (validators that disagree)


@dataclass
class Origin:
    objects: dict[str, bytes] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    url: str = ""
    completed: int = 0  # bodies sent to their end
    in_flight: int = 0  # GET bodies being sent right now
    max_in_flight: int = 0
    _runner: web.AppRunner | None = None
    _etags: dict[str, tuple[bytes, str]] = field(default_factory=dict)

    def put(self, path: str, data: bytes) -> str:
        self.objects[path] = data
        return self.etag(path)

    def etag(self, path: str) -> str:
        data = self.objects[path]
        known = self._etags.get(path)
        if known is None or known[0] is not data:  # hashed once per object, not per request
            known = (data, '"' + hashlib.md5(data).hexdigest() + '"')
            self._etags[path] = known
        return known[1]

    def gets(self, path: str) -> list[Logged]:
        return [entry for entry in self.log if entry.method == "GET" and entry.path == path]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.log.append(Logged(request.method, path, request.headers.get("Range"), request.headers.get("If-Match")))
        if self.faults.status is not None:
            return web.Response(status=self.faults.status, text="fault")
        data = self.objects.get(path)
        if data is None:
            return web.Response(status=404, text="no such object")
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if self.faults.weak_etag_only:
            headers["ETag"] = "W/" + self.etag(path)
        elif not self.faults.no_validators:
            headers["ETag"] = self.etag(path)
            headers["Last-Modified"] = "Wed, 01 Jan 2025 00:00:00 GMT"
        if request.method == "GET" and self.faults.get_etag is not None:
            headers["ETag"] = self.faults.get_etag
        if_match = request.headers.get("If-Match")
        if request.method == "GET" and if_match is None and self.faults.unpinned_etag and "ETag" in headers:
            headers["ETag"] = self.faults.unpinned_etag
        if if_match is not None and if_match != self.etag(path) and not self.faults.ignore_if_match:
            return web.Response(status=412, text="changed")
        status, body = 200, data
        match = _RANGE.match(request.headers.get("Range", ""))
        if match and not self.faults.ignore_range:
            start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
            if start >= len(data):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            shift = 1 if self.faults.wrong_content_range else 0
            headers["Content-Range"] = f"bytes {start + shift}-{end + shift}/{len(data)}"
            status, body = 206, data[start:end + 1]
        if self.faults.gzip:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if self.faults.long_body and request.method == "GET":
            body += bytes(1000)
        else:
            headers["Content-Length"] = str(len(body))
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._send_body(request, response, body)
        finally:
            self.in_flight -= 1

    async def _send_body(self, request: web.Request, response: web.StreamResponse, body: bytes) -> web.StreamResponse:
        await response.prepare(request)
        if self.faults.short_body:
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        if self.faults.bytes_per_second is None:
            await response.write(body)
        else:
            for offset in range(0, len(body), 65536):
                await response.write(body[offset:offset + 65536])
                await asyncio.sleep(65536 / self.faults.bytes_per_second)
        await response.write_eof()
        self.completed += 1
        return response
