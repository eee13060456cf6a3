"""Side by side: bdn vs nginx proxy_cache vs Varnish, in front of the same throttled origin, in one run.

    python benchmarks/compare.py [--size-mib 1024] [--latency-ms 100] [--mbps 200] [--out FILE]

Needs Debian's nginx, varnish, wrk and curl (`make bench-deps` installs them). Everything
listens on 127.0.0.1; every server runs from its own config in a temp dir and is stopped by
PID. Scenarios, each against every server: hot whole object with 1 and 8 clients (curl),
hot random 1 MiB ranges with 32 connections and a hot 4 KiB object with 64 connections (wrk,
10 s each), 32 clients at once on a cold object, and one 1 MiB range of a cold object.
Reported: throughput or req/s, the ratio of bdn to each other server, server CPU-seconds
(per GB where bytes move), origin requests and bytes per cold object, TTFB and last byte,
and bdn's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
CLK = os.sysconf("SC_CLK_TCK")
WRK_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    cpu_root: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


NGINX_CONF = """
user root;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  proxy_cache_path {dir}/cache levels=1:2 keys_zone=models:64m max_size=20g inactive=1d use_temp_path=off;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      slice 8m;
      proxy_cache models;
      proxy_cache_key $uri$is_args$args$slice_range;
      proxy_set_header Range $slice_range;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 600s;
      proxy_cache_lock_age 600s;
      proxy_read_timeout 600s;
      proxy_pass http://127.0.0.1:{origin};
    }}
  }}
}}
"""

VARNISH_VCL = """
vcl 4.1;
backend origin {{
  .host = "127.0.0.1";
  .port = "{origin}";
  .first_byte_timeout = 600s;
  .between_bytes_timeout = 600s;
}}
sub vcl_backend_response {{
  set beresp.do_stream = true;
  set beresp.ttl = 1d;
}}
"""


def start_nginx(work: Path, origin: int) -> Server:
    directory = work / "nginx"
    (directory / "cache").mkdir(parents=True)
    port = free_port()
    (directory / "nginx.conf").write_text(NGINX_CONF.format(dir=directory, port=port, origin=origin))
    process = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server("nginx", port, process, process.pid)


def start_varnish(work: Path, origin: int, memory_mib: int) -> Server:
    directory = work / "varnish"
    directory.mkdir()
    port = free_port()
    (directory / "default.vcl").write_text(VARNISH_VCL.format(origin=origin))
    process = subprocess.Popen(["varnishd", "-F", "-j", "none", "-n", str(directory / "work"),
                                "-a", f"127.0.0.1:{port}", "-f", str(directory / "default.vcl"),
                                "-s", f"malloc,{memory_mib}m", "-p", "thread_pool_min=50"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server("varnish", port, process, process.pid)


def start_bdn(work: Path, origin: int, ram_mib: int) -> Server:
    directory = work / "bdn"
    directory.mkdir()
    port = free_port()
    config = directory / "bdn.yaml"
    config.write_text(json.dumps({
        "listen": f"127.0.0.1:{port}", "log_level": "warning",
        "cache": {"dir": str(directory / "cache"), "disk_bytes": "50GiB", "ram_bytes": f"{ram_mib}MiB",
                  "chunk_bytes": "16MiB", "fill_concurrency": 8},
        "sources": {"web": {"type": "http", "base_url": f"http://127.0.0.1:{origin}"}},
    }))
    with (directory / "bdn.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bdn", "serve", "--config", str(config)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port)
    return Server("bdn", port, process, process.pid)


def path_of(server: Server, name: str) -> str:
    return f"/web/{name}" if server.name == "bdn" else f"/{name}"


def curl(url: str, *extra: str) -> tuple[int, float, float]:
    """(bytes, time to first byte, total time) of one download to /dev/null."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_starttransfer} %{time_total}",
                          *extra, url], capture_output=True, text=True, timeout=600, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def parallel_curls(urls: list[str], *extra: str) -> tuple[list[tuple[int, float, float]], float]:
    results: list[tuple[int, float, float]] = [(0, 0.0, 0.0)] * len(urls)

    def run(i: int, url: str) -> None:
        results[i] = curl(url, *extra)

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - began


def wrk(url: str, connections: int, script: Path | None = None) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{WRK_SECONDS}s", "--timeout", "30s"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=120, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw {non2xx.group(1)} errors from {url}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def origin_stats(port: int) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats") as response:
        stats: dict[str, dict[str, int]] = json.load(response)
        return stats


def settled_origin_bytes(port: int, name: str, quiet: float = 1.5, limit: float = 30) -> tuple[int, int]:
    """(requests, bytes) the origin served for `name`, once its counter stopped moving."""
    deadline, last, still_since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = origin_stats(port)
        now = stats["bytes"].get(name, 0)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
        time.sleep(0.2)
    stats = origin_stats(port)
    return stats["requests"].get(name, 0), stats["bytes"].get(name, 0)


@dataclass
class Results:
    rows: dict[str, dict[str, float | str]] = field(default_factory=dict)

    def put(self, scenario: str, server: str, value: float | str) -> None:
        self.rows.setdefault(scenario, {})[server] = value


def measured(server: Server, work: object) -> tuple[object, float]:
    before = cpu_seconds(server.cpu_root)
    result = work() if callable(work) else work
    return result, cpu_seconds(server.cpu_root) - before


def run_server(server: Server, args: argparse.Namespace, origin: int, results: Results, work: Path) -> None:
    size = args.size_mib * MiB
    big = server.url + path_of(server, "big.bin")
    small = server.url + path_of(server, "small.bin")
    curl(big)  # warm: the whole object through each cache
    curl(big)
    curl(small)
    curl(small)
    name = server.name

    def hot(clients: int) -> None:
        runs = []
        for _ in range(3):
            before = cpu_seconds(server.cpu_root)
            outcomes, wall = parallel_curls([big] * clients)
            cpu = cpu_seconds(server.cpu_root) - before
            assert all(b == size for b, _, _ in outcomes), outcomes
            runs.append((clients * size / wall / 1e9, cpu / (clients * size / 1e9)))
        gbps, cpu_per_gb = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        results.put(f"hot whole object, {clients} client(s): GB/s", name, gbps)
        results.put(f"hot whole object, {clients} client(s): server CPU-s per GB", name, cpu_per_gb)

    hot(1)
    hot(8)
    script = work / "ranges.lua"
    script.write_text(
        "math.randomseed(os.time())\n"
        f"local size = {size}\n"
        "request = function()\n"
        "  local start = math.random(0, size - 1048576)\n"
        "  return wrk.format('GET', nil, {['Range'] = 'bytes=' .. start .. '-' .. (start + 1048575)})\n"
        "end\n")
    before = cpu_seconds(server.cpu_root)
    rps = wrk(big, 32, script)
    results.put("hot random 1 MiB ranges, 32 conns: req/s", name, rps)
    results.put("hot random 1 MiB ranges: server CPU-s per GB", name,
                (cpu_seconds(server.cpu_root) - before) / (rps * WRK_SECONDS * MiB / 1e9))
    before = cpu_seconds(server.cpu_root)
    rps = wrk(small, 64)
    results.put("hot 4 KiB object, 64 conns: req/s", name, rps)
    results.put("hot 4 KiB object: server CPU-s per 10k req", name,
                (cpu_seconds(server.cpu_root) - before) / (rps * WRK_SECONDS / 1e4))

    cold = f"{name}--big.bin"
    before = cpu_seconds(server.cpu_root)
    outcomes, _ = parallel_curls([server.url + path_of(server, cold)] * 32)
    cpu = cpu_seconds(server.cpu_root) - before
    assert all(b == size for b, _, _ in outcomes), [b for b, _, _ in outcomes]
    requests, sent = settled_origin_bytes(origin, cold)
    results.put("cold whole object, 32 clients: TTFB p50 s", name, statistics.median(t for _, t, _ in outcomes))
    results.put("cold whole object, 32 clients: last byte max s", name, max(t for _, _, t in outcomes))
    results.put("cold whole object, 32 clients: origin requests", name, requests)
    results.put("cold whole object, 32 clients: origin bytes / object", name, sent / size)
    results.put("cold whole object, 32 clients: server CPU-s", name, cpu)

    cold_range = f"{name}-range--big.bin"
    start = size // 2 + 12345
    got, ttfb, total = curl(server.url + path_of(server, cold_range), "-r", f"{start}-{start + MiB - 1}")
    assert got == MiB, got
    requests, sent = settled_origin_bytes(origin, cold_range)
    results.put("cold 1 MiB range: TTFB s", name, ttfb)
    results.put("cold 1 MiB range: last byte s", name, total)
    results.put("cold 1 MiB range: origin MiB", name, sent / MiB)


def sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], rss_bytes(pid))
        except OSError:
            return
        time.sleep(0.1)


def table(results: Results, servers: list[str]) -> str:
    lines = ["| scenario | " + " | ".join(servers) + " | bdn / nginx | bdn / varnish |",
             "|---" * (len(servers) + 3) + "|"]
    for scenario, values in results.rows.items():
        cells = [_fmt(values.get(server, "—")) for server in servers]
        ratios = []
        for other in ("nginx", "varnish"):
            bdn, theirs = values.get("bdn"), values.get(other)
            ok = isinstance(bdn, (int, float)) and isinstance(theirs, (int, float)) and theirs
            ratios.append(f"{bdn / theirs:.2f}x" if ok else "—")  # type: ignore[operator]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--mbps", type=float, default=200, help="origin megabytes per second per connection")
    parser.add_argument("--only", default="bdn,nginx,varnish")
    parser.add_argument("--ram-mib", type=int, default=2048, help="bdn's ram_bytes and Varnish's malloc size")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    for tool in ("nginx", "varnishd", "wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: run `make bench-deps`")
    work = Path(tempfile.mkdtemp(prefix="bdn-bench-"))
    servers: list[Server] = []
    origin_process = None
    try:
        data = work / "data"
        data.mkdir()
        with (data / "big.bin").open("wb") as handle:
            for _ in range(args.size_mib // 64):
                handle.write(os.urandom(64 * MiB))
            handle.write(os.urandom((args.size_mib % 64) * MiB))
        (data / "small.bin").write_bytes(os.urandom(4096))
        origin = free_port()
        origin_process = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "origin.py"), "--dir", str(data),
                                           "--port", str(origin), "--latency-ms", str(args.latency_ms),
                                           "--mbps", str(args.mbps)])
        wait_port(origin)
        starters = {"bdn": lambda: start_bdn(work, origin, args.ram_mib),
                    "nginx": lambda: start_nginx(work, origin),
                    "varnish": lambda: start_varnish(work, origin, args.ram_mib)}
        names = [name for name in args.only.split(",") if name in starters]
        results = Results()
        peak = [0]
        for name in names:
            server = starters[name]()
            servers.append(server)
            stop = threading.Event()
            sampler = None
            if name == "bdn":
                sampler = threading.Thread(target=sample_rss, args=(server.process.pid, stop, peak), daemon=True)
                sampler.start()
            print(f"running scenarios against {name} ...", file=sys.stderr, flush=True)
            run_server(server, args, origin, results, work)
            stop.set()
            server.stop()
        if "bdn" in names:
            results.put("bdn peak RSS MiB (ram_bytes " + f"{args.ram_mib} MiB)", "bdn", peak[0] / MiB)
        header = (f"Object {args.size_mib} MiB; origin {args.latency_ms:g} ms first-byte latency, "
                  f"{args.mbps:g} MB/s per connection; {os.cpu_count()} cores; wrk runs {WRK_SECONDS} s.")
        text = header + "\n\n" + table(results, names) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
    finally:
        for server in servers:
            server.stop()
        if origin_process is not None:
            origin_process.terminate()
            origin_process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
