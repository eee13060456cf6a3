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
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bdn.cache import Version
from bdn.errors import NotFound
from bdn.objects import ObjectRef
from bdn.paths import checked_key, segments
from bdn.serve import respond
from bdn.sources.gcs import GcsSource
from bdn.state import CACHE_KEY

LIST_PARAMS = ("prefix", "delimiter", "maxResults", "pageToken", "versions", "startOffset", "endOffset",
               "includeTrailingDelimiter", "matchGlob", "includeFoldersAsPrefixes", "softDeleted")


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
        params = {key: request.query[key] for key in LIST_PARAMS if key in request.query}
        return web.json_response(await source.call(bucket, "b/{}/o", bucket, **params))
    if rest[0] != "o":
        raise NotFound("not a GCS JSON API endpoint bdn serves")
    path = f"{bucket}/{checked_key('/'.join(rest[1:]))}"
    version = await _version(request, name, source, path)
    if media or request.query.get("alt") == "media":
        attributes = version.info.attributes or {}
        whole = {"X-Goog-Hash": ",".join(f"{algo}={attributes[field]}" for algo, field in
                                         (("crc32c", "crc32c"), ("md5", "md5Hash")) if field in attributes)}
        return await respond(request, version, {"X-Goog-Generation": version.info.version_id or ""},
                             whole_object_headers=whole if whole["X-Goog-Hash"] else {})
    return web.json_response(_resource(version))


async def _version(request: web.Request, name: str, source: GcsSource, path: str) -> Version:
    """The current version, or the one `?generation=` pins (its chunks are cached like any other)."""
    cache = request.app[CACHE_KEY]
    version = await cache.version(ObjectRef(name, path))
    generation = request.query.get("generation")
    if generation and generation != version.info.version_id:
        pinned = GcsSource.info(await source.resource(path, generation))
        return cache.version_of(ObjectRef(name, path), pinned)
    return version


def _resource(version: Version) -> dict[str, Any]:
    bucket, _, name = version.ref.path.partition("/")
    resource: dict[str, Any] = {"kind": "storage#object", "name": name, "bucket": bucket,
                                "size": str(version.info.size), "generation": version.info.version_id}
    resource.update(version.info.attributes or {})
    return resource
