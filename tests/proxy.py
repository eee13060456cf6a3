"""A counting HTTP reverse proxy for tests: sits between bdn and an upstream (moto), logs every request.

Each request is forwarded as is (headers and body) and the answer streamed back, so bdn's
aiobotocore client talks to moto unchanged while the test counts exactly what reached the
upstream. Stopping the proxy makes the upstream unreachable for bdn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Forwarded:
    method: str
    path: str
    range: str | None
    authorization: str | None = None  # to check the signing region, never printed


@dataclass
class CountingProxy:
    target: str
    log: list[Forwarded] = field(default_factory=list)
    url: str = ""
    port: int = 0
    corrupt: bool = False  # flip every byte of media bodies (same length): an upstream serving wrong bytes
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def gets(self, path_suffix: str = "") -> list[Forwarded]:
        return [e for e in self.log if e.method == "GET" and e.path.endswith(path_suffix)]

    def heads(self, path_suffix: str = "") -> list[Forwarded]:
        return [e for e in self.log if e.method == "HEAD" and e.path.endswith(path_suffix)]

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def __aenter__(self) -> CountingProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.log.append(Forwarded(request.method, request.path, request.headers.get("Range"),
                                  request.headers.get("Authorization")))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.target + request.raw_path, headers=headers, data=body or None,
            allow_redirects=False,
        ) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP - {"content-length"}}
            response = web.StreamResponse(status=upstream.status, headers=out)
            if request.method == "HEAD":
                return web.Response(status=upstream.status, headers=out)
            await response.prepare(request)
            corrupt = self.corrupt and "alt=media" in request.raw_path
            async for piece in upstream.content.iter_chunked(1 << 18):
                await response.write(bytes(b ^ 0xFF for b in piece) if corrupt else piece)
            await response.write_eof()
            return response
