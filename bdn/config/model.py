"""The one typed configuration object: parsed from YAML, validated once at start, errors name the key.

Every default and unit lives here. Sizes accept `16MiB`, `500GiB`, `4096`; durations accept
`60s`, `5m`, `1h`, `250ms`. Any unknown or malformed key raises `ConfigError` whose message
starts with the dotted key, e.g. `cache.chunk_bytes: expected a size like 16MiB, got 'big'`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from bdn.addresses import parse_ip

DEFAULT_PORT = 8080
RESERVED_NAMES = frozenset({"healthz", "readyz", "metrics", "v1", "_peer", "_bdn", "storage", "download"})
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A configuration value that bdn cannot start with; the message names the key."""


@dataclass(frozen=True)
class CacheConfig:
    """`cache:`: where and how much the node caches."""

    dir: Path = Path("./var/cache")  # disk tier root (a node's NVMe)
    disk_bytes: int = 100 * 2**30  # disk budget; least-recently-used chunks are evicted past it
    ram_bytes: int = 1 * 2**30  # RAM tier budget
    chunk_bytes: int = 16 * 2**20  # unit of fill, caching and coalescing
    metadata_ttl: float = 60.0  # seconds an object's size/ETag is trusted before one revalidating HEAD
    fill_concurrency: int = 8  # chunks of one read fetched from upstream at once (read-ahead)
    sendfile: bool = True  # send disk bytes with the kernel's sendfile; false reads them in a thread
    disk_retry: float = 5.0  # seconds between attempts to write to a cache disk that failed (full, I/O errors)


@dataclass(frozen=True)
class UpstreamConfig:
    """`upstream:`: how bdn talks to every source."""

    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 30.0  # seconds without a byte before an upstream read fails
    retries: int = 3  # retries of a request that failed to connect, timed out, reset, or got 429/5xx
    retry_backoff: float = 0.2  # seconds before the first retry, doubled for each next one (with jitter)
    retry_max_wait: float = 10.0  # longest wait for one retry; a longer Retry-After ends retries with 503


@dataclass(frozen=True)
class DownstreamConfig:
    """`downstream:`: how bdn treats its clients' connections."""

    idle_timeout: float = 60.0  # seconds a connection may sit without a complete request (idle, or slow headers)
    send_timeout: float = 60.0  # seconds a client may accept no byte of a response before it is cut


@dataclass(frozen=True)
class PeersConfig:
    """`peers:`: the regional peer tier. Off unless `dns` or `static` names some peers."""

    dns: str | None = None  # A/AAAA records of a headless Service, re-resolved every `refresh`
    port: int = DEFAULT_PORT  # port of the peers found through `dns`
    static: tuple[str, ...] = ()  # or a fixed list of http://HOST:PORT
    self: str | None = None  # HOST:PORT under which this node appears in the list
    refresh: float = 10.0  # seconds between DNS lookups
    timeout: float = 2.0  # connect / first-byte timeout before falling back to the upstream

    @property
    def enabled(self) -> bool:
        return bool(self.dns or self.static)


@dataclass(frozen=True)
class ClientAuthConfig:
    """`sources.NAME.clients:`: every request for the source must carry one of these tokens.

    Tokens come from an environment variable (`bearer_tokens_env`, comma-separated) or a file
    (`bearer_tokens_file`, one per line), read once at start; they are never part of a repr.
    """

    bearer_tokens_env: str | None = None
    bearer_tokens_file: str | None = None
    tokens: frozenset[str] = field(default=frozenset(), repr=False)


@dataclass(frozen=True)
class AdminConfig:
    """`admin:`: who may use the admin API (`/v1/warm`)."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

    def allows(self, address: str | None) -> bool:
        ip = parse_ip(address)
        return ip is not None and any(ip in network for network in self.allow)


@dataclass(frozen=True)
class S3SourceConfig:
    """`{type: s3}`: Amazon S3 or any S3-compatible store (R2: `endpoint_url` + region `auto`)."""

    type: Literal["s3"] = "s3"
    region: str | None = None
    endpoint_url: str | None = None
    anonymous: bool = False  # unsigned requests (public buckets); otherwise the standard AWS chain
    clients: ClientAuthConfig | None = None  # tokens clients must present; None: open to every client


@dataclass(frozen=True)
class HttpSourceConfig:
    """`{type: http}`: a fixed HTTP(S) origin that serves Range; only `base_url` is ever fetched."""

    base_url: str
    type: Literal["http"] = "http"
    clients: ClientAuthConfig | None = None


@dataclass(frozen=True)
class HfSourceConfig:
    """`{type: hf}`: a Hugging Face Hub (or a private mirror of one); the name is the HF_ENDPOINT prefix."""

    type: Literal["hf"] = "hf"
    endpoint: str = "https://huggingface.co"
    token_env: str | None = None  # environment variable holding bdn's own Hub token
    auth_ttl: float = 60.0  # seconds a client token's access to a private/gated repo is trusted
    storage_hosts: tuple[str, ...] = ("*.hf.co", "*.huggingface.co")  # where the Hub may redirect file reads


@dataclass(frozen=True)
class GcsSourceConfig:
    """`{type: gcs}`: Google Cloud Storage through gcsfs; `json_api` also serves the JSON API at `/`."""

    type: Literal["gcs"] = "gcs"
    endpoint_url: str | None = None  # None: Google's own; an emulator's URL in tests
    token: str = "google_default"  # what gcsfs accepts: anon, google_default, a service-account file path
    project: str | None = None
    json_api: bool = False  # serve /storage/v1/... and /download/storage/v1/... at the root for gcsfs clients
    clients: ClientAuthConfig | None = None


SourceConfig = S3SourceConfig | HttpSourceConfig | HfSourceConfig | GcsSourceConfig
_SOURCE_TYPES: dict[str, type[SourceConfig]] = {
    "s3": S3SourceConfig,
    "http": HttpSourceConfig,
    "hf": HfSourceConfig,
    "gcs": GcsSourceConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    cache: CacheConfig = field(default_factory=CacheConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    peers: PeersConfig = field(default_factory=PeersConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    log_level: str = "info"
    drain_timeout: float = 30.0  # seconds transfers in flight may take to finish after SIGTERM

    @property
    def json_api_source(self) -> str | None:
        """The `gcs` source that serves the GCS JSON API at `/`, if any."""
        return next((name for name, source in self.sources.items()
                     if isinstance(source, GcsSourceConfig) and source.json_api), None)


DEFAULT_YAML = """\
listen: 127.0.0.1:8080
cache:
  dir: ./var/cache
  disk_bytes: 100GiB
  ram_bytes: 1GiB
  chunk_bytes: 16MiB
  metadata_ttl: 60s
sources:
  s3: {type: s3, region: us-east-1, anonymous: true}
  hf: {type: hf, endpoint: "https://huggingface.co", token_env: HF_TOKEN}
"""


def parse_size(key: str, value: object) -> int:
    """`16MiB` → 16777216; a bare integer is bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size like 16MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
        return value
    match = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{key}: expected a size like 16MiB, got {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def parse_duration(key: str, value: object) -> float:
    """`60s` → 60.0; a bare number is seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 60s, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key}: must be a finite number of seconds, got {value}")
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{key}: expected a duration like 60s or 250ms, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or ""]


def parse_listen(key: str, value: object) -> tuple[str, int]:
    """`0.0.0.0:8080` → ("0.0.0.0", 8080); `[::]:8080` for IPv6."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host, int(port)


def _mapping(key: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _reject_unknown(key: str, raw: Mapping[str, Any], known: set[str]) -> None:
    for name in raw:
        if name not in known:
            prefix = f"{key}." if key else ""
            raise ConfigError(f"{prefix}{name}: unknown key (known: {', '.join(sorted(known))})")


def _string(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _positive(key: str, value: int) -> int:
    if value <= 0:
        raise ConfigError(f"{key}: must be greater than zero")
    return value


def _url(key: str, value: object) -> str:
    text = _string(key, value)
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", text)
        _ = parts.port  # raises ValueError for a port that is not one
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{key}: expected an http:// or https:// URL, got {value!r}")
    return text.rstrip("/")


def _parse_cache(raw: Mapping[str, Any]) -> CacheConfig:
    _reject_unknown("cache", raw, set(CacheConfig.__dataclass_fields__))
    value = _reader("cache", raw, CacheConfig())
    chunk = _positive("cache.chunk_bytes", parse_size(*value("chunk_bytes")))
    disk = parse_size(*value("disk_bytes"))
    if disk < chunk:
        raise ConfigError(f"cache.disk_bytes: must hold at least one chunk ({chunk} bytes)")
    return CacheConfig(
        dir=Path(_string("cache.dir", raw.get("dir", "./var/cache"))),
        disk_bytes=disk,
        ram_bytes=parse_size(*value("ram_bytes")),
        chunk_bytes=chunk,
        metadata_ttl=parse_duration(*value("metadata_ttl")),
        fill_concurrency=_positive("cache.fill_concurrency", _integer(*value("fill_concurrency"))),
        sendfile=_boolean(*value("sendfile")),
        disk_retry=parse_duration(*value("disk_retry")),
    )


def _reader(section: str, raw: Mapping[str, Any], defaults: object) -> Callable[[str], tuple[str, object]]:
    """`value(name)` → (dotted key, the configured value or the dataclass default)."""
    def value(name: str) -> tuple[str, object]:
        return f"{section}.{name}", raw.get(name, getattr(defaults, name))

    return value


def _non_negative(key: str, value: object) -> int:
    number = _integer(key, value)
    if number < 0:
        raise ConfigError(f"{key}: must not be negative, got {number}")
    return number


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _parse_upstream(raw: Mapping[str, Any]) -> UpstreamConfig:
    _reject_unknown("upstream", raw, set(UpstreamConfig.__dataclass_fields__))
    value = _reader("upstream", raw, UpstreamConfig())
    return UpstreamConfig(
        connect_timeout=parse_duration(*value("connect_timeout")),
        read_timeout=parse_duration(*value("read_timeout")),
        retries=_non_negative(*value("retries")),
        retry_backoff=parse_duration(*value("retry_backoff")),
        retry_max_wait=parse_duration(*value("retry_max_wait")),
    )


def _parse_downstream(raw: Mapping[str, Any]) -> DownstreamConfig:
    _reject_unknown("downstream", raw, set(DownstreamConfig.__dataclass_fields__))
    value = _reader("downstream", raw, DownstreamConfig())
    return DownstreamConfig(
        idle_timeout=_positive_duration(*value("idle_timeout")),
        send_timeout=_positive_duration(*value("send_timeout")),
    )


def _positive_duration(key: str, value: object) -> float:
    seconds = parse_duration(key, value)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be greater than zero")
    return seconds


def _parse_source(key: str, raw: Mapping[str, Any]) -> SourceConfig:
    kind = raw.get("type")
    if kind not in _SOURCE_TYPES:
        raise ConfigError(f"{key}.type: expected one of {', '.join(sorted(_SOURCE_TYPES))}, got {kind!r}")
    if kind == "hf" and "clients" in raw:
        raise ConfigError(f"{key}.clients: an hf source admits clients by their own Hub tokens (private and gated "
                          "repos are asked of the Hub); it takes no bdn tokens")
    _reject_unknown(key, raw, set(_SOURCE_TYPES[kind].__dataclass_fields__))
    clients = None if raw.get("clients") is None else _parse_clients(f"{key}.clients",
                                                                      _mapping(f"{key}.clients", raw["clients"]))
    if kind == "http":
        return HttpSourceConfig(base_url=_url(f"{key}.base_url", raw.get("base_url")), clients=clients)
    if kind == "hf":
        value = _reader(key, raw, HfSourceConfig())
        token_env = raw.get("token_env")
        return HfSourceConfig(
            endpoint=_url(*value("endpoint")),
            token_env=None if token_env is None else _string(f"{key}.token_env", token_env),
            auth_ttl=parse_duration(*value("auth_ttl")),
            storage_hosts=_host_patterns(f"{key}.storage_hosts", raw.get("storage_hosts",
                                                                           list(HfSourceConfig().storage_hosts))),
        )
    if kind == "gcs":
        endpoint_url, project = raw.get("endpoint_url"), raw.get("project")
        return GcsSourceConfig(
            endpoint_url=None if endpoint_url is None else _url(f"{key}.endpoint_url", endpoint_url),
            token=_string(f"{key}.token", raw.get("token", "google_default")),
            project=None if project is None else _string(f"{key}.project", project),
            json_api=_boolean(f"{key}.json_api", raw.get("json_api", False)),
            clients=clients,
        )
    region = raw.get("region")
    endpoint = raw.get("endpoint_url")
    return S3SourceConfig(
        region=None if region is None else _string(f"{key}.region", region),
        endpoint_url=None if endpoint is None else _url(f"{key}.endpoint_url", endpoint),
        anonymous=_boolean(f"{key}.anonymous", raw.get("anonymous", False)),
        clients=clients,
    )


MIN_TOKEN_LENGTH = 16


def _parse_clients(key: str, raw: Mapping[str, Any]) -> ClientAuthConfig:
    """Read the tokens now, so a missing variable or file stops start-up with the key named."""
    _reject_unknown(key, raw, {"bearer_tokens_env", "bearer_tokens_file"})
    env, path = raw.get("bearer_tokens_env"), raw.get("bearer_tokens_file")
    if (env is None) == (path is None):
        raise ConfigError(f"{key}: give exactly one of bearer_tokens_env and bearer_tokens_file")
    if env is not None:
        name = _string(f"{key}.bearer_tokens_env", env)
        text = os.environ.get(name, "")
        tokens = [token.strip() for token in text.split(",")]
        where = f"{key}.bearer_tokens_env"
    else:
        where = f"{key}.bearer_tokens_file"
        try:
            text = Path(_string(where, path)).read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
        tokens = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    tokens = [token for token in tokens if token]
    if not tokens:
        raise ConfigError(f"{where}: names no tokens (an unset or empty variable, or an empty file)")
    if any(len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token for token in tokens):
        raise ConfigError(f"{where}: every token must be at least {MIN_TOKEN_LENGTH} printable characters, no spaces")
    return ClientAuthConfig(bearer_tokens_env=env, bearer_tokens_file=path, tokens=frozenset(tokens))


def _host_patterns(key: str, value: object) -> tuple[str, ...]:
    """Host names, or `*.domain` for any host under a domain."""
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of host names like cdn.example.com or *.example.com")
    for index, host in enumerate(value):
        if not isinstance(host, str) or not re.fullmatch(r"(\*\.)?[a-z0-9.-]+", host.lower()) or host.strip("*.") == "":
            raise ConfigError(f"{key}[{index}]: expected a host name like cdn.example.com or *.example.com, "
                              f"got {host!r}")
    return tuple(host.lower() for host in value)


def _parse_admin(raw: Mapping[str, Any]) -> AdminConfig:
    _reject_unknown("admin", raw, {"allow"})
    allow = raw.get("allow", [str(network) for network in AdminConfig().allow])
    if not isinstance(allow, list):
        raise ConfigError("admin.allow: expected a list of addresses or networks like 10.0.0.0/8")
    networks = []
    for index, entry in enumerate(allow):
        try:
            networks.append(ipaddress.ip_network(str(entry), strict=False))
        except ValueError:
            raise ConfigError(f"admin.allow[{index}]: expected an address or network like 10.0.0.0/8, "
                              f"got {entry!r}") from None
    return AdminConfig(allow=tuple(networks))


def _parse_sources(raw: Mapping[str, Any]) -> dict[str, SourceConfig]:
    sources: dict[str, SourceConfig] = {}
    json_api = [name for name, body in raw.items() if isinstance(body, Mapping) and body.get("json_api")]
    if len(json_api) > 1:
        raise ConfigError(f"sources.{json_api[1]}.json_api: only one source can serve the GCS JSON API at /")
    for name, body in raw.items():
        key = f"sources.{name}"
        if not isinstance(name, str) or not _SOURCE_NAME.match(name) or name in RESERVED_NAMES:
            reserved = ", ".join(sorted(RESERVED_NAMES))
            raise ConfigError(f"{key}: a source name is lowercase letters, digits, '-' or '_', not one of {reserved}")
        sources[name] = _parse_source(key, _mapping(key, body))
    return sources


def _parse_peers(raw: Mapping[str, Any]) -> PeersConfig:
    _reject_unknown("peers", raw, set(PeersConfig.__dataclass_fields__))
    value = _reader("peers", raw, PeersConfig())
    static = raw.get("static", [])
    if not isinstance(static, list):
        raise ConfigError("peers.static: expected a list of http://HOST:PORT")
    dns, me = raw.get("dns"), raw.get("self")
    config = PeersConfig(
        dns=None if dns is None else _string("peers.dns", dns),
        port=_integer(*value("port")),
        static=tuple(_url(f"peers.static[{i}]", url) for i, url in enumerate(static)),
        self=None if me is None else _string("peers.self", me),
        refresh=parse_duration(*value("refresh")),
        timeout=parse_duration(*value("timeout")),
    )
    if config.enabled and config.self is None:
        raise ConfigError("peers.self: required with peers, so this node can recognise itself (e.g. ${POD_IP}:8080)")
    return config


def from_mapping(raw: object) -> Config:
    """Validate a parsed YAML document into a `Config`."""
    top = _mapping("(top level)", raw)
    _reject_unknown("", top, {"listen", "cache", "upstream", "downstream", "sources", "peers", "admin",
                              "log_level", "drain_timeout"})
    host, port = parse_listen("listen", top.get("listen", f"127.0.0.1:{DEFAULT_PORT}"))
    log_level = top.get("log_level", "info")
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: expected debug, info, warning or error, got {log_level!r}")
    return Config(
        listen_host=host,
        listen_port=port,
        cache=_parse_cache(_mapping("cache", top.get("cache"))),
        upstream=_parse_upstream(_mapping("upstream", top.get("upstream"))),
        downstream=_parse_downstream(_mapping("downstream", top.get("downstream"))),
        sources=_parse_sources(_mapping("sources", top.get("sources"))),
        peers=_parse_peers(_mapping("peers", top.get("peers"))),
        admin=_parse_admin(_mapping("admin", top.get("admin"))),
        log_level=log_level,
        drain_timeout=parse_duration("drain_timeout", top.get("drain_timeout", 30.0)),
    )


def expand_environment(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`${NAME}` → the environment variable's value (for `peers.self: ${POD_IP}:8080`); unset is an error."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise ConfigError(f"(file): ${{{match.group(1)}}} is used but not set in the environment")
        return env[match.group(1)]

    return _ENV_REFERENCE.sub(value, text)


def from_yaml(text: str) -> Config:
    """Parse and validate YAML text (after `${NAME}` environment references are expanded)."""
    try:
        raw = yaml.safe_load(expand_environment(text))
    except yaml.YAMLError as exc:
        raise ConfigError(f"(file): not valid YAML: {str(exc).splitlines()[0]}") from None
    return from_mapping(raw)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load the file at `path`, or the embedded defaults when `path` is None."""
    if path is None:
        return from_yaml(DEFAULT_YAML)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"(file): cannot read {path}: {exc.strerror}") from None
    return from_yaml(text)
