"""The Hugging Face Hub's HTTP API as bdn serves it under `/{source}/`, so `HF_ENDPOINT=http://NODE:8080/hf` works.

Served: file `resolve` (GET and HEAD, models, `datasets/` and `spaces/`), the repo info and
revision API, the tree listing and paths-info that `snapshot_download` and HfFileSystem call,
and auth-check. Answers carry the headers the client relies on (`X-Repo-Commit`,
`X-Linked-Etag`, `X-Linked-Size`, `ETag`, `Content-Length`) and none that would send it around
bdn: no xet header and no `xetHash` is ever produced (PROTOCOLS.md 1.9), and no redirect
either, since bdn streams the bytes itself.

Revisions: a branch or tag resolves to a commit sha, kept for `metadata_ttl` (and served stale
while the Hub is unreachable); anything named by a sha is immutable and, once cached, needs no
upstream request. Private and gated repos: bdn reads them with its own token, and serves them
(cached or not) only to a request whose bearer token the Hub accepts for that repo, asked
upstream and remembered per token and repo for the source's `auth_ttl`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bdn.bounded import BoundedDict
from bdn.cache.flight import SingleFlight
from bdn.cache.metadata import Json
from bdn.cache.object_cache import ObjectCache
from bdn.errors import BadRequest, HubError, NotFound
from bdn.front.paths import segments
from bdn.front.respond import respond
from bdn.objects import ObjectRef, has_utf8
from bdn.sources.hf import COMMIT_SHA, HfSource, HubFile, check_repo
from bdn.state import CACHE_KEY

MAX_GRANTS = 100_000  # remembered (token, repo) access answers
_API_ACTIONS = frozenset({"revision", "tree", "paths-info", "auth-check"})
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: Hub tokens are ASCII


def _entry_not_found(what: str) -> HubError:
    return HubError(404, f"{what} not found", {"X-Error-Code": "EntryNotFound",
                                               "X-Error-Message": "Entry not found"})


class HubFront:
    """The Hub-facing side of one `hf` source: access checks, revisions and listings, with their caches."""

    def __init__(self, name: str, source: HfSource, ttl: float) -> None:
        self.name = name
        self.source = source
        self.ttl = ttl
        # Keyed by client token (hashed) and repo: any client can add entries, so the map is bounded.
        self._grants: BoundedDict[tuple[str, str, str], tuple[float, HubError | None]] = BoundedDict(MAX_GRANTS)
        self._checks: SingleFlight[tuple[str, str, str], HubError | None] = SingleFlight()

    def _key(self, *parts: str) -> str:
        return "\0".join(("hf", self.name, *parts))

    async def _cached(self, request: web.Request, key: str, fetch: Callable[[], Awaitable[Json]],
                      ttl: float | None) -> Json:
        value, _ = await request.app[CACHE_KEY].metadata.get(key, fetch, ttl, lambda _: True)
        return value

    async def authorize(self, request: web.Request, repo_type: str, repo_id: str) -> None:
        """Return if the request may read the repo; raise the Hub's own error otherwise."""
        info = await self.repo(request, repo_type, repo_id, "")
        if not info.get("private") and not info.get("gated"):
            return
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if token and not _BEARER_TOKEN.fullmatch(token):  # the Hub's client would fail to send it: no 5xx here
            raise BadRequest("the Authorization header's bearer token is not an RFC 6750 token")
        grant = (hashlib.sha256(token.encode()).hexdigest(), repo_type, repo_id)
        known = self._grants.get(grant)
        if known is None or time.monotonic() - known[0] > self.source.auth_ttl:
            refusal = await self._checks.do(grant, lambda: self._check(repo_type, repo_id, token))
            self._grants[grant] = (time.monotonic(), refusal)
            known = self._grants[grant]
        if known[1] is not None:
            raise known[1]

    async def _check(self, repo_type: str, repo_id: str, token: str) -> HubError | None:
        try:
            await self.source.auth_check(repo_type, repo_id, token or None)
        except HubError as refusal:
            return refusal
        return None

    async def repo(self, request: web.Request, repo_type: str, repo_id: str, revision: str) -> Json:
        """Repo info at a revision ("" for the default branch): by sha forever, by name for the TTL."""
        ttl = None if COMMIT_SHA.match(revision) else self.ttl
        return await self._cached(
            request, self._key("repo", repo_type, repo_id, revision),
            lambda: self.source.repo_info(repo_type, repo_id, revision or None), ttl)

    async def commit(self, request: web.Request, repo_type: str, repo_id: str, revision: str) -> str:
        if COMMIT_SHA.match(revision):
            return revision
        return str((await self.repo(request, repo_type, repo_id, revision))["sha"])

    async def tree(self, request: web.Request, repo_type: str, repo_id: str, sha: str, path: str,
                   recursive: bool) -> list[Json]:
        listing = await self._cached(
            request, self._key("tree", repo_type, repo_id, sha, path, str(recursive)),
            lambda: self._listing(repo_type, repo_id, sha, path, recursive), None)
        entries: list[Json] = listing["entries"]
        return entries

    async def _listing(self, repo_type: str, repo_id: str, sha: str, path: str, recursive: bool) -> Json:
        return {"entries": await self.source.tree(repo_type, repo_id, sha, path or None, recursive)}


FRONTS_KEY = web.AppKey("hub_fronts", dict[str, HubFront])


def make_fronts(cache: ObjectCache, metadata_ttl: float) -> dict[str, HubFront]:
    """One HubFront per `hf` source of the cache."""
    return {name: HubFront(name, source, metadata_ttl)
            for name, source in cache.sources.items() if isinstance(source, HfSource)}


async def handle(request: web.Request, name: str, raw_rest: str) -> web.StreamResponse:
    """Everything under `/{name}/` of an `hf` source."""
    front = request.app[FRONTS_KEY][name]
    parts = segments(raw_rest)
    if parts and parts[0] == "api":
        return await _api(request, front, parts[1:])
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    return await _resolve(request, front, parts)


async def _resolve(request: web.Request, front: HubFront, parts: list[str]) -> web.StreamResponse:
    repo_type = _TYPE_PREFIXES.get(parts[0], "model") if parts else "model"
    rest = parts[1:] if parts and parts[0] in _TYPE_PREFIXES else parts
    if len(rest) >= 4 and rest[2] == "resolve":
        repo_id, revision, filename = f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:])
    elif len(rest) >= 3 and rest[1] == "resolve":
        repo_id, revision, filename = rest[0], rest[2], "/".join(rest[3:])
    else:
        raise NotFound("not a Hub endpoint bdn serves")
    check_repo(repo_type, repo_id)
    if not filename:
        raise _entry_not_found("an empty file name")
    await front.authorize(request, repo_type, repo_id)
    sha = await front.commit(request, repo_type, repo_id, revision)
    file = HubFile(repo_type, repo_id, sha, filename)
    try:
        version = await request.app[CACHE_KEY].version(ObjectRef(front.name, file.path), immutable=True)
    except HubError as exc:
        exc.headers.setdefault("X-Repo-Commit", sha)
        raise
    size = str(version.info.size)
    return await respond(request, version, {"X-Repo-Commit": sha, "X-Linked-Etag": version.info.etag,
                                            "X-Linked-Size": size})


def _api_target(parts: list[str]) -> tuple[str, str, str, list[str]]:
    """(repo type, repo id, action, action arguments) of `api/{type}s/{repo}[/{action}/...]`."""
    if len(parts) < 2 or parts[0] not in _API_TYPES:
        raise NotFound("not a Hub API endpoint bdn serves")
    repo_type, rest = _API_TYPES[parts[0]], parts[1:]
    if len(rest) >= 3 and rest[2] in _API_ACTIONS:
        repo_id, action, args = f"{rest[0]}/{rest[1]}", rest[2], rest[3:]
    elif len(rest) >= 2 and rest[1] in _API_ACTIONS:
        repo_id, action, args = rest[0], rest[1], rest[2:]
    elif len(rest) <= 2:
        repo_id, action, args = "/".join(rest), "info", []
    else:
        raise NotFound("not a Hub API endpoint bdn serves")
    check_repo(repo_type, repo_id)
    return repo_type, repo_id, action, args


async def _api(request: web.Request, front: HubFront, parts: list[str]) -> web.StreamResponse:
    repo_type, repo_id, action, args = _api_target(parts)
    await front.authorize(request, repo_type, repo_id)
    if action == "auth-check":
        return web.json_response({})
    if action == "paths-info":
        if request.method != "POST" or not args:
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        return await _paths_info(request, front, repo_type, repo_id, args[0])
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    if action == "info":
        return web.json_response(await front.repo(request, repo_type, repo_id, ""))
    if action == "revision" and len(args) == 1:
        return web.json_response(await front.repo(request, repo_type, repo_id, args[0]))
    if action == "tree" and args:
        sha = await front.commit(request, repo_type, repo_id, args[0])
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        entries = await front.tree(request, repo_type, repo_id, sha, "/".join(args[1:]), recursive)
        return web.json_response(entries, dumps=json.dumps)
    raise NotFound("not a Hub API endpoint bdn serves")


async def _paths_info(request: web.Request, front: HubFront, repo_type: str, repo_id: str,
                      revision: str) -> web.Response:
    paths = await _requested_paths(request)
    sha = await front.commit(request, repo_type, repo_id, revision)
    entries: list[Any] = await front.source.paths_info(repo_type, repo_id, sha, paths)
    return web.json_response(entries)


async def _requested_paths(request: web.Request) -> list[str]:
    """The `paths` of a paths-info body: a form, as huggingface_hub sends, or `{"paths": [...]}`; else a 400.

    Parsed here rather than by `request.post()`, which fails with a 500 on a bad multipart or
    non-UTF-8 body and writes multipart file parts to temporary files outside the cache dir.
    """
    body = await request.read()  # at most the app's client_max_size: a 413 beyond
    if request.content_type == "application/x-www-form-urlencoded":
        try:  # percent-escapes are UTF-8 whatever the charset parameter says; the body itself is ASCII
            fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeError:
            raise BadRequest("paths-info: the form is not ASCII with UTF-8 percent-escapes") from None
        return [value for name, value in fields if name == "paths"]
    if request.content_type == "application/json":
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise BadRequest("paths-info: the body is not JSON") from None
        paths = payload.get("paths") if isinstance(payload, dict) else None
        if isinstance(paths, list) and all(isinstance(path, str) and has_utf8(path) for path in paths):
            return paths
        raise BadRequest('paths-info: a JSON body is {"paths": ["file or folder", ...]}')
    raise BadRequest("paths-info takes an application/x-www-form-urlencoded (or JSON) body")
