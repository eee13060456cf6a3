"""Preheat: POST /v1/warm fills a prefix or a repo in the background; `bdn warm` follows it; pins hold."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
import pytest

from bdn.ops import preheat
from tests.conftest import ROOT, Bdn, MiB, StartBdn
from tests.hub import FakeHub
from tests.origin import Origin
from tests.proxy import CountingProxy


async def finished(http: aiohttp.ClientSession, node: Bdn, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while job["state"] == "running":
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
        async with http.get(f"{node.url}/v1/warm/{job['id']}") as response:
            job = await response.json()
    return job


async def test_prefix_warm_then_reads_need_no_upstream(start_bdn: StartBdn, proxy: CountingProxy, s3: Any,
                                                       bucket: str, http: aiohttp.ClientSession) -> None:
    bodies = {f"llama/shard-{i}.bin": os.urandom(MiB + i) for i in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    s3.put_object(Bucket=bucket, Key="other/x.bin", Body=b"x")
    node = await start_bdn({"s3": {"type": "s3", "endpoint_url": proxy.url, "region": "us-east-1"}},
                           metadata_ttl="1h")
    async with http.post(f"{node.url}/v1/warm", json={"urls": [f"s3://{bucket}/llama/"], "pin": True}) as response:
        assert response.status == 202
        job = await finished(http, node, await response.json())
    assert job["state"] == "done" and job["errors"] == []
    assert job["objects"] == {"done": 3, "total": 3}
    assert job["bytes"]["done"] == job["bytes"]["total"] == sum(map(len, bodies.values()))
    proxy.log.clear()
    for key, body in bodies.items():
        async with http.get(f"{node.url}/s3/{bucket}/{key}") as response:
            assert await response.read() == body
            assert response.headers["X-Cache"].startswith("HIT")
    assert proxy.log == []


async def test_repo_warm_and_the_cli(start_bdn: StartBdn, http: aiohttp.ClientSession) -> None:
    hub = FakeHub()
    await hub.start()
    try:
        files = {"config.json": b"{}", "model.safetensors": os.urandom(2 * MiB + 1)}
        hub.add_repo("acme/tiny", files)
        node = await start_bdn({"hf": hub.source()})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bdn", "warm", "hf://acme/tiny@main", "--node", node.url, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()[-2000:]
        assert out.decode().startswith("2 objects")
        hub.clear_log()
        sha = hub.head("acme/tiny")
        for name, data in files.items():
            async with http.get(f"{node.url}/hf/acme/tiny/resolve/{sha}/{name}") as response:
                assert await response.read() == data
        assert hub.storage_gets() == [], "the LFS file came from the warmed cache"
        bad = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bdn", "warm", "hf://acme/missing@main", "--node", node.url, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(bad.communicate(), 60)
        assert bad.returncode == 1 and b"acme/missing" in err
    finally:
        await hub.stop()


async def test_pinned_objects_are_never_evicted(start_bdn: StartBdn, origin: Origin,
                                                http: aiohttp.ClientSession) -> None:
    bodies = {name: os.urandom(MiB) for name in ("keep.bin", "b.bin", "c.bin", "d.bin")}
    for name, body in bodies.items():
        origin.put(name, body)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, disk_bytes="2MiB", ram_bytes=0)
    async with http.post(f"{node.url}/v1/warm", json={"urls": ["web://keep.bin"], "pin": True}) as response:
        assert (await finished(http, node, await response.json()))["state"] == "done"
    for name in ("b.bin", "c.bin", "d.bin"):  # three more chunks through a two-chunk budget
        async with http.get(f"{node.url}/web/{name}") as response:
            assert await response.read() == bodies[name]
        await asyncio.sleep(0.1)
    async with http.get(f"{node.url}/web/keep.bin") as response:
        assert await response.read() == bodies["keep.bin"]
        assert response.headers["X-Cache"] == "HIT"
    assert len(origin.gets("keep.bin")) == 1


async def test_preheat_fills_are_bounded_node_wide(start_bdn: StartBdn, origin: Origin,
                                                   http: aiohttp.ClientSession) -> None:
    for i in range(12):
        origin.put(f"o{i}.bin", os.urandom(MiB // 2))
    origin.faults.bytes_per_second = 4 * MiB  # each object takes ~0.12 s: twelve jobs at once overlap
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}})
    jobs = []
    for i in range(12):  # twelve jobs of one object each, all at once
        async with http.post(f"{node.url}/v1/warm", json={"urls": [f"web://o{i}.bin"]}) as response:
            jobs.append(await response.json())
    for job in jobs:
        assert (await finished(http, node, job))["state"] == "done"
    assert 1 <= origin.max_in_flight <= preheat.OBJECTS_AT_ONCE, "all jobs together fill a few objects at a time"


async def test_finished_preheat_jobs_are_forgotten_beyond_the_limit(start_bdn: StartBdn, origin: Origin,
                                                                    http: aiohttp.ClientSession,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preheat, "MAX_FINISHED", 2)
    origin.put("x.bin", b"x" * 100)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}})
    ids = []
    for _ in range(4):
        async with http.post(f"{node.url}/v1/warm", json={"urls": ["web://x.bin"]}) as response:
            job = await finished(http, node, await response.json())
            ids.append(job["id"])
    statuses = []
    for job_id in ids:
        async with http.get(f"{node.url}/v1/warm/{job_id}") as response:
            statuses.append(response.status)
    assert statuses == [404, 200, 200, 200], "the oldest finished jobs went; the newest two and the last stay"
