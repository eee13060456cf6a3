"""One structured access line per request, and no credential ever in the log."""

from __future__ import annotations

import json
import logging
import os

import aiohttp
import pytest

from tests.conftest import StartBdn
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
