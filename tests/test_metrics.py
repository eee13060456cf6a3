"""/metrics after known traffic: every counter moved by exactly what that traffic should cause."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Bdn, MiB, StartBdn
from tests.origin import Origin


async def samples(http: aiohttp.ClientSession, node: Bdn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(f"{node.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_counters_move_by_exactly_the_traffic(start_bdn: StartBdn, origin: Origin,
                                                    http: aiohttp.ClientSession) -> None:
    body = os.urandom(3 * MiB)
    origin.put("m.bin", body)
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, ram_bytes="64MiB")
    url = f"{node.url}/web/m.bin"
    async with http.get(url) as response:  # cold: 3 chunks from upstream
        assert await response.read() == body
    deadline = time.monotonic() + 10
    while (await samples(http, node)).get(("bdn_fills_in_flight", ())) != 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    async with http.get(url, headers={"Range": "bytes=0-99"}) as response:  # hot, from RAM
        assert response.headers["X-Cache"] == "HIT-RAM"
        assert len(await response.read()) == 100
    async with http.get(f"{node.url}/web/missing.bin") as response:
        assert response.status == 404
    got = await samples(http, node)
    assert got[("bdn_requests_total", (("cache", "MISS"), ("source", "web"), ("status", "200")))] == 1
    assert got[("bdn_requests_total", (("cache", "HIT-RAM"), ("source", "web"), ("status", "206")))] == 1
    assert got[("bdn_requests_total", (("cache", "-"), ("source", "-"), ("status", "404")))] == 1
    assert got[("bdn_served_bytes_total", (("tier", "upstream"),))] == len(body)
    assert got[("bdn_served_bytes_total", (("tier", "ram"),))] == 100
    assert got[("bdn_upstream_bytes_total", ())] == len(body)
    assert got[("bdn_fills_total", ())] == 3
    assert got[("bdn_cache_used_bytes", (("tier", "disk"),))] == len(body)
    assert got[("bdn_cache_used_bytes", (("tier", "ram"),))] == len(body)
    assert got[("bdn_cache_budget_bytes", (("tier", "ram"),))] == 64 * MiB
    assert got[("bdn_ttfb_seconds_count", ())] == 1  # the streamed answer; the small RAM one is one write
    assert got[("bdn_checksum_failures_total", ())] == 0
    assert got[("bdn_fill_seconds_count", ())] == 3
    assert got[("bdn_upstream_requests_total", (("kind", "chunk"),))] == 3
    assert got[("bdn_upstream_requests_total", (("kind", "metadata"),))] == 2  # m.bin and missing.bin
    assert got[("bdn_coalesced_reads_total", ())] >= 0
