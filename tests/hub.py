"""A fake Hugging Face Hub for tests: git-like repos in memory, the Hub's wire protocol, a request log, fault switches.

Two aiohttp servers on 127.0.0.1: the Hub itself (`hub.url`) and a separate storage host
(`hub.storage_url`, a different origin, like the Hub's CDN) that serves LFS blobs by sha256 behind
signed URLs. It answers as huggingface.co does (PROTOCOLS.md section 1), so the unmodified
`huggingface_hub` client works against it directly:

* `HEAD`/`GET /{prefix}{repo_id}/resolve/{rev}/{path}`: a regular file is served in place (200,
  `ETag` = git blob sha1, `X-Repo-Commit`, Range honoured); an LFS file is a 302 to a signed
  storage URL carrying `X-Repo-Commit`, `X-Linked-Etag` (sha256), `X-Linked-Size`, and, when
  `advertise_xet` is set, the xet headers a mirror must strip.
* `GET /api/{models|datasets|spaces}/{repo_id}[/revision/{rev}]`, `GET …/tree/{rev}[/{path}]`
  (paginated with `Link: <…>; rel="next"`), `POST …/paths-info/{rev}`.
* Errors carry `X-Error-Code` / `X-Error-Message` exactly as the Hub's (RepoNotFound, GatedRepo,
  RevisionNotFound, EntryNotFound).
* `hub.redirect(prefix, target)` answers every Hub request under a path prefix with a redirect,
  as the Hub does for a renamed repo (a relative 307) or as a hostile Hub could (another host);
  `next_page_origin` puts tree pages' `rel="next"` links on another origin.

`hub.source()` is bdn's config for an `hf` source on this Hub: the storage host is another origin,
so it has to be one of the source's `storage_hosts`.

Commits are real git objects: blob, tree and commit ids are the sha1s git would compute for the
same content (LFS files enter the tree as their pointer file), so ids are deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

MiB = 1 << 20
HOST = "127.0.0.1"  # both servers listen here, on ports of their own
REPO_TYPES = {"model": "", "dataset": "datasets/", "space": "spaces/"}  # repo type -> resolve URL prefix
_API_TYPES = {f"{t}s": t for t in REPO_TYPES}  # "models" -> "model"
_PREFIXES = {p.rstrip("/"): t for t, p in REPO_TYPES.items() if p}  # "datasets" -> "dataset"
_ACTIONS = ("revision", "tree", "paths-info", "xet-read-token")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_EPOCH = 1735689600  # 2025-01-01T00:00:00Z, a repo's first commit date; each further commit is a minute later
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data`: what the Hub sends as the ETag of a regular file and as `oid` in trees."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xet_hash(data: bytes) -> str:
    """A stand-in for the xet content hash: 64 hex, deterministic, different from the sha256."""
    return hashlib.sha256(b"xet\0" + data).hexdigest()


def flipped(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


@dataclass
class HubRequest:
    """One request as received by either server; `path` is the raw (still percent-encoded) path."""

    method: str
    host: str  # "hub" or "storage"
    path: str
    range: str | None
    auth: bool  # an Authorization header was present
    query: str = ""
    authorization: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    lfs: bool
    oid: str  # git blob sha1 of what git stores: the content, or the LFS pointer
    sha256: str
    pointer_size: int  # 0 for regular files

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    date: str
    files: dict[str, RepoFile]
    dirs: dict[str, str]  # directory path -> git tree sha1 ("" is the root)
    last_commit: dict[str, str]  # file or directory path -> sha of the commit that last changed it


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    gated: bool | str
    tokens: set[str]
    lfs_threshold: int
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag name -> commit sha

    def resolve(self, rev: str) -> str | None:
        for prefix in ("refs/heads/", "refs/tags/"):
            if rev.startswith(prefix) and rev[len(prefix):] in self.refs:
                return self.refs[rev[len(prefix):]]
        if rev in self.refs:
            return self.refs[rev]
        return rev if _SHA1.match(rev) and rev in self.commits else None


def _tree_sha1(node: dict[str, Any], dirs: dict[str, str], prefix: str) -> str:
    """Git tree id of a nested {name: RepoFile | subtree} dict; records every directory's id in `dirs`."""
    entries: list[tuple[bytes, bytes]] = []
    for name, child in node.items():
        if isinstance(child, dict):
            oid = _tree_sha1(child, dirs, f"{prefix}{name}/")
            entries.append(((name + "/").encode(), b"40000 " + name.encode() + b"\0" + bytes.fromhex(oid)))
        else:
            entries.append((name.encode(), b"100644 " + name.encode() + b"\0" + bytes.fromhex(child.oid)))
    body = b"".join(entry for _, entry in sorted(entries))
    oid = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
    dirs[prefix.rstrip("/")] = oid
    return oid


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 single byte range → (first, last); "unsatisfiable"; or None to serve the whole body.

    Syntactically invalid headers and multi-range requests are ignored (a server may always do so).
    """
    if not header:
        return None
    match = _RANGE.match(header.replace(" ", ""))
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _error(status: int, code: str | None, message: str, **headers: str) -> web.Response:
    extra = {"X-Error-Message": message, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if code is not None:
        extra["X-Error-Code"] = code
    return web.json_response({"error": message}, status=status, headers=extra)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@dataclass
class FakeHub:
    """`await hub.start()`, then `hub.add_repo(...)`; point the client at `hub.url`; `await hub.stop()`.

    `stop()` then `start()` again restarts both servers on the same ports (an outage with refused
    connections). `down` / `storage_down` make a running server answer every request with
    `down_status` instead.
    """

    advertise_xet: bool = False  # add X-Xet-* / Link rel="xet-auth" on LFS resolves and xetHash in trees
    page_size: int = 1000  # tree entries per page (the Hub's cap)
    page_size_expand: int = 50  # tree entries per page with expand=true
    url_ttl: float = 3600.0  # lifetime of signed storage URLs, seconds
    check_signatures: bool = True  # storage answers 403 to unknown or expired signatures
    down: bool = False  # the Hub answers every request with `down_status`
    storage_down: bool = False  # the storage host answers every request with `down_status`
    down_status: int = 503
    storage_bytes_per_second: int | None = None  # throttle storage bodies (written in 64 KiB pieces)
    log: list[HubRequest] = field(default_factory=list)
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # storage host: sha256 -> content
    corrupted: set[str] = field(default_factory=set)  # sha256s served with every byte flipped
    url: str = ""
    storage_url: str = ""
    port: int = 0
    storage_port: int = 0
    completed: int = 0  # storage bodies sent to their end
    next_page_origin: str = ""  # origin of tree pages' rel="next" links ("": the Hub's own)
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)  # path prefix -> (status, target prefix)
    _signatures: dict[str, tuple[str, float]] = field(default_factory=dict)  # signature -> (sha256, expires)
    _runners: list[web.AppRunner] = field(default_factory=list)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Start (or restart, on the same ports) the Hub and the storage host; returns `hub.url`."""
        self.port = await self._serve(self._handle_hub, self.port)
        self.storage_port = await self._serve(self._handle_storage, self.storage_port)
        self.url = f"http://{HOST}:{self.port}"
        self.storage_url = f"http://{HOST}:{self.storage_port}"
        return self.url

    def source(self, **options: Any) -> dict[str, Any]:
        """bdn's config for an `hf` source on this Hub, its storage host allowed."""
        return {"type": "hf", "endpoint": self.url, "storage_hosts": [HOST], **options}

    async def stop(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    async def _serve(self, handler: Any, port: int) -> int:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)  # stop() cuts transfers in flight
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        self._runners.append(runner)
        return int(runner.addresses[0][1])

    # ---------------------------------------------------------------- repos

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        repo_type: str = "model",
        private: bool = False,
        gated: bool | str = False,
        tokens: tuple[str, ...] | list[str] | set[str] = (),
        lfs_threshold: int = MiB,
        message: str = "initial commit",
    ) -> str:
        """Create a repo whose `main` points at one commit holding `files`; returns the commit sha.

        Files of `lfs_threshold` bytes or more are LFS (served through the storage host). A private
        repo is visible only with one of `tokens`; a gated one (True, "auto" or "manual") lists
        publicly but serves files only with one of `tokens`.
        """
        if repo_type not in REPO_TYPES:
            raise ValueError(f"unknown repo type {repo_type!r}")
        if not 1 <= len(repo_id.split("/")) <= 2 or "" in repo_id.split("/"):
            raise ValueError(f"repo id must have one or two segments: {repo_id!r}")
        key = (repo_type, repo_id)
        if key in self.repos:
            raise ValueError(f"{repo_type} {repo_id} exists")
        self.repos[key] = Repo(repo_type, repo_id, private, gated, set(tokens), lfs_threshold)
        return self.commit(repo_id, files, repo_type=repo_type, message=message)

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | None],
        repo_type: str = "model",
        branch: str = "main",
        message: str | None = None,
    ) -> str:
        """Add a commit on `branch` (created from `main` if missing) and move the branch; returns its sha.

        `files` is applied over the parent's tree: bytes add or replace a file, None deletes it.
        """
        repo = self._repo(repo_type, repo_id)
        parent_sha = repo.refs.get(branch) or repo.refs.get("main")
        parent = repo.commits[parent_sha] if parent_sha else None
        contents = {path: entry.data for path, entry in parent.files.items()} if parent else {}
        for path, data in files.items():
            path = path.strip("/")
            if data is None:
                contents.pop(path, None)
            else:
                contents[path] = bytes(data)
        entries = {path: self._file(path, data, repo.lfs_threshold) for path, data in sorted(contents.items())}
        root: dict[str, Any] = {}
        for path, entry in entries.items():
            node = root
            *folders, name = path.split("/")
            for folder in folders:
                node = node.setdefault(folder, {})
            node[name] = entry
        dirs: dict[str, str] = {}
        tree = _tree_sha1(root, dirs, "")
        timestamp = _EPOCH + 60 * len(repo.commits)
        message = message if message is not None else f"commit {len(repo.commits) + 1}"
        identity = f"FakeHub <fakehub@example.com> {timestamp} +0000"
        body = f"tree {tree}\n" + (f"parent {parent_sha}\n" if parent_sha else "")
        body += f"author {identity}\ncommitter {identity}\n\n{repo.repo_type}s/{repo.repo_id}: {message}\n"
        raw = body.encode()
        sha = hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest()
        last_commit: dict[str, str] = {}
        for path, oid in [*((p, e.oid) for p, e in entries.items()), *dirs.items()]:
            unchanged = parent is not None and (
                parent.files[path].oid == oid if path in parent.files else parent.dirs.get(path) == oid
            )
            last_commit[path] = parent.last_commit[path] if unchanged and parent else sha
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        repo.commits[sha] = Commit(sha, parent_sha, message, date, entries, dirs, last_commit)
        repo.refs[branch] = sha
        return sha

    def set_ref(self, repo_id: str, name: str, sha: str | None, repo_type: str = "model") -> None:
        """Point a branch or tag (`v1.0`, `refs/pr/1`, ...) at a commit; `sha=None` deletes it."""
        repo = self._repo(repo_type, repo_id)
        if sha is None:
            repo.refs.pop(name, None)
            return
        if sha not in repo.commits:
            raise ValueError(f"no commit {sha} in {repo_id}")
        repo.refs[name] = sha

    def head(self, repo_id: str, ref: str = "main", repo_type: str = "model") -> str:
        """The commit sha a ref (or sha) resolves to."""
        sha = self._repo(repo_type, repo_id).resolve(ref)
        if sha is None:
            raise KeyError(ref)
        return sha

    def file(self, repo_id: str, path: str, rev: str = "main", repo_type: str = "model") -> RepoFile:
        """The file entry (data, oid, sha256, lfs flag) as of `rev`."""
        return self._repo(repo_type, repo_id).commits[self.head(repo_id, rev, repo_type)].files[path]

    def signed_url(self, sha: str) -> str:
        """A fresh signed storage URL for an LFS blob, as a resolve redirect would give."""
        signature = secrets.token_hex(16)
        expires = time.time() + self.url_ttl
        self._signatures[signature] = (sha, expires)
        return f"{self.storage_url}/blobs/{sha}?X-Amz-Signature={signature}&Expires={int(expires)}"

    def redirect(self, prefix: str, target: str, status: int = 307) -> None:
        """Answer Hub requests whose raw path starts with `prefix` with `status` to `target` + the rest (and query)."""
        self.redirects[prefix] = (status, target)

    def expire_urls(self) -> None:
        """Invalidate every signed URL handed out so far (storage then answers 403)."""
        self._signatures.clear()

    def corrupt(self, sha: str, on: bool = True) -> None:
        """Make the storage host serve this blob with every byte flipped (same length, same ETag)."""
        if on:
            self.corrupted.add(sha)
        else:
            self.corrupted.discard(sha)

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        return self.repos[(repo_type, repo_id)]

    def _file(self, path: str, data: bytes, lfs_threshold: int) -> RepoFile:
        if len(data) < lfs_threshold:
            return RepoFile(path, data, False, git_blob_sha1(data), sha256(data), 0)
        digest = sha256(data)
        pointer = _LFS_POINTER.format(oid=digest, size=len(data)).encode()
        self.blobs[digest] = data
        return RepoFile(path, data, True, git_blob_sha1(pointer), digest, len(pointer))

    # ---------------------------------------------------------------- log helpers

    def requests(self, host: str | None = None, method: str | None = None, contains: str = "") -> list[HubRequest]:
        return [
            r for r in self.log
            if (host is None or r.host == host) and (method is None or r.method == method) and contains in r.path
        ]

    def storage_gets(self, sha: str | None = None) -> list[HubRequest]:
        """GETs that reached the storage host (for one blob if `sha` is given)."""
        return self.requests("storage", "GET", f"/blobs/{sha}" if sha else "/blobs/")

    def resolves(self, path_suffix: str = "", method: str | None = None) -> list[HubRequest]:
        """HEAD/GET requests on `…/resolve/…` whose raw path ends with `path_suffix`."""
        return [r for r in self.requests("hub", method, "/resolve/") if r.path.endswith(path_suffix)]

    def xet_requests(self) -> list[HubRequest]:
        """Requests a client only makes when it decided to use xet (token refresh, CAS)."""
        return [r for r in self.log if "xet-read-token" in r.path or "/reconstructions/" in r.path]

    def clear_log(self) -> None:
        self.log.clear()

    # ---------------------------------------------------------------- hub host

    def _record(self, request: web.Request, host: str) -> None:
        authorization = request.headers.get("Authorization")
        self.log.append(HubRequest(
            request.method, host, request.rel_url.raw_path, request.headers.get("Range"), authorization is not None,
            request.rel_url.raw_query_string, authorization, dict(request.headers),
        ))

    async def _handle_hub(self, request: web.Request) -> web.StreamResponse:
        self._record(request, "hub")
        if self.down:
            return web.Response(status=self.down_status, text="hub is down")
        redirect = self._redirect(request)
        if redirect is not None:
            return redirect
        segments = [unquote(s) for s in request.rel_url.raw_path.split("/")[1:]]
        if segments[:1] == ["api"]:
            if segments[1:] == ["agent-harnesses"]:
                return _error(404, None, "Not Found")
            if len(segments) >= 3 and segments[1] in _API_TYPES:
                return await self._handle_api(request, _API_TYPES[segments[1]], segments[2:])
            return _error(404, None, "Not Found")
        repo_type = "model"
        if segments and segments[0] in _PREFIXES:
            repo_type, segments = _PREFIXES[segments[0]], segments[1:]
        parsed = self._split_repo(repo_type, segments, ("resolve",), min_rest=2)
        if parsed is None:
            return _error(404, None, "Not Found")
        repo_id, _, rest = parsed
        if request.method not in ("GET", "HEAD"):
            return _error(405, None, "Method Not Allowed")
        return self._resolve(request, repo_type, repo_id, rest[0], "/".join(rest[1:]))

    def _redirect(self, request: web.Request) -> web.Response | None:
        path, query = request.rel_url.raw_path, request.rel_url.raw_query_string
        for prefix, (status, target) in self.redirects.items():
            if path.startswith(prefix):
                location = target + path[len(prefix):] + (f"?{query}" if query else "")
                return web.Response(status=status, headers={"Location": location})
        return None

    def _split_repo(
        self, repo_type: str, segments: list[str], actions: tuple[str, ...], min_rest: int,
    ) -> tuple[str, str, list[str]] | None:
        """Split `{repo_id}/{action}/{rest…}` where repo_id has one or two segments (an existing repo wins)."""
        candidates = [
            ("/".join(segments[:n]), segments[n], segments[n + 1:])
            for n in (2, 1)
            if len(segments) >= n + 1 + min_rest and segments[n] in actions and all(segments[:n])
        ]
        for candidate in candidates:
            if (repo_type, candidate[0]) in self.repos:
                return candidate
        return candidates[0] if candidates else None

    def _access(self, request: web.Request, repo_type: str, repo_id: str, files: bool) -> Repo | web.Response:
        """The repo, or the Hub's error: RepoNotFound for missing/private, GatedRepo for gated file access."""
        repo = self.repos.get((repo_type, repo_id))
        token = _bearer(request)
        allowed = repo is not None and token is not None and token in repo.tokens
        if repo is None or (repo.private and not allowed):
            return _error(401, "RepoNotFound", "Repository not found")
        if repo.gated and files and not allowed:
            return _error(
                403, "GatedRepo",
                f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{REPO_TYPES[repo_type]}{repo_id} to ask for access.",
            )
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit | web.Response:
        sha = repo.resolve(rev)
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo.commits[sha]

    def _resolve(self, request: web.Request, repo_type: str, repo_id: str, rev: str, path: str) -> web.StreamResponse:
        repo = self._access(request, repo_type, repo_id, files=True)
        if isinstance(repo, web.Response):
            return repo
        commit = self._commit(repo, rev)
        if isinstance(commit, web.Response):
            return commit
        entry = commit.files.get(path)
        if entry is None:
            return _error(404, "EntryNotFound", "Entry not found", X_Repo_Commit=commit.sha)
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if not entry.lfs:
            content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
            name = path.rsplit("/", 1)[-1]
            plain = name.encode("ascii", "replace").decode().replace('"', "_")
            headers.update({
                "ETag": f'"{entry.oid}"',
                "Content-Type": content_type,
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{plain}\";",
            })
            return _bytes_response(request, entry.data, headers)
        location = self.signed_url(entry.sha256)
        headers.update({
            "Location": location,
            "ETag": f'"{entry.oid}"',
            "X-Linked-Etag": f'"{entry.sha256}"',
            "X-Linked-Size": str(entry.size),
        })
        if self.advertise_xet:
            refresh = f"/api/{repo_type}s/{repo_id}/xet-read-token/{commit.sha}"
            headers.update({
                "X-Xet-Hash": xet_hash(entry.data),
                "X-Xet-Refresh-Route": refresh,
                "Link": f'<{self.url}{refresh}>; rel="xet-auth", '
                        f'<{self.url}/cas/v1/reconstructions/{xet_hash(entry.data)}>; rel="xet-reconstruction-info"',
            })
        text = f"Found. Redirecting to {location}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(text))
            return web.Response(status=302, headers=headers, content_type="text/plain")
        return web.Response(status=302, headers=headers, text=text)

    async def _handle_api(self, request: web.Request, repo_type: str, segments: list[str]) -> web.StreamResponse:
        if segments[-1:] == ["auth-check"] and 2 <= len(segments) <= 3:  # HfApi.auth_check: may this token read?
            repo = self._access(request, repo_type, "/".join(segments[:-1]), files=True)
            return repo if isinstance(repo, web.Response) else web.json_response({})
        parsed = self._split_repo(repo_type, segments, _ACTIONS, min_rest=1)
        if parsed is None:
            if len(segments) > 2 or request.method not in ("GET", "HEAD"):
                return _error(404, None, "Not Found")
            return self._repo_info(request, repo_type, "/".join(segments), "main")
        repo_id, action, rest = parsed
        if action == "revision" and len(rest) == 1 and request.method in ("GET", "HEAD"):
            return self._repo_info(request, repo_type, repo_id, rest[0])
        if action == "tree" and request.method in ("GET", "HEAD"):
            return self._tree(request, repo_type, repo_id, rest[0], "/".join(rest[1:]).strip("/"))
        if action == "paths-info" and len(rest) == 1 and request.method == "POST":
            return await self._paths_info(request, repo_type, repo_id, rest[0])
        if action == "xet-read-token":
            return _error(404, None, "xet is not emulated by FakeHub")
        return _error(404, None, "Not Found")

    def _entry_json(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        if path in commit.files:
            entry = commit.files[path]
            info: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs:
                info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
                if self.advertise_xet:
                    info["xetHash"] = xet_hash(entry.data)
        else:
            info = {"type": "directory", "oid": commit.dirs[path], "size": 0, "path": path}
        if expand:
            last = repo.commits[commit.last_commit[path]]
            info["lastCommit"] = {"id": last.sha, "title": last.message, "date": last.date}
        return info

    def _repo_info(self, request: web.Request, repo_type: str, repo_id: str, rev: str) -> web.Response:
        repo = self._access(request, repo_type, repo_id, files=False)
        if isinstance(repo, web.Response):
            return repo
        commit = self._commit(repo, rev)
        if isinstance(commit, web.Response):
            return commit
        blobs = _truthy(request.query.get("blobs"))
        siblings = []
        for entry in commit.files.values():
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            siblings.append(sibling)
        first = repo.commits[min(repo.commits, key=lambda sha: repo.commits[sha].date)]
        gated = repo.gated if isinstance(repo.gated, str) else ("manual" if repo.gated else False)
        body: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0] if "/" in repo_id else None,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": first.date,
            "private": repo.private,
            "gated": gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry.size for entry in commit.files.values()),
        }
        if repo_type == "model":
            body["modelId"] = repo_id
        return web.json_response(body)

    def _tree(self, request: web.Request, repo_type: str, repo_id: str, rev: str, path: str) -> web.Response:
        repo = self._access(request, repo_type, repo_id, files=False)
        if isinstance(repo, web.Response):
            return repo
        commit = self._commit(repo, rev)
        if isinstance(commit, web.Response):
            return commit
        if path not in commit.dirs:
            return _error(
                404, "EntryNotFound", f'{path} does not exist on "{rev}"', X_Repo_Commit=commit.sha,
            )
        recursive = _truthy(request.query.get("recursive"))
        expand = _truthy(request.query.get("expand"))
        paths = list(self._walk(commit, path, recursive))
        try:
            offset = int(base64.urlsafe_b64decode(request.query.get("cursor", "") + "==").decode() or 0)
        except ValueError:
            return _error(400, None, "Invalid cursor")
        size = self.page_size_expand if expand else self.page_size
        page = paths[offset:offset + size]
        headers = {}
        if offset + size < len(paths):
            cursor = base64.urlsafe_b64encode(str(offset + size).encode()).decode().rstrip("=")
            query = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}&cursor={cursor}"
            headers["Link"] = f'<{self.next_page_origin or self.url}{request.rel_url.raw_path}?{query}>; rel="next"'
        return web.json_response([self._entry_json(repo, commit, p, expand) for p in page], headers=headers)

    @staticmethod
    def _walk(commit: Commit, directory: str, recursive: bool) -> Iterator[str]:
        """Entries under `directory` in git tree order (a directory before its contents)."""
        prefix = f"{directory}/" if directory else ""
        children: set[str] = set()
        for path in [*commit.files, *commit.dirs]:
            if path and path.startswith(prefix) and path != directory:
                children.add(prefix + path[len(prefix):].split("/")[0])
        for child in sorted(children, key=lambda p: p + "/" if p in commit.dirs else p):
            yield child
            if recursive and child in commit.dirs:
                yield from FakeHub._walk(commit, child, recursive)

    async def _paths_info(self, request: web.Request, repo_type: str, repo_id: str, rev: str) -> web.Response:
        repo = self._access(request, repo_type, repo_id, files=False)
        if isinstance(repo, web.Response):
            return repo
        commit = self._commit(repo, rev)
        if isinstance(commit, web.Response):
            return commit
        if request.content_type == "application/json":
            payload = await request.json()
            paths, expand = list(payload.get("paths", [])), bool(payload.get("expand", False))
        else:
            form = await request.post()
            paths, expand = [str(p) for p in form.getall("paths", [])], _truthy(str(form.get("expand", "")))
        found = [p.strip("/") for p in paths if p.strip("/") in commit.files or p.strip("/") in commit.dirs]
        return web.json_response([self._entry_json(repo, commit, p, expand) for p in dict.fromkeys(found)])

    # ---------------------------------------------------------------- storage host

    async def _handle_storage(self, request: web.Request) -> web.StreamResponse:
        self._record(request, "storage")
        if self.storage_down:
            return web.Response(status=self.down_status, text="storage is down")
        match = re.fullmatch(r"/blobs/([0-9a-f]{64})", request.rel_url.raw_path)
        if request.method not in ("GET", "HEAD") or match is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        sha = match.group(1)
        if self.check_signatures:
            signed = self._signatures.get(request.query.get("X-Amz-Signature", ""))
            if signed is None or signed[0] != sha:
                return _s3_error(403, "AccessDenied", "Invalid signature")
            if signed[1] < time.time():
                return _s3_error(403, "AccessDenied", "Request has expired")
        data = self.blobs.get(sha)
        if data is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if sha in self.corrupted:
            data = flipped(data)
        headers = {
            "ETag": f'"{sha}"',
            "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Cache-Control": "public, max-age=604800, immutable",
        }
        response = _bytes_response(request, data, headers, stream=True)
        if not isinstance(response, _Stream):
            return response
        await response.prepare(request)
        for offset in range(0, len(response.data), 65536):
            await response.write(response.data[offset:offset + 65536])
            if self.storage_bytes_per_second:
                await asyncio.sleep(65536 / self.storage_bytes_per_second)
        await response.write_eof()
        self.completed += 1
        return response


class _Stream(web.StreamResponse):
    """A prepared-later response whose body (`data`) the caller writes."""

    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        super().__init__(status=status, headers=headers)
        self.data = data


def _bytes_response(
    request: web.Request, data: bytes, headers: dict[str, str], stream: bool = False,
) -> web.StreamResponse:
    """200 / 206 / 304 / 416 for `data` with RFC 9110 Range, If-Range and If-None-Match against `headers["ETag"]`."""
    etag = headers.get("ETag")
    if_none_match = request.headers.get("If-None-Match")
    if etag and if_none_match and {"*", etag} & {value.strip() for value in if_none_match.split(",")}:
        return web.Response(status=304, headers=headers)
    wanted = _parse_range(request.headers.get("Range"), len(data))
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        wanted = None
    if wanted == "unsatisfiable":
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
    status, body = 200, data
    if isinstance(wanted, tuple):
        first, last = wanted
        headers = {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"}
        status, body = 206, data[first:last + 1]
    headers = {**headers, "Content-Length": str(len(body))}
    if request.method == "HEAD":
        return web.Response(status=status, headers=headers)
    if stream:
        return _Stream(status, headers, body)
    return web.Response(status=status, headers={k: v for k, v in headers.items() if k != "Content-Length"}, body=body)


def _s3_error(status: int, code: str, message: str) -> web.Response:
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, text=xml, content_type="application/xml")

