"""Preheat: `POST /v1/warm` fills the cache in the background with objects named by URLs; `GET /v1/warm/{id}` reports.

URLs: `s3://bucket/key` or `s3://bucket/prefix/` (every key under it), `gcs://bucket/object` or
`gcs://bucket/prefix/`, `hf://org/model@rev[/path]` (a whole repo at a revision, or the files
under a path; `hf://datasets/org/name@rev` for datasets). The scheme names a configured source,
or else the first source of that type. Objects are filled through the same cache as requests
(single flight, checks, peers), a few at a time; with `pin: true` their chunks are never evicted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bdn.cache.object_cache import ObjectCache
from bdn.config import Config
from bdn.errors import BadRequest, BdnError, NotFound, UpstreamError
from bdn.objects import ObjectRef, checked_key, chunk_name, has_utf8
from bdn.sources.gcs import GcsSource
from bdn.sources.hf import HfSource, HubFile, check_repo
from bdn.sources.s3 import S3Source
from bdn.state import CACHE_KEY, CONFIG_KEY

log = logging.getLogger("bdn.warm")
OBJECTS_AT_ONCE = 4  # objects filled at once by all preheat jobs of the node together
MAX_URLS = 1000
FINISHED_TTL = 3600.0  # seconds a finished job's report stays readable
MAX_FINISHED = 1000  # finished jobs kept at most (the oldest go first)


@dataclass
class Job:
    """One preheat: its URLs, and progress as objects and bytes done out of the total known so far."""

    id: str
    urls: list[str]
    pin: bool
    state: str = "running"  # running | done | failed
    objects_total: int = 0
    objects_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    errors: list[str] = field(default_factory=list)
    finished_at: float | None = None  # time.monotonic() when it ended

    def report(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "objects": {"done": self.objects_done, "total": self.objects_total},
                "bytes": {"done": self.bytes_done, "total": self.bytes_total}, "errors": self.errors}


class Warmer:
    """The preheat jobs of one app."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(OBJECTS_AT_ONCE)  # node-wide: 100 jobs do not make 100x the fills

    def _forget_finished(self) -> None:
        finished = [job for job in self.jobs.values() if job.finished_at is not None]
        now = time.monotonic()
        for index, job in enumerate(finished):  # in start order
            if len(finished) - index > MAX_FINISHED or now - (job.finished_at or now) > FINISHED_TTL:
                del self.jobs[job.id]

    def start(self, cache: ObjectCache, config: Config, urls: list[str], pin: bool) -> Job:
        self._forget_finished()
        job = Job(str(next(self._ids)), urls, pin)
        self.jobs[job.id] = job
        task = asyncio.ensure_future(self._run(job, cache, config))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: Job, cache: ObjectCache, config: Config) -> None:
        refs: list[tuple[ObjectRef, bool]] = []
        for url in job.urls:
            try:
                refs.extend(await expand(cache, config, url))
            except BdnError as exc:
                job.errors.append(f"{url}: {exc.detail}")
            except Exception:  # a bug of bdn's: logged, and the job still ends
                log.exception("preheat %s: expanding %r failed", job.id, url)
                job.errors.append(f"{url}: unexpected error; see the daemon's log")
        job.objects_total = len(refs)

        async def one(ref: ObjectRef, immutable: bool) -> None:
            async with self._gate:
                try:
                    await fill_object(cache, ref, immutable, job)
                except BdnError as exc:
                    job.errors.append(f"{ref.source}/{ref.path}: {exc.detail}")
                except Exception:  # a bug of bdn's: logged, and the job still ends (it stayed "running")
                    log.exception("preheat %s: filling %s/%s failed", job.id, ref.source, ref.path)
                    job.errors.append(f"{ref.source}/{ref.path}: unexpected error; see the daemon's log")
                job.objects_done += 1

        await asyncio.gather(*(one(ref, immutable) for ref, immutable in refs))
        job.state = "failed" if job.errors else "done"
        job.finished_at = time.monotonic()
        log.info("preheat %s %s: %d objects, %d bytes, %d errors", job.id, job.state, job.objects_done,
                 job.bytes_done, len(job.errors))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def fill_object(cache: ObjectCache, ref: ObjectRef, immutable: bool, job: Job) -> None:
    """Every chunk of the object on this node (and pinned if the job says so), checked like any read."""
    version = await cache.version(ref, immutable=immutable)
    if not version.info.pinnable:
        raise UpstreamError("the upstream gives this object no strong ETag or Last-Modified that its reads keep to; "
                            "bdn serves it straight through and cannot preheat it")
    job.bytes_total += version.info.size
    indices = version.chunk_indices(0, version.info.size, cache.chunk_bytes)
    cache.prefetch(version, indices)
    for index in indices:
        os.close(await cache.whole_chunk(version, index))
    await cache.verify(version)
    if job.pin:
        await cache.disk.pin([chunk_name(version.id, index) for index in indices])
    job.bytes_done += version.info.size


def _source_for(config: Config, scheme: str) -> str:
    if scheme in config.sources:
        return scheme
    for name, source in config.sources.items():
        if source.type == scheme:
            return name
    raise NotFound(f"no source named or of type {scheme!r}")


async def expand(cache: ObjectCache, config: Config, url: str) -> list[tuple[ObjectRef, bool]]:
    """The objects a preheat URL names, each with whether it is immutable (named by commit)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise BadRequest(f"not a preheat URL: {url!r}")
    name = _source_for(config, scheme)
    source = cache.sources[name]
    if isinstance(source, HfSource):
        return [(ObjectRef(name, file.path), True) for file in await _hub_files(source, rest)]
    checked_key(rest)  # as a request's path is: no `..` segment may walk out of an http source's base_url
    bucket, _, key = rest.partition("/")
    if not isinstance(source, (S3Source, GcsSource)) or (key and not key.endswith("/")):
        return [(ObjectRef(name, rest), False)]  # one object (an http source's path, or bucket/key)
    if isinstance(source, S3Source):
        keys = await source.list_keys(bucket, key)
    else:
        keys = await source.list_names(bucket, key)
    return [(ObjectRef(name, f"{bucket}/{k}"), False) for k in keys]


async def _hub_files(source: HfSource, rest: str) -> list[HubFile]:
    """`[datasets/|spaces/]org/name@rev[/path]` (or `org/name` for the default branch, whole repo)."""
    repo_type = "model"
    if rest.startswith(("datasets/", "spaces/")):
        kind, _, rest = rest.partition("/")
        repo_type = kind[:-1]
    parts = rest.split("/")
    at = next((i for i, part in enumerate(parts) if "@" in part), None)
    if at is None:
        repo_id, revision, path = rest, "", ""
    else:
        name, _, revision = parts[at].partition("@")
        repo_id, path = "/".join([*parts[:at], name]), "/".join(parts[at + 1:])
    check_repo(repo_type, repo_id)
    sha = str((await source.repo_info(repo_type, repo_id, revision or None))["sha"])
    entries = await source.tree(repo_type, repo_id, sha, None, recursive=True)
    return [HubFile(repo_type, repo_id, sha, entry["path"]) for entry in entries
            if entry["type"] == "file" and (not path or entry["path"] == path or entry["path"].startswith(path + "/"))]


WARMER_KEY = web.AppKey("warmer", Warmer)


async def post_warm(request: web.Request) -> web.Response:
    try:  # JSON is UTF-8 (or UTF-16/32, which json.loads detects): a Content-Type charset is not looked up
        body = json.loads(await request.read())
    except (ValueError, RecursionError):  # not JSON, not Unicode, or nested deeper than the parser goes
        raise BadRequest("the body must be JSON: {\"urls\": [...], \"pin\": false}") from None
    urls = body.get("urls") if isinstance(body, dict) else body
    if not isinstance(urls, list) or not urls or len(urls) > MAX_URLS or not all(
            isinstance(url, str) and has_utf8(url) for url in urls):  # a JSON `\udcff` escape has no UTF-8
        raise BadRequest(f"urls must be a list of 1 to {MAX_URLS} strings")
    pin = bool(body.get("pin", False)) if isinstance(body, dict) else False
    job = request.app[WARMER_KEY].start(request.app[CACHE_KEY], request.app[CONFIG_KEY], urls, pin)
    return web.json_response(job.report(), status=202)


async def get_warm(request: web.Request) -> web.Response:
    job = request.app[WARMER_KEY].jobs.get(request.match_info["id"])
    if job is None:
        raise NotFound("no such preheat job")
    return web.json_response(job.report())
