"""A throttled local origin for benchmarks: first-byte latency, a per-connection bandwidth cap, counters.

    python benchmarks/origin.py --dir DATA --port 9000 --latency-ms 100 --mbps 200

Serves the files of `--dir` at `/{name}` (GET and HEAD, one Range, ETag, Last-Modified). Any
`/{tag}--{name}` serves `{name}`'s bytes under a distinct ETag, so each cache under test gets
its own cold copy of the same data. Every answer waits `--latency-ms` before its first byte and
is paced to `--mbps` megabytes per second per connection. `GET /_stats` gives requests and body
bytes per path as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import time
from collections import defaultdict
from pathlib import Path

import uvloop
from aiohttp import web

PIECE = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Origin:
    def __init__(self, root: Path, latency: float, rate: float) -> None:
        self.root = root
        self.latency = latency
        self.rate = rate
        self.requests: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)

    def _file(self, name: str) -> Path | None:
        base = name.split("--", 1)[-1]
        path = self.root / base
        return path if "/" not in base and path.is_file() else None

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "bytes": self.bytes})

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self._file(name)
        if path is None:
            return web.Response(status=404)
        self.requests[name] += 1
        size = path.stat().st_size
        etag = '"' + hashlib.md5(f"{name}:{size}".encode()).hexdigest() + '"'
        headers = {"ETag": etag, "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT", "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start, end, status = 0, size, 200
        match = _RANGE.match(request.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1, size) if match.group(2) else size
            else:
                start = max(0, size - int(match.group(2)))
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        await asyncio.sleep(self.latency)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        began = time.monotonic()
        sent = 0
        with path.open("rb") as handle:
            while start + sent < end:
                piece = os.pread(handle.fileno(), min(PIECE, end - start - sent), start + sent)
                await response.write(piece)
                sent += len(piece)
                self.bytes[name] += len(piece)
                ahead = sent / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--mbps", type=float, default=200.0, help="megabytes per second per connection")
    args = parser.parse_args()
    origin = Origin(args.dir, args.latency_ms / 1000, args.mbps * 1e6)
    app = web.Application()
    app.router.add_get("/_stats", origin.stats)
    app.router.add_get("/{name}", origin.serve, allow_head=True)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
