"""The GCS JSON API at the root of bdn's port, so gcsfs and google-cloud-storage read through bdn unmodified.

gcsfs accepts no path prefix in its endpoint (PROTOCOLS.md 3.1), so these paths are served at
`/` for the one `gcs` source whose config says `json_api: true`:
- `GET /storage/v1/b/{bucket}/o/{object}`: the object resource (size, generation, hashes), or
  its bytes with `?alt=media`;
- `GET /download/storage/v1/b/{bucket}/o/{object}?alt=media`: its bytes, with Range;
- `GET /storage/v1/b/{bucket}/o?prefix=...` and `GET /storage/v1/b/{bucket}`: listings and bucket
  info, passed through from the upstream (never cached: a listing must be current).
Bytes come from the same chunked, single-flighted cache as `/{source}/{bucket}/{object}`.
`X-Goog-Hash` rides only on whole-object 200 answers (PROTOCOLS.md 3.6).

Query values bdn interprets or forwards are checked here and refused with a 400 (numbers are
ASCII digits within GCS's range, booleans are `true`/`false`); other query keys (`projection`,
`fields`, `prettyPrint`, `userProject`, ...) are dropped, as the upstream request is bdn's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bdn.cache.object_cache import Version
from bdn.errors import BadRequest, NotFound
from bdn.front.paths import segments
from bdn.front.respond import respond
from bdn.objects import ObjectRef, checked_key
from bdn.sources.gcs import GcsSource
from bdn.state import CACHE_KEY

Check = Callable[[str, str], str]  # (name, value) -> the value to forward; BadRequest if it is not one


def whole_number(limit: int) -> Check:
    """ASCII digits naming a number from 0 to `limit`, forwarded without leading zeros."""
    def check(name: str, value: str) -> str:
        digits = value.lstrip("0") or "0"
        if not (value.isascii() and value.isdigit() and len(digits) <= len(str(limit)) and int(digits) <= limit):
            raise BadRequest(f"query parameter {name} must be a whole number from 0 to {limit}, not {value!r}")
        return digits
    return check


def boolean(name: str, value: str) -> str:
    if value.lower() not in ("true", "false"):
        raise BadRequest(f"query parameter {name} must be true or false, not {value!r}")
    return value.lower()


def text(name: str, value: str) -> str:
    return value


def one_of(*allowed: str) -> Check:
    def check(name: str, value: str) -> str:
        if value not in allowed:
            raise BadRequest(f"query parameter {name} must be one of {', '.join(allowed)}, not {value!r}")
        return value
    return check


# The listing parameters gcsfs and google-cloud-storage send (PROTOCOLS.md 3.3), as the JSON API types them.
LIST_PARAMS: dict[str, Check] = {
    "prefix": text, "delimiter": text, "pageToken": text, "startOffset": text, "endOffset": text, "matchGlob": text,
    "maxResults": whole_number(2**32 - 1), "versions": boolean, "includeTrailingDelimiter": boolean,
    "includeFoldersAsPrefixes": boolean, "softDeleted": boolean,
}
OBJECT_PARAMS: dict[str, Check] = {"generation": whole_number(2**63 - 1), "alt": one_of("json", "media")}


def checked_query(query: Mapping[str, str], checks: Mapping[str, Check]) -> dict[str, str]:
    """The query values named in `checks`, each checked (BadRequest otherwise); all other keys dropped."""
    return {name: check(name, query[name]) for name, check in checks.items() if name in query}


async def handle(request: web.Request, name: str, raw_path: str) -> web.StreamResponse:
    """`raw_path` is the request target after the leading `/`, e.g. `storage/v1/b/bkt/o/a%2Fb`."""
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    source = request.app[CACHE_KEY].sources[name]
    assert isinstance(source, GcsSource)
    parts = segments(raw_path.split("?", 1)[0])
    media = parts[:1] == ["download"]
    parts = parts[1:] if media else parts
    if parts[:3] != ["storage", "v1", "b"] or len(parts) < 4 or not parts[3]:
        raise NotFound("not a GCS JSON API endpoint bdn serves")
    bucket, rest = parts[3], parts[4:]
    if not rest:
        return web.json_response(await source.call(bucket, "b/{}", bucket))
    if rest == ["o"]:
        params = checked_query(request.query, LIST_PARAMS)
        return web.json_response(await source.call(bucket, "b/{}/o", bucket, **params))
    if rest[0] != "o":
        raise NotFound("not a GCS JSON API endpoint bdn serves")
    path = f"{bucket}/{checked_key('/'.join(rest[1:]))}"
    params = checked_query(request.query, OBJECT_PARAMS)
    version = await _version(request, name, source, path, params.get("generation"))
    if media or params.get("alt") == "media":
        attributes = version.info.attributes or {}
        whole = {"X-Goog-Hash": ",".join(f"{algo}={attributes[field]}" for algo, field in
                                         (("crc32c", "crc32c"), ("md5", "md5Hash")) if field in attributes)}
        return await respond(request, version, {"X-Goog-Generation": version.info.version_id or ""},
                             whole_object_headers=whole if whole["X-Goog-Hash"] else {})
    return web.json_response(_resource(version))


async def _version(request: web.Request, name: str, source: GcsSource, path: str,
                   generation: str | None) -> Version:
    """The current version, or the one `?generation=` pins (its chunks are cached like any other)."""
    cache = request.app[CACHE_KEY]
    version = await cache.version(ObjectRef(name, path))
    if generation is not None and generation != version.info.version_id:
        pinned = GcsSource.info(await source.resource(path, generation))
        return cache.version_of(ObjectRef(name, path), pinned)
    return version


def _resource(version: Version) -> dict[str, Any]:
    bucket, _, name = version.ref.path.partition("/")
    resource: dict[str, Any] = {"kind": "storage#object", "name": name, "bucket": bucket,
                                "size": str(version.info.size), "generation": version.info.version_id}
    resource.update(version.info.attributes or {})
    return resource
