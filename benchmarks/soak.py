"""Soak: N connections through a bdn subprocess, time-bounded; a wrong byte, 5xx, error, hang or RSS over bound fails.

    python benchmarks/soak.py [--seconds 60] [--connections 500] [--objects 16] [--object-size 4MiB]
                              [--ram-bytes 64MiB] [--chunk-bytes 1MiB] [--json FILE]

Starts `benchmarks/origin.py` (as a subprocess) over a temp dir of random objects, then bdn as a
user does (`python -m bdn serve --config FILE`, an `http` source pointed at the origin,
`chunk_bytes: 1MiB` so objects span chunks). Each client worker holds one connection and loops
until the deadline: a whole-object GET (sha256 checked), a random Range GET (206, Content-Range
and every byte checked), now and then a cold object (a new name `cN--objK.bin`, which the
origin serves with objK's bytes under its own ETag, so bdn has never seen it), and now and then
a body dropped after its first piece. bdn's VmRSS is sampled every 0.5 s; after the load bdn
gets SIGTERM and must exit 0. Exit status 1 on any failure, with a summary table either way.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import math
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import uvloop
import yaml

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
KINDS = ("whole", "range", "cold", "abort")
# Cold objects "now and then"; "abort" reads the first piece of a body and drops the connection,
# as a killed pod does, half the time on a cold object whose fill other clients may be following.
WEIGHTS = (0.38, 0.54, 0.05, 0.03)
# RSS bound = ram_bytes + RSS_SLACK, the constant of the issue-5 memory target. Measured here (2
# cores, figures in benchmarks/RESULTS.md, "Soak"): bdn is ~100 MiB idle with every dependency
# imported and stays under 165 MiB with the RAM tier off, whatever the connections and chunks,
# so the constant leaves ~100 MiB for socket and transport buffers. The RAM tier itself never
# holds more than ram_bytes (loads in flight included), and responses copy from it piecewise.
RSS_SLACK = 256 * MiB
RSS_PERIOD = 0.5  # seconds between VmRSS samples
PIECE = 256 * 1024  # client read size
MAX_REQUESTS_PER_WORKER = 1_000_000  # a bound on every worker loop besides the deadline
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Client sockets get a fixed receive buffer. Left to autotuning, the ~15% of connections that
# began while the (CPU-bound) client was saturated never had their window grown (rcv_ssthresh
# stuck at 93 KiB against 0.5-3.5 MB on the others) and crawled at ~0.25 MiB/s: 16 MiB bodies
# took over 60 s, while the median was 8.5 s, through no fault of bdn's.
CLIENT_RCVBUF = 1 * MiB
FDS_SPARE = 512  # fds besides the connections: bdn's chunk files, fills, upstream sockets
RECENT_COLD = 8  # cold names other workers may join while their fill is still running
METRICS = ("bdn_cache_evictions_total", "bdn_fills_total", "bdn_coalesced_reads_total", "bdn_upstream_retries_total",
           "bdn_checksum_failures_total", "bdn_cache_disk_write_errors_total")
_SIZE = re.compile(r"^(\d+)\s*(|B|KiB|MiB|GiB)$")
_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 60.0
    connections: int = 500
    objects: int = 16
    object_size: int = 4 * MiB  # the largest object; the others are a few KiB shorter, never chunk-aligned
    ram_bytes: int = 64 * MiB
    chunk_bytes: int = 1 * MiB
    disk_bytes: int = 1 << 30  # cold objects overflow it in a long run, so eviction runs under load
    origin_latency_ms: float = 20.0
    origin_mbps: float = 200.0  # origin pace per connection, megabytes per second
    stall_timeout: float = 20.0  # no body byte for this long: a hang
    request_timeout: float = 120.0  # one request, headers to last byte
    seed: int = 8

    @property
    def rss_bound(self) -> int:
        return self.ram_bytes + RSS_SLACK


@dataclass
class Report:
    """What one soak saw; `failures()` says whether it passed."""

    config: SoakConfig
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    statuses: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)  # X-Cache values seen
    body_bytes: int = 0  # verified body bytes received
    wrong: int = 0  # 2xx answers whose status, headers or bytes differ from the origin's
    server_errors: int = 0  # 5xx answers
    unexpected: int = 0  # other statuses (4xx, 3xx)
    client_errors: int = 0  # resets, cut bodies, timeouts
    unfinished: int = 0  # workers still running past deadline + request_timeout (a hang)
    elapsed: float = 0.0
    rss_idle: int = 0  # bdn's VmRSS before the first request
    rss_max: int = 0  # max VmRSS sampled every RSS_PERIOD
    rss_hwm: int = 0  # the kernel's VmHWM at the end of the load
    rss_series: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, VmRSS)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # bdn, origin, client, during the load
    origin_requests: int = 0
    origin_bytes: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # a few of bdn's /metrics at the end
    bdn_exit: int | None = None  # status after SIGTERM; None: did not exit
    log_problems: list[str] = field(default_factory=list)  # tracebacks and ERROR lines in bdn's log
    log_warnings: int = 0  # WARNING lines in bdn's log (reported, not a failure)
    samples: list[str] = field(default_factory=list)  # the first failures, described

    def note(self, what: str) -> None:
        if len(self.samples) < 20:
            self.samples.append(what)

    def failures(self) -> list[str]:
        found = []
        for name in ("wrong", "server_errors", "unexpected", "client_errors", "unfinished"):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        peak = max(self.rss_max, self.rss_hwm)
        if peak > self.config.rss_bound:
            found.append(f"RSS {peak / MiB:.0f} MiB > bound {self.config.rss_bound / MiB:.0f} MiB")
        if self.bdn_exit != 0:
            found.append(f"bdn exit status after SIGTERM: {self.bdn_exit}")
        found.extend(f"bdn log: {line}" for line in self.log_problems[:5])
        return found


# ---- processes -------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size like 4MiB, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def raise_fd_limit(connections: int) -> None:
    """Raise RLIMIT_NOFILE to the hard limit (bdn inherits it): each side needs one fd per connection, and more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < connections + FDS_SPARE:
        raise RuntimeError(f"open-files limit {wanted} is too low for {connections} connections")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout:g} s")


def make_objects(directory: Path, config: SoakConfig) -> dict[str, bytes]:
    """Deterministic random objects `objK.bin`, written for the origin and kept for checking."""
    directory.mkdir(parents=True, exist_ok=True)
    objects = {}
    for index in range(config.objects):
        size = config.object_size - 1 - index * 4099
        data = random.Random(config.seed * 1000 + index).randbytes(size)
        (directory / f"obj{index}.bin").write_bytes(data)
        objects[f"obj{index}.bin"] = data
    return objects


def start_origin(work: Path, port: int, config: SoakConfig) -> subprocess.Popen[bytes]:
    log = work / "origin.log"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "origin.py"), "--dir", str(work / "data"), "--port", str(port),
         "--latency-ms", str(config.origin_latency_ms), "--mbps", str(config.origin_mbps)],
        cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_port(process, port, log)
    return process


def bdn_config(work: Path, port: int, origin_port: int, config: SoakConfig) -> dict[str, object]:
    return {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",  # the access log line per request would be most of the log and CPU
        "drain_timeout": "10s",
        "cache": {"dir": str(work / "cache"), "ram_bytes": config.ram_bytes, "chunk_bytes": config.chunk_bytes,
                  "disk_bytes": config.disk_bytes},
        "sources": {"web": {"type": "http", "base_url": f"http://127.0.0.1:{origin_port}"}},
    }


def start_bdn(work: Path, port: int, origin_port: int, config: SoakConfig) -> subprocess.Popen[bytes]:
    config_path = work / "bdn.yaml"
    config_path.write_text(yaml.safe_dump(bdn_config(work, port, origin_port, config)))
    log = work / "bdn.log"
    process = subprocess.Popen([sys.executable, "-m", "bdn", "serve", "--config", str(config_path)],
                               cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_port(process, port, log)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit status, or None when it had to be killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            return None
    return process.returncode


def proc_status(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RssSampler:
    """A thread that records the VmRSS of one process every RSS_PERIOD, and keeps the largest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            rss = proc_status(self.pid, "VmRSS")
            self.series.append((round(time.monotonic() - started, 2), rss))
            self.peak = max(self.peak, rss)
            self._stop.wait(RSS_PERIOD)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def origin_totals(port: int) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10) as answer:
        stats = json.load(answer)
    return sum(stats["requests"].values()), sum(stats["bytes"].values())


def bdn_metrics(port: int) -> dict[str, float]:
    """The samples of METRICS from bdn's /metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] in METRICS:
            found[sample] = float(value)
    return found


def log_problems(log: Path) -> tuple[list[str], int]:
    """Lines of bdn's log that mean a bug whatever the clients saw (tracebacks, ERROR records); WARNING lines."""
    lines = log.read_text(errors="replace").splitlines()
    problems = [line[:300] for line in lines if " ERROR " in line or line.startswith("Traceback")]
    return problems, sum(" WARNING " in line for line in lines)


# ---- clients ---------------------------------------------------------------------------------


@dataclass
class Target:
    path: str
    data: bytes
    sha256: str


class ColdNames:
    """New object names bdn has never seen; half the cold requests join one of the last few instead."""

    def __init__(self, objects: list[str]) -> None:
        self.objects = objects
        self.count = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=RECENT_COLD)

    def pick(self, rng: random.Random) -> tuple[str, str]:
        if self.recent and rng.random() < 0.5:
            name = rng.choice(self.recent)
        else:
            self.count += 1
            name = f"c{self.count}--{rng.choice(self.objects)}"
            self.recent.append(name)
        return name, name.split("--", 1)[1]


def random_range(rng: random.Random, size: int, chunk: int) -> tuple[str, int, int]:
    """A Range header and the inclusive [first, last] bdn must answer with: a-b (end maybe past EOF), a- or -n."""
    shape = rng.random()
    length = max(1, int(2 ** rng.uniform(0, math.log2(2 * chunk))))  # log-uniform, 1 B to 2 chunks
    if shape < 0.6:
        first = rng.randrange(size)
        return f"bytes={first}-{first + length - 1}", first, min(first + length, size) - 1
    if shape < 0.8:
        first = rng.randrange(max(1, size - 2 * chunk), size)
        return f"bytes={first}-", first, size - 1
    return f"bytes=-{length}", max(0, size - length), size - 1


@dataclass
class Progress:
    """How far one request got, for describing a failure: when it started, bytes and time of its last piece."""

    started: float = field(default_factory=time.monotonic)
    received: int = 0  # body bytes
    last: float = 0.0
    cache: str = "-"
    gap: float = 0.0  # the longest wait for a piece of the body
    gap_at: int = 0  # body bytes received when that wait began

    def add(self, piece: bytes) -> None:
        now = time.monotonic()
        if now - (self.last or self.started) > self.gap:
            self.gap, self.gap_at = now - (self.last or self.started), self.received
        self.received += len(piece)
        self.last = now

    def describe(self) -> str:
        now = time.monotonic()
        quiet = f", last byte {now - self.last:.1f} s before" if self.received else ""
        return (f"after {now - self.started:.1f} s, {self.received:,} body bytes{quiet}, longest wait {self.gap:.1f} s "
                f"at byte {self.gap_at:,}, X-Cache {self.cache}")


async def read_checked(response: aiohttp.ClientResponse, data: bytes, first: int, last: int,
                       progress: Progress) -> tuple[bool, int]:
    """Stream the body, comparing each piece with `data[first:last + 1]`; (all equal, bytes read).

    Slices of `bytes` are compared (a copy, then memcmp, ~9 GB/s here): comparing a memoryview
    with bytes goes item by item, ~0.5 GB/s, and made the client the bottleneck.
    """
    position, equal = first, True
    async for piece in response.content.iter_chunked(PIECE):
        progress.add(piece)
        end = position + len(piece)
        if equal and (end > last + 1 or data[position:end] != piece):
            equal = False
        position = end
    return equal and position == last + 1, position - first


async def read_hashed(response: aiohttp.ClientResponse, progress: Progress) -> tuple[str, int]:
    digest, length = hashlib.sha256(), 0
    async for piece in response.content.iter_chunked(PIECE):
        progress.add(piece)
        digest.update(piece)
        length += len(piece)
    return digest.hexdigest(), length


def status_ok(report: Report, response: aiohttp.ClientResponse, want: int, what: str, progress: Progress) -> bool:
    report.statuses[str(response.status)] = report.statuses.get(str(response.status), 0) + 1
    cache = progress.cache = response.headers.get("X-Cache", "-")
    report.cache[cache] = report.cache.get(cache, 0) + 1
    if response.status == want:
        return True
    if response.status >= 500:
        report.server_errors += 1
    elif 200 <= response.status < 300:
        report.wrong += 1
    else:
        report.unexpected += 1
    report.note(f"{what}: status {response.status} (want {want})")
    return False


async def get_whole(session: aiohttp.ClientSession, url: str, target: Target, report: Report,
                    progress: Progress) -> None:
    async with session.get(url + target.path) as response:
        what = f"GET {target.path}"
        if not status_ok(report, response, 200, what, progress):
            await response.read()
            return
        digest, length = await read_hashed(response, progress)
        report.body_bytes += length
        if digest != target.sha256 or response.content_length != len(target.data):
            report.wrong += 1
            report.note(f"{what}: {length} bytes, sha256 {digest[:12]}, Content-Length {response.content_length}")


async def get_range(session: aiohttp.ClientSession, url: str, target: Target, report: Report,
                    progress: Progress, rng: random.Random, chunk: int) -> None:
    header, first, last = random_range(rng, len(target.data), chunk)
    async with session.get(url + target.path, headers={"Range": header}) as response:
        what = f"GET {target.path} Range {header}"
        if not status_ok(report, response, 206, what, progress):
            await response.read()
            return
        equal, length = await read_checked(response, target.data, first, last, progress)
        report.body_bytes += length
        content_range = response.headers.get("Content-Range")
        if not equal or content_range != f"bytes {first}-{last}/{len(target.data)}":
            report.wrong += 1
            report.note(f"{what}: {length} bytes, equal={equal}, Content-Range {content_range}")


async def get_aborted(session: aiohttp.ClientSession, url: str, target: Target, report: Report,
                      progress: Progress) -> None:
    async with session.get(url + target.path) as response:
        if not status_ok(report, response, 200, f"GET {target.path} (aborted)", progress):
            await response.read()
            return
        piece = await response.content.read(PIECE)
        report.body_bytes += len(piece)
        if piece != target.data[:len(piece)]:
            report.wrong += 1
            report.note(f"GET {target.path} (aborted): first {len(piece)} bytes differ")
        response.close()  # drops the connection mid-body


async def worker(session: aiohttp.ClientSession, url: str, targets: dict[str, Target], cold: ColdNames,
                 report: Report, config: SoakConfig, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    names = sorted(targets)
    for _ in range(MAX_REQUESTS_PER_WORKER):
        if time.monotonic() >= deadline:
            return
        kind = rng.choices(KINDS, WEIGHTS)[0]
        if kind == "cold" or (kind == "abort" and rng.random() < 0.5):
            name, base = cold.pick(rng)
            target = Target(f"/web/{name}", targets[base].data, targets[base].sha256)
        else:
            target = targets[rng.choice(names)]
        report.requests[kind] += 1
        progress = Progress()
        try:
            if kind == "abort":
                await get_aborted(session, url, target, report, progress)
            elif kind == "whole" or (kind == "cold" and rng.random() < 0.5):
                await get_whole(session, url, target, report, progress)
            else:
                await get_range(session, url, target, report, progress, rng, config.chunk_bytes)
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            report.client_errors += 1
            report.note(f"{kind} {target.path}: {type(exc).__name__} {exc} {progress.describe()}")


def client_socket(addr_info: tuple[int, int, int, str, tuple[str, int]]) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    return sock


async def drive(url: str, objects: dict[str, bytes], report: Report, config: SoakConfig) -> None:
    """All workers until the deadline; those still running request_timeout later are counted and cancelled."""
    targets = {name: Target(f"/web/{name}", data, hashlib.sha256(data).hexdigest())
               for name, data in objects.items()}
    cold = ColdNames(sorted(objects))
    timeout = aiohttp.ClientTimeout(total=config.request_timeout, sock_read=config.stall_timeout)
    connector = aiohttp.TCPConnector(limit=config.connections, limit_per_host=config.connections,
                                     socket_factory=client_socket)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        started = time.monotonic()
        deadline = started + config.seconds
        tasks = [asyncio.create_task(worker(session, url, targets, cold, report, config, deadline,
                                            config.seed * 100_000 + index))
                 for index in range(config.connections)]
        _, pending = await asyncio.wait(tasks, timeout=config.seconds + config.request_timeout + 5)
        report.elapsed = time.monotonic() - started
        report.unfinished = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                report.client_errors += 1  # a worker that died of anything else stopped loading bdn
                report.note(f"worker died: {task.exception()!r}")


# ---- the run ---------------------------------------------------------------------------------


def run_soak(config: SoakConfig, work: Path | None = None) -> Report:
    """One soak in `work` (a fresh temp dir when None): origin, bdn, the clients, then both stopped."""
    raise_fd_limit(config.connections)
    if work is None:
        with tempfile.TemporaryDirectory(prefix="bdn-soak-") as temp:
            return run_soak(config, Path(temp))
    report = Report(config)
    objects = make_objects(work / "data", config)
    origin_port, bdn_port = free_port(), free_port()
    origin = start_origin(work, origin_port, config)
    try:
        bdn = start_bdn(work, bdn_port, origin_port, config)
        try:
            report.rss_idle = proc_status(bdn.pid, "VmRSS")
            before = {"bdn": cpu_seconds(bdn.pid), "origin": cpu_seconds(origin.pid), "client": own_cpu_seconds()}
            with RssSampler(bdn.pid) as sampler:
                uvloop.run(drive(f"http://127.0.0.1:{bdn_port}", objects, report, config))
            after = {"bdn": cpu_seconds(bdn.pid), "origin": cpu_seconds(origin.pid), "client": own_cpu_seconds()}
            report.cpu_seconds = {name: round(after[name] - before[name], 1) for name in before}
            report.rss_max, report.rss_series = sampler.peak, sampler.series
            report.rss_hwm = proc_status(bdn.pid, "VmHWM")
            report.origin_requests, report.origin_bytes = origin_totals(origin_port)
            report.metrics = bdn_metrics(bdn_port)
        finally:
            report.bdn_exit = stop(bdn, 25)  # drain_timeout is 10 s
        report.log_problems, report.log_warnings = log_problems(work / "bdn.log")
    finally:
        stop(origin, 10)
    return report


def rss_trend(report: Report) -> str:
    """VmRSS at each quarter of the run, to tell a plateau from a slow leak."""
    series = report.rss_series
    if not series:
        return "-"
    picks = [series[min(len(series) - 1, len(series) * quarter // 4)] for quarter in range(1, 5)]
    return ", ".join(f"{at:.0f} s {rss / MiB:.0f}" for at, rss in picks) + " MiB"


def summary(report: Report) -> str:
    config, seconds = report.config, max(report.elapsed, 1e-9)
    total = sum(report.requests.values())
    peak = max(report.rss_max, report.rss_hwm)
    rows = [
        ("parameters", f"{config.seconds:g} s, {config.connections} connections, {config.objects} objects of "
                       f"~{config.object_size / MiB:g} MiB, chunk {config.chunk_bytes / MiB:g} MiB, "
                       f"ram_bytes {config.ram_bytes / MiB:g} MiB"),
        ("requests", f"{total:,} ({total / seconds:,.0f}/s): " +
                     ", ".join(f"{kind} {report.requests[kind]:,}" for kind in KINDS)),
        ("statuses", ", ".join(f"{status} {count:,}" for status, count in sorted(report.statuses.items()))),
        ("X-Cache", ", ".join(f"{value} {count:,}" for value, count in sorted(report.cache.items()))),
        ("verified body bytes", f"{report.body_bytes / MiB:,.0f} MiB ({report.body_bytes / MiB / seconds:,.0f} MiB/s)"),
        ("origin", f"{report.origin_requests:,} requests, {report.origin_bytes / MiB:,.0f} MiB"),
        ("bdn metrics", ", ".join(f"{name.removeprefix('bdn_').replace('_total', '')} {value:,.0f}"
                                  for name, value in report.metrics.items())),
        ("wrong / 5xx / other status", f"{report.wrong} / {report.server_errors} / {report.unexpected}"),
        ("client errors / unfinished", f"{report.client_errors} / {report.unfinished}"),
        ("bdn RSS idle / max / bound", f"{report.rss_idle / MiB:.0f} / {peak / MiB:.0f} / "
                                       f"{config.rss_bound / MiB:.0f} MiB (ram_bytes + {RSS_SLACK // MiB} MiB)"),
        ("bdn RSS over the run", rss_trend(report)),
        ("CPU-seconds", ", ".join(f"{name} {value:g}" for name, value in report.cpu_seconds.items()) +
                        f" (of {2 * seconds:.0f} on 2 cores)" if report.cpu_seconds else "-"),
        ("bdn exit after SIGTERM", f"{report.bdn_exit}; log: {len(report.log_problems)} errors, "
                                   f"{report.log_warnings} warnings"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    failures = report.failures()
    lines.append("PASS" if not failures else "FAIL: " + "; ".join(failures))
    lines.extend(f"  {sample}" for sample in report.samples[:10])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--object-size", type=parse_size, default=4 * MiB, help="e.g. 4MiB")
    parser.add_argument("--ram-bytes", type=parse_size, default=64 * MiB, help="bdn's cache.ram_bytes, e.g. 64MiB")
    parser.add_argument("--chunk-bytes", type=parse_size, default=MiB, help="bdn's cache.chunk_bytes")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = parser.parse_args()
    if args.object_size <= args.objects * 4099 + 1:
        parser.error("--object-size is too small for that many objects")
    config = SoakConfig(seconds=args.seconds, connections=args.connections, objects=args.objects,
                        object_size=args.object_size, ram_bytes=args.ram_bytes, chunk_bytes=args.chunk_bytes)
    report = run_soak(config)
    print(summary(report))
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(report), "failures": report.failures(),
                                         "rss_bound": config.rss_bound}, indent=2) + "\n")
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
