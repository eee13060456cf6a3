"""One structured access line per request, and no credential ever in the log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import BdnProcess, StartBdn, bdn_config
from tests.origin import Origin

SECRET = "s3cr3t-t0ken-value"


async def test_one_json_line_per_request_without_secrets(start_bdn: StartBdn, origin: Origin,
                                                         http: aiohttp.ClientSession,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    origin.put("a/b.bin", os.urandom(3000))
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}})
    caplog.set_level(logging.INFO, logger="bdn")
    headers = {"Authorization": f"Bearer {SECRET}", "X-Amz-Security-Token": SECRET, "Range": "bytes=0-99"}
    async with http.get(f"{node.url}/web/a/b.bin?X-Amz-Signature={SECRET}", headers=headers) as response:
        assert response.status == 206
        assert len(await response.read()) == 100
    async with http.get(f"{node.url}/web/missing", headers=headers) as response:
        assert response.status == 404
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "bdn.access"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/web/a/b.bin", 206), ("GET", "/web/missing", 404)]
    first = lines[0]
    assert first["bytes"] == 100 and first["cache"] == "MISS" and first["source"] == "web"
    assert first["duration_ms"] >= 0
    assert SECRET not in caplog.text


async def test_a_malformed_request_is_one_short_line(bdn_process: Callable[[dict[str, Any]], BdnProcess],
                                                     origin: Origin, tmp_path: Path) -> None:
    node = bdn_process(bdn_config(tmp_path / "cache", {"web": {"type": "http", "base_url": origin.url}})).start()
    for payload in (b"GET /web/\x00" + SECRET.encode() + b" HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nX-Long: " + SECRET.encode() * 2000 + b"\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        writer.write(payload)
        answer = await reader.read()
        assert answer.startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), answer[:100]
        writer.close()
    assert node.stop() == 0
    log = node.log_path.read_text()
    lines = [line for line in log.splitlines() if "malformed request" in line]
    assert len(lines) == 2 and all(" INFO aiohttp.server malformed request from 127.0.0.1 (" in line for line in lines)
    assert "Traceback" not in log and SECRET not in log
