"""Faults between bdn and its upstreams, injected by a TCP proxy: resets, stalls, 429/5xx, changed objects.

Each source kind (http origin, S3 on moto, GCS on fake-gcs-server) is reached through
`tests/faultproxy.py`. A transient fault is survived (the fill resumes from its last byte; a
busy answer, to the metadata request or to any chunk's read, is retried after its
Retry-After) and the client gets the right bytes; a persistent one ends as a JSON 502/503 or
an aborted connection, never a short body that looks complete, and never leaves a partial or
mixed chunk in the cache. The retry policy's waits themselves (jitter, cap, Retry-After) are
checked directly at the end.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bdn.errors import NotFound, UpstreamBusy, UpstreamUnreachable
from bdn.sources.retry import RetryPolicy, parse_retry_after
from tests.conftest import Bdn, MiB, StartBdn, sha256
from tests.faultproxy import FaultProxy, Mode, Request
from tests.hub import FakeHub
from tests.origin import Origin
from tests.test_gcs import Gcs
from tests.test_http_source import chunk_files, expect_json_error, settle

CHUNK = MiB
SIZE = 3 * CHUNK + 4567
KINDS = ["http", "s3", "gcs"]


@dataclass
class Upstream:
    """One upstream behind a fault proxy: how bdn names it, and how a test stores an object in it."""

    kind: str
    proxy: FaultProxy
    sources: dict[str, Any]
    prefix: str  # the path under bdn for object `name` is prefix + name
    put: Callable[[str, bytes], Awaitable[None]]


@pytest.fixture(params=KINDS)
async def upstream(request: pytest.FixtureRequest, origin: Origin,
                   http: aiohttp.ClientSession) -> AsyncIterator[Upstream]:
    kind = request.param
    if kind == "http":
        target, prefix = origin.url, "up/"

        async def put(name: str, data: bytes) -> None:
            origin.put(name, data)
    elif kind == "s3":
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        target, prefix = request.getfixturevalue("moto_url"), f"up/{bucket}/"

        async def put(name: str, data: bytes) -> None:
            await asyncio.to_thread(s3.put_object, Bucket=bucket, Key=name, Body=data)
    else:
        gcs = Gcs(request.getfixturevalue("gcs_url"), http)
        gcs.bucket = f"faults-{uuid.uuid4().hex[:12]}"  # test_gcs's own counter names its buckets
        await gcs.create()
        target, prefix = gcs.url, f"up/{gcs.bucket}/"

        async def put(name: str, data: bytes) -> None:
            await gcs.put(name, data)
    proxy = FaultProxy(int(urlsplit(target).port or 0))
    await proxy.start()
    sources = {
        "http": {"up": {"type": "http", "base_url": proxy.url}},
        "s3": {"up": {"type": "s3", "endpoint_url": proxy.url, "region": "us-east-1"}},
        "gcs": {"up": {"type": "gcs", "endpoint_url": proxy.url, "token": "anon", "project": "test"}},
    }[kind]
    yield Upstream(kind, proxy, sources, prefix, put)
    await proxy.stop()


async def metric(node: Bdn, http: aiohttp.ClientSession, name: str) -> float:
    async with http.get(f"{node.url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def read_outcome(http: aiohttp.ClientSession, url: str, size: int) -> int | str:
    """The status of a JSON error, or 'aborted' for a body cut short; fails on a short body that looks complete."""
    try:
        async with http.get(url) as response:
            if response.status >= 500:
                await expect_json_error(response, response.status)
                return response.status
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            got = await response.read()
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "aborted"
    raise AssertionError(f"a failed fill was served as a complete {len(got)}-byte answer of {size}")


async def stored(upstream: Upstream, name: str) -> bytes:
    data = os.urandom(SIZE)
    await upstream.put(name, data)
    return data


@pytest.mark.parametrize("mode", ["reset", "truncate", "stall"])
async def test_mid_body_fault_resumes_from_the_last_byte(start_bdn: StartBdn, upstream: Upstream,
                                                         http: aiohttp.ClientSession, mode: Mode) -> None:
    data = await stored(upstream, "resume.bin")
    node = await start_bdn(upstream.sources, upstream={"read_timeout": "500ms"})
    upstream.proxy.mode, upstream.proxy.after, upstream.proxy.faults = mode, 300_000, 1
    async with http.get(f"{node.url}/{upstream.prefix}resume.bin") as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data)
    assert upstream.proxy.faulted == 1
    assert await metric(node, http, "bdn_upstream_retries_total") >= 1
    async with http.get(f"{node.url}/{upstream.prefix}resume.bin", headers={"Range": "bytes=1000-2999999"}) as response:
        assert response.status == 206
        assert response.headers["X-Cache"].startswith("HIT")
        assert await response.read() == data[1000:3000000]


async def test_resume_asks_for_the_missing_bytes_only(start_bdn: StartBdn, origin: Origin,
                                                      http: aiohttp.ClientSession) -> None:
    data = os.urandom(SIZE)
    origin.put("r.bin", data)
    proxy = FaultProxy(int(urlsplit(origin.url).port or 0), mode="reset", after=300_000, faults=1)
    await proxy.start()
    try:
        node = await start_bdn({"up": {"type": "http", "base_url": proxy.url}})
        async with http.get(f"{node.url}/up/r.bin", headers={"Range": f"bytes=0-{CHUNK - 1}"}) as response:
            assert await response.read() == data[:CHUNK]
    finally:
        await proxy.stop()
    ranges = [entry.range for entry in origin.gets("r.bin")]
    resumed = [r for r in ranges if r is not None and not r.startswith("bytes=0-")]
    assert len(resumed) == 1, ranges
    first = int(resumed[0][len("bytes="):].split("-")[0])
    assert 0 < first <= 300_000 and resumed[0].endswith(f"-{CHUNK - 1}"), ranges


@pytest.mark.parametrize("mode", ["reset", "stall"])
async def test_persistent_mid_body_fault_aborts_and_commits_nothing(start_bdn: StartBdn, upstream: Upstream,
                                                                    http: aiohttp.ClientSession, tmp_path: Path,
                                                                    mode: Mode) -> None:
    data = await stored(upstream, "broken.bin")
    node = await start_bdn(upstream.sources, upstream={"read_timeout": "300ms", "retries": 2})
    upstream.proxy.mode, upstream.proxy.after = mode, 300_000
    assert await read_outcome(http, f"{node.url}/{upstream.prefix}broken.bin", len(data)) in (502, "aborted")
    await settle(tmp_path / "cache")
    tail = data[3 * CHUNK:]  # shorter than the fault's threshold: the one chunk that can complete
    assert [path.read_bytes() for path in chunk_files(tmp_path / "cache")] in ([], [tail]), "nothing partial"
    upstream.proxy.mode = "pass"
    async with http.get(f"{node.url}/{upstream.prefix}broken.bin") as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_busy_upstream_is_retried_after_its_retry_after(start_bdn: StartBdn, upstream: Upstream,
                                                              http: aiohttp.ClientSession, status: int) -> None:
    data = await stored(upstream, "busy.bin")
    node = await start_bdn(upstream.sources)
    upstream.proxy.mode, upstream.proxy.status, upstream.proxy.retry_after, upstream.proxy.faults = (
        "status", status, "1", 2)
    began = time.monotonic()
    async with http.get(f"{node.url}/{upstream.prefix}busy.bin") as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data)
    assert time.monotonic() - began >= 1.0, "Retry-After: 1 was honoured"
    assert upstream.proxy.faulted == 2
    assert await metric(node, http, "bdn_upstream_retries_total") >= 1


@pytest.mark.parametrize(("status", "answer"), [(429, 503), (503, 503), (500, 502), (502, 502)])
async def test_persistently_busy_upstream_is_a_json_error(start_bdn: StartBdn, upstream: Upstream,
                                                          http: aiohttp.ClientSession, status: int,
                                                          answer: int) -> None:
    await stored(upstream, "down.bin")
    node = await start_bdn(upstream.sources)
    upstream.proxy.mode, upstream.proxy.status, upstream.proxy.retry_after = "status", status, "0"
    async with http.get(f"{node.url}/{upstream.prefix}down.bin") as response:
        await expect_json_error(response, answer, "upstream_busy")
        if answer == 503:
            assert response.headers["Retry-After"] == "0"
    assert await metric(node, http, "bdn_upstream_retries_total") == 3


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_answer_to_a_later_chunk_is_retried_after_its_retry_after(
        start_bdn: StartBdn, upstream: Upstream, http: aiohttp.ClientSession, status: int) -> None:
    """The metadata and chunk 0 come back fine; chunk 1's read is answered `status` with Retry-After: 1
    once, so it is the fill (not the metadata request) that waits and resumes."""
    data = await stored(upstream, "later.bin")
    node = await start_bdn(upstream.sources)
    proxy = upstream.proxy
    reads_of_chunk_1: list[float] = []

    async def note(request: Request) -> None:
        if request.range_start == CHUNK:
            reads_of_chunk_1.append(time.monotonic())

    proxy.mode, proxy.status, proxy.retry_after = "status", status, "1"
    proxy.range_start, proxy.faults, proxy.on_request = CHUNK, 1, note
    async with http.get(f"{node.url}/{upstream.prefix}later.bin") as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data)
    assert proxy.faulted == 1
    assert len(reads_of_chunk_1) == 2, "chunk 1 was asked for twice: the busy answer and its retry"
    assert reads_of_chunk_1[1] - reads_of_chunk_1[0] >= 1.0, "the fill waited out Retry-After: 1"
    assert await metric(node, http, "bdn_upstream_retries_total") == 1


@pytest.mark.parametrize("where", ["before the first byte", "mid-body"])
async def test_a_persistently_busy_later_chunk_is_a_503_or_an_abort(
        start_bdn: StartBdn, upstream: Upstream, http: aiohttp.ClientSession, tmp_path: Path, where: str) -> None:
    """Every read of chunk 1 is answered 503 (Retry-After: 1) while the metadata request and the other
    chunks succeed: a client asking from chunk 1 on hears a JSON 503 passing the Retry-After on; one
    already receiving chunk 0 sees its connection aborted. Chunk 1 is never cached."""
    data = await stored(upstream, "stuck.bin")
    node = await start_bdn(upstream.sources, upstream={"retries": 1})
    proxy = upstream.proxy
    proxy.mode, proxy.status, proxy.retry_after, proxy.range_start = "status", 503, "1", CHUNK
    url = f"{node.url}/{upstream.prefix}stuck.bin"
    began = time.monotonic()
    if where == "mid-body":
        assert await read_outcome(http, url, SIZE) == "aborted"
    else:
        async with http.get(url, headers={"Range": f"bytes={CHUNK}-"}) as response:
            await expect_json_error(response, 503, "upstream_busy")
            assert response.headers["Retry-After"] == "1"
    assert time.monotonic() - began >= 1.0, "the one retry waited out Retry-After: 1 before giving up"
    # Two reads of chunk 1 by its fill (the first try, one retry), and for http and s3 on a cold ranged
    # miss the speculative read of the same chunk alongside the metadata request (dropped, not retried).
    speculated = int(where != "mid-body" and upstream.kind != "gcs")
    assert proxy.faulted == 2 + speculated
    assert await metric(node, http, "bdn_upstream_retries_total") == 1
    await settle(tmp_path / "cache")
    chunks = [data[i:i + CHUNK] for i in range(0, SIZE, CHUNK)]
    cached = [path.read_bytes() for path in chunk_files(tmp_path / "cache")]
    assert chunks[1] not in cached, "the chunk that never came is not cached"
    assert all(piece in chunks for piece in cached), "every cached chunk is whole"
    proxy.mode = "pass"
    async with http.get(url) as response:
        assert response.status == 200
        assert sha256(await response.read()) == sha256(data)


async def test_retry_after_beyond_the_cap_answers_503_at_once(start_bdn: StartBdn, upstream: Upstream,
                                                             http: aiohttp.ClientSession) -> None:
    await stored(upstream, "later.bin")
    node = await start_bdn(upstream.sources, upstream={"retry_max_wait": "2s"})
    upstream.proxy.mode, upstream.proxy.status, upstream.proxy.retry_after = "status", 503, "120"
    async with http.get(f"{node.url}/{upstream.prefix}later.bin") as response:
        await expect_json_error(response, 503, "upstream_busy")
        assert response.headers["Retry-After"] == "120"
    assert await metric(node, http, "bdn_upstream_retries_total") == 0


async def test_object_changed_mid_fill_is_abandoned_and_never_mixed(start_bdn: StartBdn, upstream: Upstream,
                                                                   http: aiohttp.ClientSession,
                                                                   tmp_path: Path) -> None:
    """The object is overwritten between chunk reads: the read of chunk 1, pinned to the old version
    (If-Match for http and s3, the generation for gcs), fails, and the fill is abandoned."""
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    await upstream.put("m.bin", old)
    changed: list[Request] = []

    async def overwrite_before_chunk_1(request: Request) -> None:
        if request.range_start == CHUNK and not changed:
            changed.append(request)
            await upstream.put("m.bin", new)  # lands before the proxy forwards this read

    upstream.proxy.on_request = overwrite_before_chunk_1
    node = await start_bdn(upstream.sources, fill_concurrency=1)
    url = f"{node.url}/{upstream.prefix}m.bin"
    received = bytearray()
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        async with http.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(SIZE)
            old_etag = response.headers["ETag"]
            async for piece in response.content.iter_any():
                received += piece
    assert len(changed) == 1, "the object was overwritten once, just before chunk 1 was read"
    assert len(received) <= CHUNK, "nothing of chunk 1 was sent"
    assert bytes(received) == old[:len(received)], "every byte sent was of the old version"
    await settle(tmp_path / "cache")
    async with http.get(url) as response:  # within metadata_ttl: new only because the change was detected
        assert response.status == 200
        assert response.headers["ETag"] != old_etag
        assert sha256(await response.read()) == sha256(new)
    await settle(tmp_path / "cache")
    old_chunks = [old[i:i + CHUNK] for i in range(0, SIZE, CHUNK)]
    new_chunks = [new[i:i + CHUNK] for i in range(0, SIZE, CHUNK)]
    cached = [path.read_bytes() for path in chunk_files(tmp_path / "cache")]
    assert all(data in old_chunks + new_chunks for data in cached), "a chunk file holds neither one version's chunk"
    assert sorted(new_chunks) == sorted(data for data in cached if data in new_chunks), "the new version, whole"
    assert [data for data in cached if data in old_chunks] in ([], old_chunks[:1]), "of the old, chunk 0 at most"


@pytest.mark.parametrize("side", ["hub", "storage"])
async def test_a_busy_hub_or_storage_host_is_retried(start_bdn: StartBdn, http: aiohttp.ClientSession,
                                                     side: str) -> None:
    hub = FakeHub()
    await hub.start()
    try:
        data = os.urandom(2 * MiB)
        hub.add_repo("acme/tiny", {"model.safetensors": data})
        hub.add_repo("acme/more", {"model.safetensors": os.urandom(2 * MiB)})
        node = await start_bdn({"hf": hub.source()}, upstream={"retry_backoff": "400ms"})
        setattr(hub, "down" if side == "hub" else "storage_down", True)
        asyncio.get_running_loop().call_later(0.2, setattr, hub, "down" if side == "hub" else "storage_down", False)
        async with http.get(f"{node.url}/hf/acme/tiny/resolve/main/model.safetensors") as response:
            assert response.status == 200
            assert await response.read() == data
        assert await metric(node, http, "bdn_upstream_retries_total") >= 1
        setattr(hub, "down" if side == "hub" else "storage_down", True)  # now for good: a JSON 503
        async with http.get(f"{node.url}/hf/acme/more/resolve/main/model.safetensors") as response:
            await expect_json_error(response, 503, "upstream_busy")
    finally:
        await hub.stop()


def test_retry_waits_double_with_jitter_down_to_half_and_stop_at_the_cap() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.1, max_wait=0.5)
    error = UpstreamUnreachable("reset")
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4)):
        waits = [policy.wait(attempt, error) for _ in range(200)]
        assert all(wait is not None and base / 2 <= wait <= base for wait in waits), (attempt, waits)
        assert len(set(waits)) > 1, "the wait is jittered"
    waits = [policy.wait(4, error) for _ in range(200)]
    assert all(wait is not None and 0.4 <= wait <= 0.5 for wait in waits), "0.8 s jittered, capped at max_wait"
    assert {policy.wait(5, error) for _ in range(50)} == {0.5}, "1.6 s jittered is at least 0.8: the cap"
    assert policy.wait(6, error) is None, "no retry beyond `attempts`"
    assert policy.retries == 4 * 200 + 50


def test_retry_after_is_honoured_in_seconds_and_as_an_http_date() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.01, max_wait=60)
    assert parse_retry_after("7") == 7.0
    assert policy.wait(1, UpstreamBusy("busy", status=429, retry_after=parse_retry_after("7"))) == 7.0
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after(in_30s)
    assert seconds is not None and 28 <= seconds <= 30, seconds
    wait = policy.wait(2, UpstreamBusy("busy", status=503, retry_after=seconds))
    assert wait == seconds, "a Retry-After longer than the backoff is the wait"
    assert parse_retry_after(email.utils.formatdate(time.time() - 3600, usegmt=True)) == 0.0, "a past date: now"
    assert policy.wait(1, UpstreamBusy("busy", status=503, retry_after=0.0)) is not None
    for bad in (None, "", "soon", "-1", "1.5", "Wed, 01 Jan 2025 00:00:00"):
        assert parse_retry_after(bad) is None, bad


def test_a_retry_after_beyond_max_wait_ends_the_retries() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.01, max_wait=10)
    assert policy.wait(1, UpstreamBusy("busy", status=503, retry_after=10.0)) == 10.0, "up to the cap it is waited"
    assert policy.wait(1, UpstreamBusy("busy", status=503, retry_after=parse_retry_after("11"))) is None
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert policy.wait(1, UpstreamBusy("busy", status=429, retry_after=parse_retry_after(in_an_hour))) is None
    assert policy.retries == 1, "a retry given up is not counted"


async def test_retry_policy_call_retries_only_what_is_worth_retrying() -> None:
    policy = RetryPolicy(attempts=2, backoff=0.001, max_wait=1)
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise UpstreamBusy("busy", status=503)
        return "ok"

    assert await policy.call("flaky", flaky) == "ok"
    assert len(calls) == 3 and policy.retries == 2

    async def gone() -> str:
        calls.append(1)
        raise NotFound("gone")

    calls.clear()
    with pytest.raises(NotFound):
        await policy.call("gone", gone)
    assert len(calls) == 1, "a 404 is never retried"

    async def down() -> str:
        calls.append(1)
        raise UpstreamUnreachable("refused")

    calls.clear()
    with pytest.raises(UpstreamUnreachable):
        await policy.call("down", down)
    assert len(calls) == 3, "the first try and `attempts` retries, then the error"
