"""A Hugging Face Hub as an upstream: huggingface_hub for metadata, bdn's own aiohttp session for bytes.

huggingface_hub does what it is made for: revision resolution, repo and file metadata (size,
LFS sha256, commit), URL building, token handling and the Hub's error types, each call run in
a worker thread (the library is synchronous). Bytes are read with Range from the file's
location, following the Hub's redirect to its storage host (only to the Hub's own origin or one
of `storage_hosts`: a redirect elsewhere is an error, never a request); that signed URL is
remembered in memory only, refreshed when it expires, and never part of a cache key.

No SSRF through the library either: huggingface_hub's process-wide HTTP client carries a request
hook that refuses, before connecting, any request of bdn's own calls that would leave the Hub's
origin (scheme, host and port of `endpoint`), whether a redirect or a page link sends it there.
Other users of the library in the same process (none in the daemon, the client in tests) are
not restricted.

Objects are named by commit: a cache path is `{type}s/{repo_id}@{sha}/{filename}`, so every
object this source serves is immutable. bdn's own token (from `token_env`) is sent to the
Hub only, never to a storage host on another origin.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, get_session, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.file_download import get_hf_file_metadata
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]  # public: in its __all__, lazily loaded

from bdn.bounded import BoundedDict
from bdn.config import ConfigError, HfSourceConfig, UpstreamConfig
from bdn.errors import BadRequest, Forbidden, HubError, NotFound, UpstreamError, UpstreamUnreachable
from bdn.objects import ObjectInfo
from bdn.sources.http import checked_range_get, client_session, upstream_timeout
from bdn.sources.retry import RETRYABLE_STATUSES, busy

T = TypeVar("T")
HUB_THREADS = 16  # concurrent metadata calls to the Hub
MAX_LOCATIONS = 100_000  # remembered storage URLs of files
REPO_TYPES = ("model", "dataset", "space")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]  # scheme, host, port
_HUB_ORIGIN: ContextVar[Origin | None] = ContextVar("bdn_hub_origin", default=None)  # set during bdn's calls
_GUARD_LOCK = threading.Lock()


@dataclass(frozen=True)
class HubFile:
    """One file of one commit of one repo."""

    repo_type: str
    repo_id: str
    sha: str
    filename: str

    @property
    def path(self) -> str:
        return f"{self.repo_type}s/{self.repo_id}@{self.sha}/{self.filename}"

    @classmethod
    def from_path(cls, path: str) -> HubFile:
        kind, _, rest = path.partition("s/")
        repo_id, _, rest = rest.partition("@")
        sha, _, filename = rest.partition("/")
        return cls(kind, repo_id, sha, filename)


def check_repo(repo_type: str, repo_id: str) -> None:
    """Refuse what huggingface_hub (and so the Hub) would refuse, before any upstream request."""
    if repo_type not in REPO_TYPES:
        raise BadRequest(f"not a repo type: {repo_type!r}")
    try:
        validate_repo_id(repo_id)
    except hf_errors.HFValidationError as exc:
        raise hub_error(exc, repo_id) from None


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None for anything else."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def shown(url: str) -> str:
    """Where a URL points, for an error detail: its origin, never a path, query or user info."""
    where = origin(url)
    return f"{where[0]}://{where[1]}:{where[2]}" if where else "a URL that is not http(s) with a valid host and port"


def may_read_from(location: str, endpoint: str, storage_hosts: tuple[str, ...]) -> bool:
    """Whether bdn may read a file at `location`: the Hub's own origin, or one of `storage_hosts` (no SSRF).

    Storage hosts are host names (any port), reached over https, or also over http when the
    endpoint itself is http.
    """
    where, hub = origin(location), origin(endpoint)
    if where is None or hub is None:
        return False
    if where == hub:
        return True
    scheme, host, _ = where
    return (scheme == "https" or hub[0] == "http") and any(
        host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])) for pattern in storage_hosts)


class OffTheHub(Exception):
    """One of bdn's requests to the Hub was about to go to another origin (a redirect, a page link)."""


def _stay_on_the_hub(request: httpx2.Request) -> None:
    """Request hook of huggingface_hub's client: during bdn's calls, only the Hub's origin is allowed."""
    hub = _HUB_ORIGIN.get()
    if hub is not None and origin(str(request.url)) != hub:
        raise OffTheHub(shown(str(request.url)))


def guard_hub_client() -> None:
    """Give huggingface_hub's shared client the hook, again if the library made itself a new client since.

    The hook goes onto the client `get_session()` returns (public API), not into a factory of our
    own built on the library's private default one; bdn calls this before each of its Hub calls.
    """
    with _GUARD_LOCK:
        hooks = get_session().event_hooks["request"]
        if _stay_on_the_hub not in hooks:
            hooks.append(_stay_on_the_hub)


def hub_error(exc: Exception, what: str) -> Exception:
    """The bdn error for a huggingface_hub failure, keeping the Hub's X-Error-Code headers."""
    if isinstance(exc, hf_errors.HFValidationError):
        return BadRequest(f"not a Hub repo id: {exc}")
    if isinstance(exc, OffTheHub):
        return UpstreamError(f"the Hub sent {what} to another origin, outside its endpoint: {exc}")
    response = getattr(exc, "response", None)
    if isinstance(exc, hf_errors.HfHubHTTPError) and response is not None:
        status = response.status_code
        headers = {name: response.headers[name] for name in ("X-Error-Code", "X-Error-Message")
                   if name in response.headers}
        if status in (401, 403, 404) or "X-Error-Code" in headers:
            if "X-Repo-Commit" in response.headers:
                headers["X-Repo-Commit"] = response.headers["X-Repo-Commit"]
            return HubError(status, f"{what}: {headers.get('X-Error-Message', 'refused by the Hub')}", headers)
        if status in RETRYABLE_STATUSES:
            return busy(status, response.headers.get("Retry-After"), what)
        return UpstreamError(f"the Hub answered {status} for {what}")
    if isinstance(exc, (httpx2.TransportError, OSError, TimeoutError)):
        return UpstreamUnreachable(f"the Hub is unreachable for {what}: {type(exc).__name__}")
    return UpstreamError(f"the Hub failed for {what}: {type(exc).__name__}")


def tree_entry(entry: RepoFile | RepoFolder) -> dict[str, Any]:
    """A tree/paths-info entry as the Hub's JSON has it, without `xetHash` (PROTOCOLS.md 1.9)."""
    if isinstance(entry, RepoFolder):
        return {"type": "directory", "oid": entry.tree_id, "path": entry.path, "size": 0}
    item: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": entry.path}
    if entry.lfs is not None:
        item["lfs"] = {"oid": entry.lfs.sha256, "size": entry.lfs.size, "pointerSize": entry.lfs.pointer_size}
    return item


class HfSource:
    """One configured Hub; see the module docstring."""

    def __init__(self, config: HfSourceConfig, upstream: UpstreamConfig) -> None:
        self.endpoint = config.endpoint
        hub = origin(config.endpoint)
        if hub is None:  # bdn's calls must be held to an origin: without one, none could be made safely
            raise ConfigError(f"hf endpoint {config.endpoint!r}: not an http(s) URL with a valid host and port")
        self._origin: Origin = hub
        self.auth_ttl = config.auth_ttl
        self._storage_hosts = config.storage_hosts
        token = os.environ.get(config.token_env) if config.token_env else None
        self._token: str | bool = token or False  # False: never look for a token of the machine's user
        self._api = HfApi(endpoint=self.endpoint, token=self._token, library_name="bdn")
        self._timeout = upstream_timeout(upstream)
        self._session: Any = None
        # cache path → where its bytes are (a signed URL, in memory only; learnt again when forgotten)
        self._locations: BoundedDict[str, str] = BoundedDict(MAX_LOCATIONS)
        # huggingface_hub is synchronous: its calls get threads of their own, so they never wait
        # behind (or starve) other users of the loop's default executor.
        self._threads = ThreadPoolExecutor(max_workers=HUB_THREADS, thread_name_prefix="bdn-hf")
        guard_hub_client()  # now, before any other user of the library may be mid-request on the old client

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self._on_the_hub, fn)
        except (httpx2.HTTPError, OffTheHub, ValueError, OSError, TimeoutError) as exc:
            # ValueError: HFValidationError, or an answer of the Hub the library could not parse
            raise hub_error(exc, what) from None

    def _on_the_hub(self, fn: Callable[[], T]) -> T:
        """Run `fn` (in a worker thread) with its requests held to the Hub's origin."""
        guard_hub_client()
        reset = _HUB_ORIGIN.set(self._origin)
        try:
            return fn()
        finally:
            _HUB_ORIGIN.reset(reset)

    # -- repo-level metadata, used by the Hub-facing routes ------------------------------------

    async def repo_info(self, repo_type: str, repo_id: str, revision: str | None,
                        token: str | bool | None = None) -> dict[str, Any]:
        """The fields of /api/{type}s/{repo}[/revision/{rev}] that clients read."""
        info = await self._call(f"{repo_type} {repo_id}", lambda: self._api.repo_info(
            repo_id, revision=revision, repo_type=repo_type, token=self._token if token is None else token))
        gated = getattr(info, "gated", False)
        siblings = [{"rfilename": s.rfilename} for s in (getattr(info, "siblings", None) or [])]
        return {"id": info.id, "sha": info.sha, "private": bool(info.private), "gated": gated,
                "siblings": siblings}

    async def auth_check(self, repo_type: str, repo_id: str, token: str | None) -> None:
        """Raise the Hub's own error unless `token` (a client's) may read the repo."""
        await self._call(f"{repo_type} {repo_id}", lambda: self._api.auth_check(
            repo_id, repo_type=repo_type, token=token or False))

    async def tree(self, repo_type: str, repo_id: str, sha: str, path: str | None,
                   recursive: bool) -> list[dict[str, Any]]:
        entries = await self._call(f"{repo_type} {repo_id}", lambda: list(self._api.list_repo_tree(
            repo_id, path_in_repo=path, recursive=recursive, revision=sha, repo_type=repo_type)))
        return [tree_entry(entry) for entry in entries]

    async def paths_info(self, repo_type: str, repo_id: str, sha: str, paths: list[str]) -> list[dict[str, Any]]:
        entries = await self._call(f"{repo_type} {repo_id}", lambda: self._api.get_paths_info(
            repo_id, paths, revision=sha, repo_type=repo_type))
        return [tree_entry(entry) for entry in entries]

    # -- the Source protocol --------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        return (await self._metadata(path))[0]

    async def _locate(self, path: str) -> str:
        return (await self._metadata(path))[1]

    async def _metadata(self, path: str) -> tuple[ObjectInfo, str]:
        """The file's size, ETag and digest, and where its bytes are (remembered for reads)."""
        file = HubFile.from_path(path)
        meta = await self._call(f"{file.repo_id}/{file.filename}", lambda: get_hf_file_metadata(
            hf_hub_url(file.repo_id, file.filename, repo_type=file.repo_type, revision=file.sha,
                       endpoint=self.endpoint), token=self._token, endpoint=self.endpoint))
        if meta.size is None or not meta.etag:
            raise UpstreamError(f"the Hub gave no size or ETag for {file.repo_id}/{file.filename}")
        if not may_read_from(meta.location, self.endpoint, self._storage_hosts):
            raise UpstreamError(f"the Hub sent {file.repo_id}/{file.filename} outside its own origin and "
                                f"storage_hosts: {shown(meta.location)}")
        self._locations[path] = meta.location
        digest = f"sha256:{meta.etag}" if _SHA256.match(meta.etag) else None
        if digest is None and re.fullmatch(r"[0-9a-f]{40}", meta.etag):
            digest = f"git-sha1:{meta.etag}"
        return ObjectInfo(size=meta.size, etag=f'"{meta.etag}"', digest=digest), meta.location

    async def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        location = self._locations.get(path) or await self._locate(path)
        try:
            async for piece in self._get(location, path, info, start, end):
                yield piece
        except (Forbidden, NotFound):
            # A signed storage URL that expired answers 403/404 before any byte: learn it again, once.
            async for piece in self._get(await self._locate(path), path, info, start, end):
                yield piece

    def _get(self, location: str, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        headers = {}
        if self._token and origin(location) == self._origin:
            headers["Authorization"] = f"Bearer {self._token}"
        return checked_range_get(self._client(), location, headers, start, end, info.size, path)

    def _client(self) -> Any:
        if self._session is None:
            self._session = client_session(self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
