"""The one typed configuration object, validated at start; errors name the dotted key.

`units` holds the value types (sizes, durations, addresses), `model` the pydantic models of the
sections (and why pydantic), `load` the YAML reading and the one-line errors.
"""

from bdn.config.load import DEFAULT_YAML, expand_environment, from_mapping, from_yaml, load
from bdn.config.model import (
    DEFAULT_PORT,
    MIN_TOKEN_LENGTH,
    RESERVED_NAMES,
    AdminConfig,
    CacheConfig,
    ClientAuthConfig,
    Config,
    DownstreamConfig,
    GcsSourceConfig,
    HfSourceConfig,
    HttpSourceConfig,
    PeersConfig,
    S3SourceConfig,
    SourceConfig,
    UpstreamConfig,
)
from bdn.config.units import ConfigError, parse_duration, parse_listen, parse_size

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_YAML",
    "MIN_TOKEN_LENGTH",
    "RESERVED_NAMES",
    "AdminConfig",
    "CacheConfig",
    "ClientAuthConfig",
    "Config",
    "ConfigError",
    "DownstreamConfig",
    "GcsSourceConfig",
    "HfSourceConfig",
    "HttpSourceConfig",
    "PeersConfig",
    "S3SourceConfig",
    "SourceConfig",
    "UpstreamConfig",
    "expand_environment",
    "from_mapping",
    "from_yaml",
    "load",
    "parse_duration",
    "parse_listen",
    "parse_size",
]
