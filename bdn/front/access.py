"""Who may ask what: a source's client tokens (401 without one) and the admin allow-list (403 outside it).

A client presents its token as `Authorization: Bearer TOKEN`, or, from an S3 SDK, as the
access key id of its SigV4 `Authorization` header (configure the SDK with the token as
`aws_access_key_id` and any secret). Tokens are compared in constant time with every
configured token, and never logged or echoed. `hf` sources admit clients by their own Hub tokens
in `bdn.front.hub`. A read that a peer serves is checked there by the same rules: the asking node
forwards its client's `Authorization` (`credential_for_peers`), and `/_peer/` applies them to it.
"""

from __future__ import annotations

import hmac
import re

from aiohttp import web

from bdn.config import ClientAuthConfig, HfSourceConfig, SourceConfig
from bdn.errors import Forbidden, Handler, Unauthorized
from bdn.state import CONFIG_KEY

_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def presented_token(request: web.Request) -> str | None:
    """The token a request carries, if any."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme == "AWS4-HMAC-SHA256":
        match = _SIGV4_CREDENTIAL.search(value)
        return match.group(1) if match else None
    return None


def _listed(token: str, tokens: frozenset[str]) -> bool:
    given = token.encode()
    found = False
    for known in tokens:  # no early exit: the time taken says nothing about which token, or how much, matched
        found |= hmac.compare_digest(given, known.encode())
    return found


def check_client(request: web.Request, clients: ClientAuthConfig | None) -> None:
    """Return if the source is open or the request carries one of its tokens; raise 401 otherwise."""
    if clients is None:
        return
    token = presented_token(request)
    if token is None or not _listed(token, clients.tokens):
        raise Unauthorized("this source needs a valid client token", headers={"WWW-Authenticate": 'Bearer realm="bdn"'})


def credential_for_peers(request: web.Request, source: SourceConfig) -> str | None:
    """The client's `Authorization`, when the source has access rules a peer must apply to it too."""
    if getattr(source, "clients", None) is None and not isinstance(source, HfSourceConfig):
        return None
    return request.headers.get("Authorization")


def admin_only(handler: Handler) -> Handler:
    """`handler`, answered only to addresses in `admin.allow`."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.app[CONFIG_KEY].admin.allows(request.remote):
            raise Forbidden("the admin API answers the addresses in admin.allow only")
        return await handler(request)

    return guarded
