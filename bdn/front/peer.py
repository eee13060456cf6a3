"""`GET /_peer/{source}`: a byte range of one object version, served to another bdn node, never forwarded on."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from bdn.errors import BadRequest, Forbidden, NotFound
from bdn.front.respond import respond
from bdn.objects import ObjectInfo, ObjectRef, checked_info, checked_key, has_utf8
from bdn.ops.requestlog import record_of
from bdn.peers.wire import OBJECT_HEADER, VERSION_HEADER, decode_object
from bdn.state import CACHE_KEY


async def peer_chunk(request: web.Request) -> web.StreamResponse:
    """`GET /_peer/{source}`: a byte range of one object version for another bdn node; peers only."""
    cache = request.app[CACHE_KEY]
    if cache.peers is None or not cache.peers.is_peer_address(request.remote):
        raise Forbidden("/_peer/ answers configured peers only")
    ref, info = _peer_object(request.headers.get(OBJECT_HEADER, ""))
    if ref.source != request.match_info["source"] or ref.source not in cache.sources:
        raise NotFound(f"no source named {ref.source!r}")
    # The asker checks whole-object digests itself; this node serves bytes and never forwards them.
    version = cache.version_of(ref, dataclasses.replace(info, digest=None))
    version = dataclasses.replace(version, from_peer=True)
    response = await respond(request, version, {VERSION_HEADER: version.id})
    cache.peers.bytes_out[request.remote or ""] += record_of(request).bytes or 0
    return response


def _peer_object(header: str) -> tuple[ObjectRef, ObjectInfo]:
    """The object and version an `X-Bdn-Object` header names, checked as a client's path and a source's info.

    A peer is trusted to name versions, not to send bdn's upstream requests and answers anything:
    a path with `..` or a NUL, a size that is no number, or a header value with CR LF is a 400.
    """
    try:
        ref, info = decode_object(header)
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: nested deeper than json parses
        raise BadRequest(f"a peer request needs a valid {OBJECT_HEADER} header") from None
    if not (isinstance(ref.source, str) and isinstance(ref.path, str) and ref.path and has_utf8(ref.path)):
        raise BadRequest(f"{OBJECT_HEADER}: source and path must be text")
    checked_key(ref.path)
    return ref, checked_info(info)
