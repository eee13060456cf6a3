"""Request paths and error answers over HTTP against a running bdn: path tricks are refused, errors are short JSON.

Requests that must not be normalised by a client (raw `..` segments, odd bytes, oversize headers)
are written on a plain socket. A refused path never reaches the upstream, and no file outside the
cache dir is ever created or opened while bdn answers them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yarl

from tests.conftest import Bdn, StartBdn
from tests.proxy import CountingProxy

SECRET = b"top secret: this file is outside the cache dir"


def s3_sources(endpoint: str) -> dict[str, Any]:
    return {"s3": {"type": "s3", "endpoint_url": endpoint, "region": "us-east-1"}}


async def raw_request(base: str, target: str, method: str = "GET",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written byte for byte (no client normalisation); (status, headers, body up to EOF)."""
    url = yarl.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {url.host}:{url.port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        with contextlib.suppress(ConnectionError):  # the server may answer before reading an oversize request
            await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int | tuple[int, ...]) -> str:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert status in allowed, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, text
    doc = json.loads(body)
    assert set(doc) == {"error", "detail"}, doc
    assert isinstance(doc["error"], str) and doc["error"]
    assert isinstance(doc["detail"], str)
    return str(doc["error"])


@pytest.fixture
def seeded(s3: Any, bucket: str) -> dict[str, bytes]:
    objects = {"ok.bin": os.urandom(2000), "a..b.bin": os.urandom(100), "x/.../y.bin": os.urandom(100),
               ".hidden": os.urandom(10)}
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return objects


@pytest.fixture
async def node(start_bdn: StartBdn, proxy: CountingProxy, seeded: dict[str, bytes]) -> Bdn:
    return await start_bdn(s3_sources(proxy.url))


class FileSpy:
    """Records every path opened through os.open / open() (the ways bdn's Python code touches files)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, bytes, os.PathLike)):
                self.paths.append(os.path.abspath(os.fsdecode(file)))
            return real(file, *args, **kwargs)
        return spy


@pytest.fixture
def file_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileSpy]:
    spy = FileSpy()
    monkeypatch.setattr(os, "open", spy.wrap(os.open))
    monkeypatch.setattr(io, "open", spy.wrap(io.open))
    monkeypatch.setattr(builtins, "open", spy.wrap(builtins.open))
    yield spy


def tree(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


BAD_TARGETS = [
    "/s3/models/../ok.bin",
    "/s3/../etc/passwd",
    "/s3/models/../../secret.txt",
    "/s3/models/..",
    "/s3/models/x/../../ok.bin",
    "/s3/models/../ok.bin?x=1",
    "/s3/models/%2e%2e/ok.bin",
    "/s3/models/%2E%2E/ok.bin",
    "/s3/models/.%2e/ok.bin",
    "/s3/models/%2e./ok.bin",
    "/s3/models%2F..%2Fok.bin",
    "/s3/models/%2e%2e%2fok.bin",
    "/s3/models/ok%00.bin",
    "/s3/models/ok.bin%00",
    "/s3/%00",
    "/s3/%2Fetc/passwd",
    "/s3/%2fetc/passwd",
    "/s3//etc",
    "/s3//etc/passwd",
    "/s3/models/%ff",
    "/s3/models/%c3%28.bin",
    "/s3/models/%ed%a0%80.bin",  # a UTF-16 surrogate encoded as UTF-8: not valid UTF-8
    "/%ff/models/ok.bin",
    "/s3/models/" + "a" * 5000,  # longer than bdn's 4096-byte path limit
]


@pytest.mark.parametrize("target", BAD_TARGETS)
async def test_path_tricks_are_400(node: Bdn, proxy: CountingProxy, target: str) -> None:
    status, headers, body = await raw_request(node.url, target)
    assert assert_json_error(status, headers, body, 400) == "bad_request"
    assert proxy.log == [], "a refused path never reaches the upstream"


@pytest.mark.parametrize("target", [*BAD_TARGETS[:3], "/s3/models/%2e%2e/ok.bin", "/s3/%2Fetc/passwd"])
async def test_path_tricks_sent_by_aiohttp_unnormalised(node: Bdn, proxy: CountingProxy,
                                                        http: aiohttp.ClientSession, target: str) -> None:
    async with http.get(yarl.URL(node.url + target, encoded=True)) as response:
        body = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
        assert_json_error(response.status, headers, body, 400)
    assert proxy.log == []


async def test_raw_non_utf8_byte_in_target(node: Bdn, proxy: CountingProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", yarl.URL(node.url).port)
    writer.write(b"GET /s3/models/\xff\xfe.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    assert 400 <= status < 500, data[:300]
    assert b"Traceback" not in data
    assert proxy.log == []


async def test_names_with_dots_that_are_not_dot_dot_segments_are_allowed(node: Bdn, seeded: dict[str, bytes]) -> None:
    for key, target in (("a..b.bin", "/s3/models/a..b.bin"), ("x/.../y.bin", "/s3/models/x/.../y.bin"),
                        (".hidden", "/s3/models/.hidden"), ("ok.bin", "/s3/models/%6Fk.bin"),
                        ("ok.bin", "/%73%33/models/ok.bin")):
        status, _, body = await raw_request(node.url, target)
        assert status == 200, (target, body[:300])
        assert body == seeded[key], target


@pytest.mark.parametrize(("target", "expected"), [
    ("/nosuch/models/ok.bin", (404,)),
    ("/S3/models/ok.bin", (404,)),
    ("/v1/warm", (404,)),
    ("/", (404,)),
    ("/s3", (404,)),
    ("/s3/", (404,)),
    ("/s3/bucketonly", (400, 404)),
    ("/s3/models", (400, 404)),
    ("/s3/models/", (400, 404)),
    ("/s3/models/missing.bin", (404,)),
    ("/s3/nobucket/ok.bin", (404,)),
])
async def test_not_found_and_incomplete_paths(node: Bdn, target: str, expected: tuple[int, ...]) -> None:
    status, headers, body = await raw_request(node.url, target)
    assert_json_error(status, headers, body, expected)


async def test_unknown_source_never_reaches_upstream(node: Bdn, proxy: CountingProxy) -> None:
    status, headers, body = await raw_request(node.url, "/elsewhere/models/ok.bin")
    assert assert_json_error(status, headers, body, 404) == "not_found"
    assert proxy.log == []


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused_with_json(node: Bdn, proxy: CountingProxy, method: str) -> None:
    status, headers, body = await raw_request(node.url, "/s3/models/ok.bin", method=method,
                                              headers={"Content-Length": "0"})
    assert_json_error(status, headers, body, 405)
    assert proxy.log == []


@pytest.mark.parametrize(("target", "status"), [
    ("/s3/models/../ok.bin", 400),
    ("/s3/%00", 400),
    ("/nosuch/x", 404),
    ("/s3/models/missing.bin", 404),
])
async def test_head_of_an_error_has_no_body(node: Bdn, target: str, status: int) -> None:
    got, headers, body = await raw_request(node.url, target, method="HEAD")
    assert got == status
    assert body == b""
    assert headers.get("content-length", "0") == "0"
    assert "transfer-encoding" not in headers


async def test_oversize_header_is_4xx_and_daemon_lives(node: Bdn, seeded: dict[str, bytes]) -> None:
    status, _, body = await raw_request(node.url, "/s3/models/ok.bin", headers={"X-Big": "a" * (17 * 1024)})
    assert 400 <= status < 500, body[:300]
    assert b"Traceback" not in body
    status, _, body = await raw_request(node.url, "/s3/models/ok.bin", headers={"X-Big": "a" * (64 * 1024)})
    assert 400 <= status < 500
    status, _, body = await raw_request(node.url, "/s3/models/" + "a" * (20 * 1024))
    assert 400 <= status < 500
    status, _, body = await raw_request(node.url, "/healthz")
    assert status == 200
    status, _, body = await raw_request(node.url, "/s3/models/ok.bin", headers={"X-Fine": "a" * (12 * 1024)})
    assert status == 200
    assert body == seeded["ok.bin"]


async def test_healthz_and_readyz(start_bdn: StartBdn, proxy: CountingProxy, seeded: dict[str, bytes],
                                  http: aiohttp.ClientSession, tmp_path: Path) -> None:
    node = await start_bdn(s3_sources(proxy.url), disk_retry="200ms")
    async with http.get(f"{node.url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "alive"
    async with http.get(f"{node.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    temp = tmp_path / "cache" / "tmp"
    assert temp.is_dir()
    temp.rmdir()
    temp.write_bytes(b"")  # tests run as root, so permissions cannot make the dir unwritable; a file can
    try:
        async with http.get(f"{node.url}/s3/models/ok.bin") as response:
            assert response.status == 200, "an unwritable cache dir still serves, uncached"
            assert await response.read() == seeded["ok.bin"]
        async with http.get(f"{node.url}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "degraded"
        async with http.get(f"{node.url}/healthz") as response:
            assert response.status == 200, "liveness does not depend on the disk"
    finally:
        temp.unlink()
        temp.mkdir()
    await asyncio.sleep(0.3)  # the node's disk_retry
    async with http.get(f"{node.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    async with http.get(f"{node.url}/s3/models/ok.bin") as response:
        assert response.status == 200


async def test_no_file_outside_the_cache_dir_is_created_or_read(node: Bdn, tmp_path: Path,
                                                                 file_spy: FileSpy) -> None:
    cache_dir = (tmp_path / "cache").resolve()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    before = tree(tmp_path, cache_dir)
    status, _, _ = await raw_request(node.url, "/s3/models/ok.bin")  # warm up: the S3 client loads its models
    assert status == 200
    file_spy.paths.clear()
    targets = [*BAD_TARGETS, "/s3/models/../../secret.txt", f"/s3/..{secret}", f"/s3/%2F{secret}",
               f"/s3/{'%2e%2e/' * 12}{str(secret).lstrip('/')}", "/s3/models/../../../../../../etc/passwd",
               "/nosuch/../../secret.txt", "/s3/models/ok.bin", "/s3/models/.hidden", "/readyz"]  # .hidden: cold
    for target in targets:
        for method in ("GET", "HEAD"):
            _, _, body = await raw_request(node.url, target, method=method)
            assert SECRET not in body
            assert b"root:" not in body
    assert any(cache_dir in Path(path).resolve().parents for path in file_spy.paths), "the spy sees bdn's opens"
    outside = [path for path in file_spy.paths if Path(path).resolve() != cache_dir
               and cache_dir not in Path(path).resolve().parents]
    assert outside == [], f"bdn opened files outside its cache dir: {outside}"
    assert tree(tmp_path, cache_dir) == before, "no file created outside the cache dir"
