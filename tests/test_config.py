"""bdn.config: units, the embedded defaults, errors that name the dotted key, and the `bdn serve` command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bdn import config as cfg
from bdn.config import ConfigError, HfSourceConfig, HttpSourceConfig, S3SourceConfig, from_mapping, from_yaml, load
from tests.conftest import ROOT, free_port

# -- units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("16MiB", 16 * 2**20),
    ("500GiB", 500 * 2**30),
    ("1TiB", 2**40),
    ("4KiB", 4096),
    (1000, 1000),
    ("1000", 1000),
    ("1KB", 1000),
    ("2MB", 2_000_000),
    ("3GB", 3 * 10**9),
    ("10B", 10),
    ("16 MiB", 16 * 2**20),
    ("16mib", 16 * 2**20),
    (0, 0),
])
def test_sizes(text: object, expected: int) -> None:
    assert cfg.parse_size("k", text) == expected


@pytest.mark.parametrize("text", ["big", "1.5GiB", "-1", -1, "16M", "16 MiBs", "", True, None, [1], "0x10"])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse_size("cache.ram_bytes", text)
    assert str(info.value).startswith("cache.ram_bytes: ")


@pytest.mark.parametrize(("text", "expected"), [
    ("60s", 60.0),
    ("250ms", 0.25),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("1.5s", 1.5),
    ("0s", 0.0),
    (30, 30.0),
    (0.5, 0.5),
    ("30", 30.0),
    ("250 ms", 0.25),
])
def test_durations(text: object, expected: float) -> None:
    assert cfg.parse_duration("k", text) == expected


@pytest.mark.parametrize("text", ["soon", "-5s", -1, "5d", "1m30s", "", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse_duration("upstream.read_timeout", text)
    assert str(info.value).startswith("upstream.read_timeout: ")


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9000", ("::1", 9000)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert cfg.parse_listen("listen", text) == expected


def test_sizes_and_durations_through_a_whole_config(tmp_path: Path) -> None:
    config = from_yaml(f"""
cache: {{dir: {tmp_path}, chunk_bytes: 16MiB, disk_bytes: 500GiB, ram_bytes: 1KB, metadata_ttl: 5m}}
upstream: {{connect_timeout: 250ms, read_timeout: 60s}}
""")
    assert config.cache.chunk_bytes == 16 * 2**20
    assert config.cache.disk_bytes == 500 * 2**30
    assert config.cache.ram_bytes == 1000
    assert config.cache.metadata_ttl == 300.0
    assert config.upstream.connect_timeout == 0.25
    assert config.upstream.read_timeout == 60.0
    assert config.cache.dir == tmp_path


# -- defaults -------------------------------------------------------------------------------------


def test_embedded_default_loads() -> None:
    config = load(None)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.cache.dir == Path("./var/cache")
    assert config.cache.chunk_bytes == 16 * 2**20
    assert config.cache.disk_bytes == 100 * 2**30
    assert config.cache.metadata_ttl == 60.0
    assert set(config.sources) == {"s3", "hf"}
    hf = config.sources["hf"]
    assert isinstance(hf, HfSourceConfig)
    assert (hf.endpoint, hf.token_env) == ("https://huggingface.co", "HF_TOKEN")
    s3 = config.sources["s3"]
    assert isinstance(s3, S3SourceConfig)
    assert s3.anonymous is True
    assert s3.region == "us-east-1"
    assert config.log_level == "info"


def test_empty_document_gives_defaults() -> None:
    for text in ("", "{}", "cache:\nupstream:\nsources:\n"):
        config = from_yaml(text)
        assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
        assert config.cache == cfg.CacheConfig()
        assert config.upstream == cfg.UpstreamConfig()
        assert dict(config.sources) == {}


def test_http_source_base_url_loses_trailing_slash() -> None:
    config = from_mapping({"sources": {"web": {"type": "http", "base_url": "https://example.com/models/"}}})
    assert config.sources["web"] == HttpSourceConfig(base_url="https://example.com/models")


# -- every bad key names itself -------------------------------------------------------------------

HTTP = {"type": "http", "base_url": "http://127.0.0.1:1"}
BAD = [
    ({"cache": {"chunk_bytes": "big"}}, "cache.chunk_bytes"),
    ({"cache": {"chunk_bytes": 0}}, "cache.chunk_bytes"),
    ({"cache": {"chunk_bytes": "0MiB"}}, "cache.chunk_bytes"),
    ({"cache": {"chunk_bytes": -1}}, "cache.chunk_bytes"),
    ({"cache": {"disk_bytes": "lots"}}, "cache.disk_bytes"),
    ({"cache": {"disk_bytes": "1MiB", "chunk_bytes": "16MiB"}}, "cache.disk_bytes"),
    ({"cache": {"ram_bytes": "1.5GiB"}}, "cache.ram_bytes"),
    ({"cache": {"metadata_ttl": "forever"}}, "cache.metadata_ttl"),
    ({"cache": {"metadata_ttl": -1}}, "cache.metadata_ttl"),
    ({"cache": {"fill_concurrency": 0}}, "cache.fill_concurrency"),
    ({"cache": {"fill_concurrency": "4"}}, "cache.fill_concurrency"),
    ({"cache": {"fill_concurrency": True}}, "cache.fill_concurrency"),
    ({"cache": {"sendfile": "yes"}}, "cache.sendfile"),
    ({"cache": {"dir": ""}}, "cache.dir"),
    ({"cache": {"dir": None}}, "cache.dir"),
    ({"cache": {"dir": ["a", "b"]}}, "cache.dir"),
    ({"cache": {"bogus": 1}}, "cache.bogus"),
    ({"cache": "big"}, "cache"),
    ({"upstream": {"read_timeout": "soon"}}, "upstream.read_timeout"),
    ({"upstream": {"connect_timeout": -3}}, "upstream.connect_timeout"),
    ({"upstream": {"retries": -1}}, "upstream.retries"),
    ({"upstream": [1]}, "upstream"),
    ({"bogus": 1}, "bogus"),
    ({"downstream": {"send_timeout": 0}}, "downstream.send_timeout"),
    ({"downstream": {"idle": "1s"}}, "downstream.idle"),
    ({"upstream": {"retry_max_wait": "later"}}, "upstream.retry_max_wait"),
    ({"listen": "nope"}, "listen"),
    ({"listen": 8080}, "listen"),
    ({"listen": "127.0.0.1:99999"}, "listen"),
    ({"listen": ":8080"}, "listen"),
    ({"listen": "127.0.0.1:"}, "listen"),
    ({"listen": "127.0.0.1:\u00b2"}, "listen"),  # '²'.isdigit() is True but int('²') fails
    ({"log_level": "verbose"}, "log_level"),
    ({"sources": ["s3"]}, "sources"),
    ({"sources": {"x": {}}}, "sources.x.type"),
    ({"sources": {"x": {"type": "ftp"}}}, "sources.x.type"),
    ({"sources": {"x": "s3"}}, "sources.x"),
    ({"sources": {"web": {"type": "http"}}}, "sources.web.base_url"),
    ({"sources": {"web": {"type": "http", "base_url": ""}}}, "sources.web.base_url"),
    ({"sources": {"web": {"type": "http", "base_url": "ftp://example.com"}}}, "sources.web.base_url"),
    ({"sources": {"web": {"type": "http", "base_url": "example.com"}}}, "sources.web.base_url"),
    ({"sources": {"web": {"type": "http", "base_url": 5}}}, "sources.web.base_url"),
    ({"sources": {"web": {"type": "http", "base_url": "http://example.com:99999"}}}, "sources.web.base_url"),
    ({"sources": {"hf": {"type": "hf", "endpoint": "http://hub:port"}}}, "sources.hf.endpoint"),
    ({"sources": {"web": {"type": "http", "base_url": "http:///no-host"}}}, "sources.web.base_url"),
    ({"sources": {"web": {**HTTP, "region": "x"}}}, "sources.web.region"),
    ({"sources": {"web": {**HTTP, "bogus": 1}}}, "sources.web.bogus"),
    ({"sources": {"s3": {"type": "s3", "region": 5}}}, "sources.s3.region"),
    ({"sources": {"s3": {"type": "s3", "endpoint_url": "localhost:9000"}}}, "sources.s3.endpoint_url"),
    ({"sources": {"s3": {"type": "s3", "anonymous": "yes"}}}, "sources.s3.anonymous"),
    ({"sources": {"s3": {"type": "s3", "base_url": "http://x"}}}, "sources.s3.base_url"),
    ({"sources": {"healthz": HTTP}}, "sources.healthz"),
    ({"sources": {"readyz": HTTP}}, "sources.readyz"),
    ({"sources": {"Web": HTTP}}, "sources.Web"),
    ({"sources": {"a/b": HTTP}}, "sources.a/b"),
    ({"sources": {"-web": HTTP}}, "sources.-web"),
    ({"sources": {"w" * 64: HTTP}}, "sources." + "w" * 64),
]


@pytest.mark.parametrize(("raw", "key"), BAD, ids=[f"{key}-{i}" for i, (_, key) in enumerate(BAD)])
def test_bad_key_names_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(raw)
    message = str(info.value)
    assert message.startswith(f"{key}: "), message
    assert "\n" not in message


@pytest.mark.parametrize(("raw", "key"), BAD[:14], ids=[f"{key}-{i}" for i, (_, key) in enumerate(BAD[:14])])
def test_bad_key_through_yaml(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_yaml(yaml.safe_dump(raw))
    assert str(info.value).startswith(f"{key}: ")


def test_yaml_level_errors() -> None:
    for text in ("cache: [", "- a\n- b\n", "just a string"):
        with pytest.raises(ConfigError) as info:
            from_yaml(text)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^\(file\): "):
        load("/nonexistent/bdn.yaml")


@pytest.mark.parametrize(("text", "key"), [
    ("cache: {metadata_ttl: .nan}", "cache.metadata_ttl"),
    ("upstream: {read_timeout: .nan}", "upstream.read_timeout"),
])
def test_nan_duration_is_refused(text: str, key: str) -> None:
    # YAML's .nan is a float; `nan < 0` is False, so it must be refused explicitly
    with pytest.raises(ConfigError) as info:
        from_yaml(text)
    assert str(info.value).startswith(f"{key}: ")


# -- the command line -----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bdn", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else clean_env())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BDN_CONFIG"}
    env.update(extra)
    return env


def good_config(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "cache": {"dir": str(tmp_path / "cache"), "chunk_bytes": "1MiB", "disk_bytes": "64MiB"},
        "sources": {"web": {"type": "http", "base_url": "http://127.0.0.1:1"}},
    }


def write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def wait_healthy(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bdn exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''!r}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                assert response.status == 200
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"bdn is not answering on port {port}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bdn", "serve", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


@pytest.mark.parametrize(("doc", "key"), [
    ({"cache": {"chunk_bytes": "big"}}, "cache.chunk_bytes"),
    ({"sources": {"web": {"type": "http", "base_url": "ftp://x"}}}, "sources.web.base_url"),
    ({"bogus": True}, "bogus"),
    ({"listen": "127.0.0.1:\u00b2"}, "listen"),
])
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, doc: dict[str, Any], key: str) -> None:
    path = write(tmp_path, "bad.yaml", doc)
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{key}:" in lines[0]
    assert result.stdout == ""


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "absent.yaml" in result.stderr


def test_cli_bad_listen_flag_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", good_config(tmp_path, free_port()))
    result = run_cli("serve", "--config", str(path), "--listen", "nowhere")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--listen:" in lines[0], result.stderr


def test_cli_listen_overrides_config(tmp_path: Path) -> None:
    configured, flag = free_port(), free_port()
    path = write(tmp_path, "good.yaml", good_config(tmp_path, configured))
    proc = serve(["--config", str(path), "--listen", f"127.0.0.1:{flag}"], clean_env())
    try:
        wait_healthy(proc, flag)
        assert not listening(configured)
    finally:
        assert stop(proc) == 0
    assert (tmp_path / "cache" / "chunks").is_dir()


def test_cli_bdn_config_env_names_the_file(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, "env.yaml", good_config(tmp_path, port))
    proc = serve([], clean_env(BDN_CONFIG=str(path)))
    try:
        wait_healthy(proc, port)
    finally:
        assert stop(proc) == 0


def test_cli_bad_bdn_config_env_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "env.yaml", {"cache": {"bogus": 1}})
    result = run_cli("serve", env=clean_env(BDN_CONFIG=str(path)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cache.bogus:" in lines[0], result.stderr


def test_cli_config_flag_wins_over_env(tmp_path: Path) -> None:
    bad = write(tmp_path, "env.yaml", {"cache": {"bogus": 1}})
    good = write(tmp_path, "bad-flag.yaml", {"cache": {"chunk_bytes": "huge"}})
    result = run_cli("serve", "--config", str(good), env=clean_env(BDN_CONFIG=str(bad)))
    assert result.returncode == 2
    assert "cache.chunk_bytes:" in result.stderr and "cache.bogus" not in result.stderr
