"""A fixed HTTP(S) origin that serves Range: `/{source}/{path}` → `{base_url}/{path}`, nothing else.

One shared aiohttp session per source, `Accept-Encoding: identity`, no redirects followed (an
origin can never send bdn to another host). Every answer is checked strictly: a 200 where a
206 was asked for, a `Content-Range` other than the one asked for, a `Content-Encoding` other
than identity, or a body shorter or longer than announced is an `UpstreamError`, never bytes.
Reads carry `If-Match: <etag>` (or `If-Unmodified-Since` for an object with only a weak ETag
and a Last-Modified) so a changed object answers 412, and every answer's own validators are
checked against the pinned version: an origin that ignores the condition and sends another
version is a `VersionChanged`, never bytes. An origin whose GETs carry other validators than its
HEAD for the same object is remembered, and its objects are reported `uncacheable` (served
straight through, never cached) while it keeps doing so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

import aiohttp

from bdn import __version__
from bdn.bounded import BoundedDict
from bdn.config import HttpSourceConfig, UpstreamConfig
from bdn.errors import Forbidden, NotFound, UpstreamError, UpstreamUnreachable, VersionChanged
from bdn.objects import ObjectInfo
from bdn.sources import Speculation
from bdn.sources.retry import RETRYABLE_STATUSES, busy

READ_PIECE = 256 * 1024
MAX_DISAGREEING = 10_000  # remembered objects whose GETs carried other validators than their HEAD
_SAFE = "/~!$&'()*+,;=:@"


class VersionMismatch(VersionChanged):
    """A read's answer carried other validators than the version it was pinned to."""


def _status_error(response: aiohttp.ClientResponse, what: str) -> Exception:
    status = response.status
    if status in RETRYABLE_STATUSES:
        return busy(status, response.headers.get("Retry-After"), what)
    if status in (404, 410):
        return NotFound(f"{what} does not exist upstream")
    if status in (401, 403):
        return Forbidden(f"upstream refused access to {what}")
    if status == 412:
        return VersionChanged(f"{what} changed upstream")
    return UpstreamError(f"upstream answered {status} for {what}")


def _is_identity(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")


def _check_identity(response: aiohttp.ClientResponse, what: str) -> None:
    if not _is_identity(response):
        raise UpstreamError(f"upstream sent Content-Encoding {response.headers['Content-Encoding']!r} for {what}")


async def checked_range_get(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                            start: int, end: int, size: int, what: str,
                            validators: Mapping[str, str] | None = None) -> AsyncIterator[bytes]:
    """Stream bytes [start, end) of a `size`-byte object from `url`, checking the answer strictly.

    Anything but a 206 with exactly `bytes start-(end-1)/size`, identity encoding and exactly
    `end - start` body bytes raises; redirects are never followed. Each of `validators` (header →
    value) must be in the answer as given, or the answer is of another version (`VersionChanged`).
    """
    expected = f"bytes {start}-{end - 1}/{size}"
    try:
        async with session.get(url, headers={**headers, "Range": f"bytes={start}-{end - 1}"},
                               allow_redirects=False) as response:
            if response.status != 206:
                if response.status == 200:
                    raise UpstreamError(f"upstream answered 200 to a Range request for {what}")
                raise _status_error(response, what)
            _check_identity(response, what)
            for name, value in (validators or {}).items():
                if response.headers.get(name) != value:
                    raise VersionMismatch(f"upstream answered {name} {response.headers.get(name)!r} for {what}, "
                                          f"pinned at {value!r}")
            content_range = response.headers.get("Content-Range")
            if content_range != expected:
                raise UpstreamError(f"upstream sent Content-Range {content_range!r} for {expected!r}")
            length = response.headers.get("Content-Length")
            if length not in (None, str(end - start)):
                raise UpstreamError(f"upstream announced {length} bytes for {end - start}")
            async for piece in counted(response.content.iter_chunked(READ_PIECE), end - start):
                yield piece
    except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
        raise UpstreamUnreachable(f"upstream failed mid-read for {what}: {type(exc).__name__}") from None


async def counted(pieces: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """The pieces of a body that must be exactly `length` bytes long; raises otherwise."""
    received = 0
    async for piece in pieces:
        received += len(piece)
        if received > length:
            raise UpstreamError(f"upstream sent more than {length} bytes")
        yield piece
    if received != length:
        raise UpstreamError(f"upstream body ended at {received} of {length} bytes")


async def speculative_get(session: aiohttp.ClientSession, url: str, start: int, end: int,
                          what: str) -> Speculation | None:
    """A Range GET with no version pin, for `Speculation`; None if the answer is no usable 206."""
    try:
        response = await session.get(url, headers={"Range": f"bytes={start}-{end - 1}"}, allow_redirects=False)
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        return None
    length = response.headers.get("Content-Length", "")
    if response.status != 206 or not length.isdigit() or not _is_identity(response):
        response.close()
        return None

    async def body() -> AsyncIterator[bytes]:
        try:
            async for piece in counted(response.content.iter_chunked(READ_PIECE), int(length)):
                yield piece
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamUnreachable(f"upstream failed mid-read for {what}: {type(exc).__name__}") from None
        finally:
            response.release()

    return Speculation(response.headers.get("ETag", ""), response.headers.get("Content-Range", ""), body(),
                       response.close)


def client_session(timeout: aiohttp.ClientTimeout, local_address: str | None = None) -> aiohttp.ClientSession:
    """bdn's upstream session: identity encoding, no decompression, its own User-Agent.

    `local_address`: the IP connections leave from (a multi-homed node's peer address).
    """
    return aiohttp.ClientSession(
        timeout=timeout,
        auto_decompress=False,
        headers={"User-Agent": f"bdn/{__version__}", "Accept-Encoding": "identity"},
        connector=aiohttp.TCPConnector(limit=64, local_addr=None if local_address is None else (local_address, 0)),
    )


def upstream_timeout(upstream: UpstreamConfig) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=upstream.connect_timeout, sock_read=upstream.read_timeout)


def _pin_headers(info: ObjectInfo) -> dict[str, str]:
    """The condition that makes the origin refuse (412) to answer with another version."""
    if info.etag and not info.etag.startswith("W/"):
        return {"If-Match": info.etag}
    return {"If-Unmodified-Since": info.last_modified} if info.last_modified else {}


def _validators(info: ObjectInfo) -> dict[str, str]:
    """The validators every answer for `info` must carry: its ETag and Last-Modified, as HEAD gave them."""
    found = {"ETag": info.etag, "Last-Modified": info.last_modified or ""}
    return {name: value for name, value in found.items() if value}


class HttpSource:
    """One configured HTTP origin; see the module docstring."""

    def __init__(self, config: HttpSourceConfig, upstream: UpstreamConfig) -> None:
        self._base = config.base_url
        self._timeout = upstream_timeout(upstream)
        self._session: aiohttp.ClientSession | None = None
        self._disagreeing: BoundedDict[str, dict[str, str]] = BoundedDict(MAX_DISAGREEING)

    def _url(self, path: str) -> str:
        return f"{self._base}/{quote(path, safe=_SAFE)}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = client_session(self._timeout)
        return self._session

    async def stat(self, path: str) -> ObjectInfo:
        try:
            async with self._client().head(self._url(path), allow_redirects=False) as response:
                if response.status != 200:
                    raise _status_error(response, path)
                _check_identity(response, path)
                headers = response.headers
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamUnreachable(f"upstream unreachable for {path}: {type(exc).__name__}") from None
        length = headers.get("Content-Length", "")
        if not length.isdigit():
            raise UpstreamError(f"upstream gave no Content-Length for {path}")
        etag = headers.get("ETag")
        last_modified = headers.get("Last-Modified")
        if not etag and not last_modified:
            raise UpstreamError(f"upstream gave neither ETag nor Last-Modified for {path}; it cannot be cached safely")
        info = ObjectInfo(size=int(length), etag=etag or "", last_modified=last_modified,
                          content_type=headers.get("Content-Type"))
        if self._disagreeing.get(path) == _validators(info):
            return dataclasses.replace(info, uncacheable=True)
        return info

    async def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        pinned = info.pinnable  # else a read straight through: one answer, whatever version it is
        try:
            async for piece in checked_range_get(self._client(), self._url(path), _pin_headers(info) if pinned else {},
                                                 start, end, info.size, path, _validators(info) if pinned else {}):
                yield piece
        except VersionMismatch:
            if not info.uncacheable:
                self._disagreeing[path] = _validators(info)  # unless the next HEAD reports a new version
            raise

    async def speculate(self, path: str, start: int, end: int) -> Speculation | None:
        return await speculative_get(self._client(), self._url(path), start, end, path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
