"""YAML text or file → `Config`, with `${NAME}` expanded; any error is one `ConfigError` line, `KEY: message`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from bdn.config.model import SOURCE_TYPES, Config
from bdn.config.units import ISSUE, ConfigError

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

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


def dotted_key(location: Sequence[str | int]) -> str:
    """A pydantic error location → `cache.chunk_bytes`, `peers.static[0]`, `sources.web.base_url`."""
    parts = list(location)
    if parts[:1] == ["sources"] and len(parts) > 2 and parts[2] in SOURCE_TYPES:
        del parts[2]  # the `type` the sources union picked, which pydantic puts between a source and its keys
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else part
    return key or "(top level)"


def one_line(exc: ValidationError) -> ConfigError:
    """The first error pydantic found, as `KEY: message` (bdn's checks word their own; pydantic's keep its words)."""
    error = exc.errors(include_url=False)[0]
    location, context = list(error["loc"]), error.get("ctx") or {}
    if location[-1:] == ["[key]"]:  # a bad mapping key (a source name): named as it was written, not as pydantic's
        location[-2:] = [str(error["input"])]
    message = " ".join(str(error["msg"]).splitlines())
    if error["type"] == ISSUE:
        message = str(context["message"])
        location += context["at"]
    return ConfigError(f"{dotted_key(location)}: {message}")


def from_mapping(raw: object) -> Config:
    """Validate a parsed YAML document into a `Config`."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise one_line(exc) from None


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
