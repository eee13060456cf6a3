"""`GET /_peer/{source}`: a byte range of one object version, served to another bdn node, never forwarded on.

Only members' addresses are answered, and a source's access rules hold here as on its own
routes: client tokens, and the Hub's answer for private and gated repos, are checked against
the `Authorization` the asking node forwards from its client.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from bdn.config import HfSourceConfig
from bdn.errors import BadRequest, Forbidden, NotFound
from bdn.front.access import check_client
from bdn.front.hub import FRONTS_KEY
from bdn.front.respond import respond
from bdn.objects import ObjectInfo, ObjectRef, checked_info, checked_key, has_utf8
from bdn.ops.requestlog import record_of
from bdn.peers.wire import OBJECT_HEADER, VERSION_HEADER, decode_object
from bdn.sources.hf import HubFile, check_repo
from bdn.state import CACHE_KEY, CONFIG_KEY


async def peer_chunk(request: web.Request) -> web.StreamResponse:
    """`GET /_peer/{source}`: a byte range of one object version for another bdn node; peers only."""
    cache = request.app[CACHE_KEY]
    if cache.peers is None or not cache.peers.is_peer_address(request.remote):
        raise Forbidden("/_peer/ answers configured peers only")
    ref, info = _peer_object(request.headers.get(OBJECT_HEADER, ""))
    if ref.source != request.match_info["source"] or ref.source not in cache.sources:
        raise NotFound(f"no source named {ref.source!r}")
    await _check_access(request, ref)
    # The asker checks whole-object digests itself; this node serves bytes and never forwards them.
    version = cache.version_of(ref, dataclasses.replace(info, digest=None))
    version = dataclasses.replace(version, from_peer=True)
    response = await respond(request, version, {VERSION_HEADER: version.id})
    cache.peers.bytes_out[request.remote or ""] += record_of(request).bytes or 0
    return response


async def _check_access(request: web.Request, ref: ObjectRef) -> None:
    """Refuse what this node would refuse the client itself: the forwarded `Authorization` is checked as its own."""
    source = request.app[CONFIG_KEY].sources[ref.source]
    if isinstance(source, HfSourceConfig):
        file = HubFile.from_path(ref.path)
        check_repo(file.repo_type, file.repo_id)
        await request.app[FRONTS_KEY][ref.source].authorize(request, file.repo_type, file.repo_id)
    else:
        check_client(request, source.clients)


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
