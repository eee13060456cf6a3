r"""Load scenarios for bdn, run with locust 2.47.0 (geventhttpclient `FastHttpUser`).

locust monkeypatches the whole process with gevent, so it never shares a process or a venv with
bdn or its tests: it lives in its own venv and talks to a running bdn over 127.0.0.1.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt

Every run is headless and bounded; pick one user class by its name as the last argument:

    timeout 120 .venv-bench/bin/locust -f benchmarks/locustfile.py --headless -u 8 -r 8 -t 30s \
        --host http://127.0.0.1:8080 --only-summary HotWholeObject

Add `--csv PREFIX` or `--json` for machine-readable results, and `--processes 2` to load bdn
harder than one locust process (bound to one core) can. At the end each run also logs
`throughput NAME: N MiB in S s = R MiB/s` for every request name that moved bytes.

Objects are named by their path under `--host`, i.e. `/{source}/{path}` (see README.md). Sizes
accept plain bytes or `KiB`/`MiB`/`GiB` suffixes.

The user classes, with the environment variables they read (defaults in brackets):

- `HotWholeObject`: each user GETs the whole hot object again and again, streaming the body in
  1 MiB reads and discarding it (memory stays at a few MiB per user, whatever the object's size).
  Each GET is reported under `BDN_HOT_PATH` with the time to the last byte and the bytes read;
  locust's `--only-summary` table has no byte column, hence the throughput line.
  `BDN_HOT_PATH` (`/web/hot.bin`), `BDN_HOT_SIZE` (`1GiB`).
- `HotRandomRanges`: each user GETs random ranges of the hot object, at any byte offset (so they
  cross bdn's chunk boundaries), expecting 206, the exact `Content-Range` and body length
  (bodies are streamed and counted too).
  `BDN_HOT_PATH`, `BDN_HOT_SIZE`, `BDN_RANGE_BYTES` (`1MiB`).
- `SmallFiles`: each user GETs one small object again and again, expecting 200.
  `BDN_SMALL_PATH` (`/web/small.bin`), `BDN_SMALL_SIZE` (optional: checked when set).
- `ColdFanIn`: the users wait until all of them are spawned, then all GET the same cold object
  once, at the same moment, and the run ends. `-u` is the fan-in width; keep `-r` >= `-u`.
  `BDN_COLD_PATH` (`/web/cold.bin`), `BDN_COLD_SIZE` (optional: checked when set).

`HotWholeObject` and `HotRandomRanges` measure the hit path: warm the object first (e.g.
`curl -so /dev/null http://127.0.0.1:8080/web/hot.bin`), or the first requests are MISSes.
`BDN_HOT_SIZE` must be the object's real size: every response is checked against it.

`ColdFanIn` measures coalescing: the object must be cold in bdn (a fresh `cache.dir`, or a path
never fetched before), and every user should get it through one shared upstream read. Each user
reports its GET (time to the last byte) and a `TTFB` event named `BDN_COLD_PATH [X-Cache value]`
(time to the first body byte, split by the `X-Cache` header it got). After the last user's GET
the run quits without waiting for `-t`; with `--processes`, each worker's users just stop and
`-t` ends the run.

Bodies are always streamed, in 1 MiB reads (128 KiB ones for bodies under 8 MiB, which 1 MiB
reads would slow down), and dropped as they arrive. Every request is checked (status,
`Content-Length`, the bytes actually received, and the expected size where one is known); a
mismatch is a locust failure, so `--exit-code-on-error` (default 1) makes a wrong answer fail
the run.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from typing import Any

import gevent
import gevent.event
from locust import FastHttpUser, constant, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, WorkerRunner

MiB = 1024 * 1024
# Every body is streamed (`stream=True`), read in pieces and dropped: memory stays at a few MiB per user whatever
# the object's size. geventhttpclient recv()s the whole piece size each time: measured here against bdn, 1 MiB
# pieces stream a large body ~1.5x faster than 128 KiB ones, yet read 1 MiB range bodies ~5x slower (sys time).
BIG_READ = MiB  # for bodies of at least BIG_BODY bytes
SMALL_READ = 128 * 1024
BIG_BODY = 8 * MiB
IDENTITY = {"Accept-Encoding": "identity"}  # byte counts are of the object itself, never of a compressed body

_SIZE_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": MiB, "GIB": 1024 * MiB, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_RE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")

console = logging.getLogger("locust.stats_logger")


def parse_size(text: str) -> int:
    match = _SIZE_RE.fullmatch(text)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 64MiB or 1048576, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def env_size(name: str, default: str) -> int:
    return parse_size(os.environ.get(name) or default)


def env_optional_size(name: str) -> int | None:
    text = os.environ.get(name)
    return parse_size(text) if text else None


HOT_PATH = os.environ.get("BDN_HOT_PATH", "/web/hot.bin")
HOT_SIZE = env_size("BDN_HOT_SIZE", "1GiB")
RANGE_BYTES = env_size("BDN_RANGE_BYTES", "1MiB")
SMALL_PATH = os.environ.get("BDN_SMALL_PATH", "/web/small.bin")
SMALL_SIZE = env_optional_size("BDN_SMALL_SIZE")
COLD_PATH = os.environ.get("BDN_COLD_PATH", "/web/cold.bin")
COLD_SIZE = env_optional_size("BDN_COLD_SIZE")
if HOT_SIZE <= 0 or RANGE_BYTES <= 0:
    raise ValueError("BDN_HOT_SIZE and BDN_RANGE_BYTES must be positive")


def header(resp: ResponseContextManager, name: str) -> str:
    """One response header's value; "" when it is missing or repeated (geventhttpclient gives a list then)."""
    value = resp.headers.get(name) if resp.headers is not None else None
    return value if isinstance(value, str) else ""


def check_head(resp: ResponseContextManager, status: int, expected_size: int | None) -> int | None:
    """The response's Content-Length if its status and length are as expected, else None (and a failure)."""
    resp.request_meta["response_length"] = 0  # locust put Content-Length there; only bytes drain() reads count
    if resp.status_code != status:
        error = getattr(resp, "error", None)
        if resp.status_code == 0:
            resp.failure(f"no response: {error!r}")
        else:
            resp.failure(f"status {resp.status_code}, expected {status}")
        return None
    length = header(resp, "Content-Length")
    if not length.isdigit():
        resp.failure(f"bad Content-Length {length!r}")
        return None
    if expected_size is not None and int(length) != expected_size:
        resp.failure(f"Content-Length {length}, expected {expected_size}")
        return None
    return int(length)


def drain(resp: ResponseContextManager, length: int, started: float, got: int = 0) -> None:
    """Read and discard the rest of a streamed body of `length` bytes (`got` of them already read).

    Records the bytes read and the time to the last byte as the request's; a short body is a failure.
    """
    read_bytes = BIG_READ if length - got >= BIG_BODY else SMALL_READ
    error: Exception | None = None
    try:
        for piece in resp.iter_content(read_bytes, decode_content=False):
            got += len(piece)
            if got >= length:
                break
    except Exception as exc:  # a broken body: geventhttpclient's HTTPParseError, a reset, a read timeout
        error = exc
    resp.request_meta["response_time"] = (time.perf_counter() - started) * 1000
    resp.request_meta["response_length"] = got
    if error is not None:
        resp.failure(f"body read failed: {type(error).__name__}: {error}")
    elif got != length:
        resp.failure("body shorter than its Content-Length")  # no byte counts: locust groups failures by text


class HotWholeObject(FastHttpUser):
    """GET the whole hot object, streamed in 1 MiB reads and thrown away."""

    wait_time = constant(0)

    @task
    def whole_object(self) -> None:
        started = time.perf_counter()
        with self.client.get(HOT_PATH, headers=IDENTITY, stream=True, catch_response=True) as resp:
            length = check_head(resp, 200, HOT_SIZE)
            if length is not None:
                drain(resp, length, started)


class HotRandomRanges(FastHttpUser):
    """GET random ranges of BDN_RANGE_BYTES (default 1 MiB) of the hot object."""

    wait_time = constant(0)

    @task
    def random_range(self) -> None:
        want = min(RANGE_BYTES, HOT_SIZE)
        start = random.randrange(HOT_SIZE - want + 1)
        end = start + want - 1
        started = time.perf_counter()
        with self.client.get(
            HOT_PATH,
            name=f"{HOT_PATH} [{want}-byte ranges]",
            headers={**IDENTITY, "Range": f"bytes={start}-{end}"},
            stream=True,
            catch_response=True,
        ) as resp:
            if check_head(resp, 206, want) is None:
                return
            content_range = header(resp, "Content-Range")
            if content_range != f"bytes {start}-{end}/{HOT_SIZE}":
                # one message per kind of mismatch, not per request: locust groups failures by their text
                total = content_range.rpartition("/")[2]
                if total != str(HOT_SIZE):
                    resp.failure(f"Content-Range total {total!r}, expected {HOT_SIZE}")
                else:
                    resp.failure("Content-Range is not the requested range")
                return
            drain(resp, want, started)


class SmallFiles(FastHttpUser):
    """GET the small object again and again."""

    wait_time = constant(0)

    @task
    def small_file(self) -> None:
        started = time.perf_counter()
        with self.client.get(SMALL_PATH, headers=IDENTITY, stream=True, catch_response=True) as resp:
            length = check_head(resp, 200, SMALL_SIZE)
            if length is not None:
                drain(resp, length, started)


_all_spawned = gevent.event.Event()


@events.spawning_complete.add_listener
def _release_barrier(user_count: int, **_kwargs: Any) -> None:
    _all_spawned.set()


class ColdFanIn(FastHttpUser):
    """All users GET the same cold object once, at the same moment; report TTFB; then the run ends."""

    wait_time = constant(0)
    barrier_timeout = 60.0  # seconds to wait for the other users to spawn before going anyway
    finished = 0  # users of this process that made their one request

    def on_start(self) -> None:
        _all_spawned.wait(timeout=self.barrier_timeout)

    @task
    def fetch_once(self) -> None:
        try:
            self._fetch()
        finally:
            type(self).finished += 1
            runner = self.environment.runner
            if isinstance(runner, LocalRunner) and type(self).finished >= runner.target_user_count:
                gevent.spawn(runner.quit)  # not from this greenlet: quit() stops every user, this one too
        raise StopUser()

    def _fetch(self) -> None:
        started_at = time.time()
        started = time.perf_counter()
        with self.client.get(COLD_PATH, headers=IDENTITY, stream=True, catch_response=True) as resp:
            length = check_head(resp, 200, COLD_SIZE)
            if length is None:
                return
            first = b""
            error: Exception | None = None
            try:
                if length:
                    first = next(resp.iter_content(1, decode_content=False), b"")
                    if not first:
                        error = ConnectionError("connection closed before the first body byte")
            except Exception as exc:  # as in drain()
                error = exc
            ttfb_ms = (time.perf_counter() - started) * 1000
            x_cache = header(resp, "X-Cache") or "no X-Cache"
            self.environment.events.request.fire(
                request_type="TTFB",
                name=f"{COLD_PATH} [{x_cache}]",
                response_time=ttfb_ms,
                response_length=0,
                exception=error,
                context={},
                start_time=started_at,
                url=resp.request_meta["url"],
            )
            if error is not None:
                resp.failure(f"body read failed: {type(error).__name__}: {error}")
                return
            drain(resp, length, started, got=len(first))


@events.quitting.add_listener
def _log_throughput(environment: Environment, **_kwargs: Any) -> None:
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return
    total = runner.stats.total
    seconds = max(total.last_request_timestamp - total.start_time, 1e-9) if total.last_request_timestamp else 0
    for entry in sorted(runner.stats.entries.values(), key=lambda e: (e.name, e.method)):
        if entry.total_content_length and seconds:
            mib = entry.total_content_length / MiB
            console.info(f"throughput {entry.name}: {mib:.1f} MiB in {seconds:.1f} s = {mib / seconds:.1f} MiB/s")
