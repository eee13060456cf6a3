"""The typed configuration, one frozen pydantic model per YAML section; every default lives here.

Why pydantic v2 and not msgspec: pydantic runs our own check per field and words its error our
way, reports where each error is (a location we turn into the dotted key), dispatches the
`sources` union on `type`, and its mypy plugin types the models' constructors. msgspec's errors
are a fixed-format string, and its hooks for custom types are coarser (per type, not per field).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bdn.addresses import parse_ip
from bdn.config.units import (
    Boolean,
    Directory,
    Duration,
    HostPatterns,
    Integer,
    LogLevel,
    Networks,
    NonNegativeInteger,
    OptionalText,
    OptionalUrl,
    PositiveDuration,
    PositiveInteger,
    PositiveSize,
    Size,
    Text,
    Url,
    Urls,
    invalid,
    listen,
    text,
    within,
)

DEFAULT_PORT = 8080
RESERVED_NAMES = frozenset({"healthz", "readyz", "metrics", "v1", "_peer", "_bdn", "storage", "download"})
MIN_TOKEN_LENGTH = 16
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Section(BaseModel):
    """A mapping of the file: null is empty, anything else that is not a mapping or names an unknown key is refused.

    The checks of the whole mapping run before its values are checked, in the order of the fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    refused_keys: ClassVar[Mapping[str, str]] = {}  # keys refused with a reason of their own, before unknown keys

    @classmethod
    def yaml_keys(cls) -> set[str]:
        """The keys this section takes in YAML."""
        return set(cls.model_fields)

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The mapping's own checks and translations, after its keys are known to be good."""
        return raw

    @model_validator(mode="before")
    @classmethod
    def _a_mapping_of_known_keys(cls, data: object) -> object:
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise invalid(f"expected a mapping, got {type(data).__name__}")
        for name, reason in cls.refused_keys.items():
            if name in data:
                raise invalid(reason, name)
        known = cls.yaml_keys()
        for name in data:
            if name not in known:
                raise invalid(f"unknown key (known: {', '.join(sorted(known))})", str(name))
        raw = dict(data)
        for name, field in cls.model_fields.items():
            if field.is_required():
                raw.setdefault(name, None)  # an absent required key is checked as null, so its own check words it
        return cls.prepare(raw)


class CacheConfig(Section):
    """`cache:`: where and how much the node caches."""

    chunk_bytes: PositiveSize = 16 * 2**20  # unit of fill, caching and coalescing
    disk_bytes: Size = Field(default=100 * 2**30, validate_default=True)  # disk budget; LRU chunks are evicted past it
    dir: Directory = Path("./var/cache")  # disk tier root (a node's NVMe)
    ram_bytes: Size = 1 * 2**30  # RAM tier budget
    metadata_ttl: Duration = 60.0  # seconds an object's size/ETag is trusted before one revalidating HEAD
    fill_concurrency: PositiveInteger = 8  # chunks of one read fetched from upstream at once (read-ahead)
    sendfile: Boolean = True  # send disk bytes with the kernel's sendfile; false reads them in a thread
    disk_retry: Duration = 5.0  # seconds between attempts to write to a cache disk that failed (full, I/O errors)

    @field_validator("disk_bytes")
    @classmethod
    def _holds_a_chunk(cls, disk: int, info: ValidationInfo) -> int:
        chunk = info.data.get("chunk_bytes")
        if chunk is not None and disk < chunk:
            raise invalid(f"must hold at least one chunk ({chunk} bytes)")
        return disk


class UpstreamConfig(Section):
    """`upstream:`: how bdn talks to every source."""

    connect_timeout: Duration = 10.0  # seconds to open a connection
    read_timeout: Duration = 30.0  # seconds without a byte before an upstream read fails
    retries: NonNegativeInteger = 3  # retries of a request that failed to connect, timed out, reset, or got 429/5xx
    retry_backoff: Duration = 0.2  # seconds before the first retry, doubled for each next one (with jitter)
    retry_max_wait: Duration = 10.0  # longest wait for one retry; a longer Retry-After ends retries with 503


class DownstreamConfig(Section):
    """`downstream:`: how bdn treats its clients' connections."""

    idle_timeout: PositiveDuration = 60.0  # seconds a connection may sit without a complete request (or headers)
    send_timeout: PositiveDuration = 60.0  # seconds a client may accept no byte of a response before it is cut


class PeersConfig(Section):
    """`peers:`: the regional peer tier. Off unless `dns` or `static` names some peers."""

    dns: OptionalText = None  # A/AAAA records of a headless Service, re-resolved every `refresh`
    port: Integer = DEFAULT_PORT  # port of the peers found through `dns`
    static: Urls = ()  # or a fixed list of http://HOST:PORT
    self: OptionalText = None  # HOST:PORT under which this node appears in the list
    refresh: Duration = 10.0  # seconds between DNS lookups
    timeout: Duration = 2.0  # connect / first-byte timeout before falling back to the upstream

    @property
    def enabled(self) -> bool:
        return bool(self.dns or self.static)

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw.get("static", ()), (list, tuple)):  # the list itself first, its items in field order
            raise invalid("expected a list of http://HOST:PORT", "static")
        return raw

    @model_validator(mode="after")
    def _names_itself(self) -> Self:
        if self.enabled and self.self is None:
            raise invalid("required with peers, so this node can recognise itself (e.g. ${POD_IP}:8080)", "self")
        return self


class ClientAuthConfig(Section):
    """`sources.NAME.clients:`: every request for the source must carry one of these tokens.

    Tokens come from an environment variable (`bearer_tokens_env`, comma-separated) or a file
    (`bearer_tokens_file`, one per line), read once when the config is validated, so a missing
    variable or file stops start-up with the key named; they are never part of a repr or a dump.
    """

    bearer_tokens_env: OptionalText = None
    bearer_tokens_file: OptionalText = None
    tokens: frozenset[str] = Field(default=frozenset(), repr=False, exclude=True)

    @classmethod
    def yaml_keys(cls) -> set[str]:
        return {"bearer_tokens_env", "bearer_tokens_file"}

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        env, path = raw.get("bearer_tokens_env"), raw.get("bearer_tokens_file")
        if (env is None) == (path is None):
            raise invalid("give exactly one of bearer_tokens_env and bearer_tokens_file")
        if env is not None:
            where = "bearer_tokens_env"
            tokens = [token.strip() for token in os.environ.get(within(where, text, env), "").split(",")]
        else:
            where = "bearer_tokens_file"
            try:
                lines = Path(within(where, text, path)).read_text()
            except OSError as exc:
                raise invalid(f"cannot read {path}: {exc.strerror}", where) from None
            tokens = [line.strip() for line in lines.splitlines() if not line.strip().startswith("#")]
        tokens = [token for token in tokens if token]
        if not tokens:
            raise invalid("names no tokens (an unset or empty variable, or an empty file)", where)
        if any(len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token for token in tokens):
            raise invalid(f"every token must be at least {MIN_TOKEN_LENGTH} printable characters, no spaces", where)
        return {**raw, "tokens": frozenset(tokens)}


class AdminConfig(Section):
    """`admin:`: who may use the admin API (`/v1/warm`)."""

    allow: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

    def allows(self, address: str | None) -> bool:
        ip = parse_ip(address)
        return ip is not None and any(ip in network for network in self.allow)


class S3SourceConfig(Section):
    """`{type: s3}`: Amazon S3 or any S3-compatible store (R2: `endpoint_url` + region `auto`)."""

    type: Literal["s3"] = "s3"
    clients: ClientAuthConfig | None = None  # tokens clients must present; None: open to every client
    region: OptionalText = None
    endpoint_url: OptionalUrl = None
    anonymous: Boolean = False  # unsigned requests (public buckets); otherwise the standard AWS chain


class HttpSourceConfig(Section):
    """`{type: http}`: a fixed HTTP(S) origin that serves Range; only `base_url` is ever fetched."""

    type: Literal["http"] = "http"
    clients: ClientAuthConfig | None = None
    base_url: Url


class HfSourceConfig(Section):
    """`{type: hf}`: a Hugging Face Hub (or a private mirror of one); the name is the HF_ENDPOINT prefix."""

    refused_keys: ClassVar[Mapping[str, str]] = {
        "clients": "an hf source admits clients by their own Hub tokens (private and gated repos are asked of the "
                   "Hub); it takes no bdn tokens"}

    type: Literal["hf"] = "hf"
    endpoint: Url = "https://huggingface.co"
    token_env: OptionalText = None  # environment variable holding bdn's own Hub token
    auth_ttl: Duration = 60.0  # seconds a client token's access to a private/gated repo is trusted
    storage_hosts: HostPatterns = ("*.hf.co", "*.huggingface.co")  # where the Hub may redirect file reads


class GcsSourceConfig(Section):
    """`{type: gcs}`: Google Cloud Storage through gcsfs; `json_api` also serves the JSON API at `/`."""

    type: Literal["gcs"] = "gcs"
    clients: ClientAuthConfig | None = None
    endpoint_url: OptionalUrl = None  # None: Google's own; an emulator's URL in tests
    token: Text = "google_default"  # what gcsfs accepts: anon, google_default, a service-account file path
    project: OptionalText = None
    json_api: Boolean = False  # serve /storage/v1/... and /download/storage/v1/... at the root for gcsfs clients


SourceConfig = Annotated[S3SourceConfig | HttpSourceConfig | HfSourceConfig | GcsSourceConfig,
                         Field(discriminator="type")]
SOURCE_TYPES: Mapping[str, type[Section]] = {
    "s3": S3SourceConfig, "http": HttpSourceConfig, "hf": HfSourceConfig, "gcs": GcsSourceConfig}


def _source_name(name: object) -> str:
    if not isinstance(name, str) or not _SOURCE_NAME.match(name) or name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        raise invalid(f"a source name is lowercase letters, digits, '-' or '_', not one of {reserved}")
    return name


def _source_body(body: object) -> object:
    """A mapping whose `type` picks the model that checks the rest."""
    if isinstance(body, Section):
        return body
    body = {} if body is None else body
    if not isinstance(body, Mapping):
        raise invalid(f"expected a mapping, got {type(body).__name__}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in SOURCE_TYPES:
        raise invalid(f"expected one of {', '.join(sorted(SOURCE_TYPES))}, got {kind!r}", "type")
    return body


class Config(Section):
    """The whole daemon configuration. YAML's `listen: HOST:PORT` is `listen_host` and `listen_port` here."""

    listen_host: Text = "127.0.0.1"
    listen_port: Integer = DEFAULT_PORT
    log_level: LogLevel = "info"
    cache: CacheConfig = Field(default_factory=CacheConfig)
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)
    sources: Mapping[Annotated[str, BeforeValidator(_source_name)],
                     Annotated[SourceConfig, BeforeValidator(_source_body)]] = Field(default_factory=dict)
    peers: PeersConfig = Field(default_factory=PeersConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    drain_timeout: Duration = 30.0  # seconds transfers in flight may take to finish after SIGTERM

    @classmethod
    def yaml_keys(cls) -> set[str]:
        return set(cls.model_fields) - {"listen_host", "listen_port"} | {"listen"}

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        if "listen" in raw:
            raw["listen_host"], raw["listen_port"] = within("listen", listen, raw.pop("listen"))
        return raw

    @field_validator("sources", mode="before")
    @classmethod
    def _one_json_api(cls, sources: object) -> object:
        sources = {} if sources is None else sources
        if not isinstance(sources, Mapping):
            raise invalid(f"expected a mapping, got {type(sources).__name__}")
        json_api = [name for name, body in sources.items() if isinstance(body, Mapping) and body.get("json_api")]
        if len(json_api) > 1:
            raise invalid("only one source can serve the GCS JSON API at /", str(json_api[1]), "json_api")
        return dict(sources)

    @property
    def json_api_source(self) -> str | None:
        """The `gcs` source that serves the GCS JSON API at `/`, if any."""
        return next((name for name, source in self.sources.items()
                     if isinstance(source, GcsSourceConfig) and source.json_api), None)
