"""Google Cloud Storage through gcsfs's async API, one filesystem object per source.

Paths are `{bucket}/{object}`. The object's `generation` is its version (part of the cache
key), and reads are pinned to it (`?generation=` on the media URL), so a new generation never
mixes with cached chunks of an old one. The object's md5 (or, for composite objects, crc32c)
becomes the digest the whole object is checked against before it is trusted.

gcsfs's Storage Control gRPC probe (PROTOCOLS.md 3.2) is avoided by using the core
`GCSFileSystem` class, which speaks only the JSON API.
"""

from __future__ import annotations

import email.utils
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from bdn.config import GcsSourceConfig, UpstreamConfig
from bdn.errors import BadRequest, BdnError, Forbidden, NotFound, UpstreamError, UpstreamUnreachable, VersionChanged
from bdn.objects import ObjectInfo, split_bucket_key
from bdn.sources.digests import from_base64
from bdn.sources.http import checked_range_get, upstream_timeout
from bdn.sources.retry import RETRYABLE_STATUSES, busy

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
from gcsfs.core import GCSFileSystem  # imported after the switch above
from gcsfs.retry import validate_response

# Object resource fields passed through to JSON API clients (PROTOCOLS.md 3.5).
RESOURCE_FIELDS = ("name", "bucket", "size", "generation", "metageneration", "contentType", "md5Hash", "crc32c",
                   "etag", "updated", "timeCreated", "storageClass", "componentCount", "metadata")


def http_date(rfc3339: str | None) -> str | None:
    if not rfc3339:
        return None
    return email.utils.format_datetime(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")), usegmt=True)


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"{what} does not exist upstream")
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and str(exc).startswith("Forbidden")):
        return Forbidden(f"upstream refused access to {what}")
    if isinstance(exc, (aiohttp.ClientError, TimeoutError, ConnectionError)):
        return UpstreamUnreachable(f"upstream unreachable for {what}: {type(exc).__name__}")
    return UpstreamError(f"upstream failed for {what}: {type(exc).__name__}")


def _check_status(response: aiohttp.ClientResponse, content: bytes, what: str) -> None:
    """Raise for the answers bdn decides itself: busy, a redirect (never followed) and a refused request."""
    status = response.status
    if status in RETRYABLE_STATUSES:
        raise busy(status, response.headers.get("Retry-After"), what)
    if 300 <= status < 400:
        raise UpstreamError(f"upstream answered {status} (a redirect, which bdn never follows) for {what}")
    if status == 400:
        raise BadRequest(f"upstream refused the request for {what}: {_message(content)}")


def _message(content: bytes) -> str:
    """The `error.message` of a JSON API error body (PROTOCOLS.md 3.7), else its first line; at most 200 characters."""
    text = content.decode("utf-8", "replace")
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip().split("\n", 1)[0]
    return str(message)[:200]


def _segment(name: str) -> str:
    """A bucket or object name as one URL path segment, `/` and every reserved character escaped.

    `.` and `..` are no GCS names, and no URL can carry them as a segment: the client normalizes
    it away (`.../o/.` is the bucket's listing), so they are refused. gcsfs's own media URL leaves
    the bucket and generation unescaped; bdn's escapes every part (a peer names them too).
    """
    if name in (".", ".."):
        raise BadRequest(f"{name!r} is not a GCS bucket or object name")
    return quote(name, safe="")


def _object_info(resource: dict[str, Any]) -> ObjectInfo:
    digest = None
    if resource.get("md5Hash"):
        digest = from_base64("md5", resource["md5Hash"])
    elif resource.get("crc32c"):
        digest = from_base64("crc32c", resource["crc32c"])
    kept = {name: resource[name] for name in RESOURCE_FIELDS if name in resource}
    size = int(resource["size"])
    if size < 0:
        raise ValueError("negative size")
    return ObjectInfo(
        size=size,
        etag=f'"{resource.get("etag", resource["generation"])}"',
        last_modified=http_date(resource.get("updated")),
        version_id=str(resource["generation"]),
        content_type=resource.get("contentType"),
        digest=digest,
        attributes=kept,
    )


class GcsSource:
    """One configured GCS endpoint; see the module docstring."""

    def __init__(self, config: GcsSourceConfig, upstream: UpstreamConfig) -> None:
        self._config = config
        self._upstream = upstream
        self._fs: Any = None

    async def filesystem(self) -> Any:
        if self._fs is None:
            fs = GCSFileSystem(
                token=self._config.token, endpoint_url=self._config.endpoint_url, project=self._config.project,
                asynchronous=True, skip_instance_cache=True, requests_timeout=self._upstream.read_timeout,
                session_kwargs={"timeout": upstream_timeout(self._upstream)},
            )
            await fs._set_session()
            self._fs = fs
        return self._fs

    async def call(self, what: str, path: str, *args: str, **params: Any) -> dict[str, Any]:
        """A JSON API GET (`path` like `b/{}/o/{}`, each of `args` one escaped path segment) → its JSON.

        Sent once on gcsfs's session with its auth headers, but without gcsfs's own retry loop
        (up to 6 attempts with backoff): a pod must hear of an unreachable upstream in seconds.
        A redirect is never followed (502: bdn talks to its configured endpoint only), and a 400
        is the client's (a bad bucket name, glob, ...), so it stays a 400.
        """
        fs = await self.filesystem()
        try:
            url = fs.base + path.format(*(_segment(arg) for arg in args))
            async with fs.session.get(url, params=params, headers=fs._get_headers(None),
                                      allow_redirects=False) as response:
                content = await response.read()
                _check_status(response, content, what)
                validate_response(response.status, content, path, args)
                result: dict[str, Any] = json.loads(content)
        except BdnError:
            raise
        except Exception as exc:
            raise _translate(exc, what) from None
        return result

    async def list_names(self, bucket: str, prefix: str) -> list[str]:
        """Every object name under `prefix` (all pages)."""
        names: list[str] = []
        params: dict[str, str] = {"prefix": prefix}
        while True:
            page = await self.call(f"{bucket}/{prefix}", "b/{}/o", bucket, **params)
            names.extend(item["name"] for item in page.get("items", []) if not item["name"].endswith("/"))
            if not page.get("nextPageToken"):
                return names
            params["pageToken"] = page["nextPageToken"]

    async def resource(self, path: str, generation: str | None = None) -> dict[str, Any]:
        """The object resource JSON (size, generation, hashes, ...) of `{bucket}/{object}`."""
        bucket, key = split_bucket_key(path)
        params = {"generation": generation} if generation else {}
        return await self.call(path, "b/{}/o/{}", bucket, key, **params)

    async def stat(self, path: str) -> ObjectInfo:
        return self.info(await self.resource(path))

    @staticmethod
    def info(resource: dict[str, Any]) -> ObjectInfo:
        """An object resource as bdn's ObjectInfo; UpstreamError (502) when the upstream's answer is not one."""
        try:
            return _object_info(resource)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
            raise UpstreamError(f"upstream sent a malformed object resource ({type(exc).__name__})") from None

    async def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        fs = await self.filesystem()
        bucket, key = split_bucket_key(path)
        url = f"{fs._location}/download/storage/v1/b/{_segment(bucket)}/o/{_segment(key)}?alt=media"
        if info.version_id:
            url += f"&generation={quote(info.version_id, safe='')}"
        try:
            async for piece in checked_range_get(fs.session, url, fs._get_headers(None), start, end, info.size, path):
                yield piece
        except NotFound:
            raise VersionChanged(f"generation {info.version_id} of {path} is gone upstream") from None

    async def close(self) -> None:
        if self._fs is not None and self._fs.session is not None:
            await self._fs.session.close()
