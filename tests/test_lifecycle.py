"""SIGTERM: the node turns not-ready, refuses new object requests, finishes transfers in flight, exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import BdnProcess, MiB, bdn_config
from tests.origin import Origin


async def test_sigterm_drains_a_long_download(bdn_process: Callable[[dict[str, Any]], BdnProcess], origin: Origin,
                                              tmp_path: Path, http: aiohttp.ClientSession) -> None:
    body = os.urandom(8 * MiB)
    origin.put("long.bin", body)
    origin.faults.bytes_per_second = 4 * MiB  # about 2 s for the whole object
    config = {**bdn_config(tmp_path / "cache", {"web": {"type": "http", "base_url": origin.url}},
                           fill_concurrency=1), "drain_timeout": "30s"}
    node = bdn_process(config).start()
    assert node.proc is not None
    async with http.get(f"{node.url}/web/long.bin") as response:
        first = await response.content.readexactly(MiB)
        node.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with http.get(f"{node.url}/readyz") as ready:
            assert ready.status == 503
        async with http.get(f"{node.url}/web/long.bin") as refused:
            assert refused.status == 503
            assert (await refused.json())["error"] == "draining"
        rest = await response.read()
    assert first + rest == body
    assert await asyncio.to_thread(node.proc.wait, 30) == 0
