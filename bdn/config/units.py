"""Value types of the config file (sizes, durations, addresses, URLs, host patterns), each checked strictly."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

ISSUE = "bdn_config"  # the error type of every check below; `load` turns it into one `KEY: message` line
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9.-]+")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that bdn cannot start with; the message names the key."""


def invalid(message: str, *at: str | int) -> PydanticCustomError:
    """The error of one check; `at` names the key below the one being checked (an unknown key, a list index)."""
    return PydanticCustomError(ISSUE, "{message}", {"message": message, "at": at})


def message_of(exc: PydanticCustomError) -> str:
    return str((exc.context or {}).get("message", exc.message()))


# -- the checks: a value in, the typed value out, or `invalid(...)` -------------------------------


def size(value: object) -> int:
    """`16MiB` → 16777216; a bare integer is bytes."""
    if isinstance(value, bool):
        raise invalid(f"expected a size like 16MiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise invalid(f"must not be negative, got {value}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise invalid(f"expected a size like 16MiB, got {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def duration(value: object) -> float:
    """`60s` → 60.0; a bare number is seconds."""
    if isinstance(value, bool):
        raise invalid(f"expected a duration like 60s, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise invalid(f"must be a finite number of seconds, got {value}")
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise invalid(f"expected a duration like 60s or 250ms, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or ""]


def listen(value: object) -> tuple[str, int]:
    """`0.0.0.0:8080` → ("0.0.0.0", 8080); `[::]:8080` for IPv6."""
    if not isinstance(value, str) or ":" not in value:
        raise invalid(f"expected HOST:PORT, got {value!r}")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise invalid(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"expected a non-empty string, got {value!r}")
    return value


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"expected true or false, got {value!r}")
    return value


def integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"expected an integer, got {value!r}")
    return value


def positive(value: int | float) -> int | float:
    if value <= 0:
        raise invalid("must be greater than zero")
    return value


def non_negative(value: int) -> int:
    if value < 0:
        raise invalid(f"must not be negative, got {value}")
    return value


def log_level(value: object) -> str:
    if not isinstance(value, str) or value not in ("debug", "info", "warning", "error"):
        raise invalid(f"expected debug, info, warning or error, got {value!r}")
    return value


def url(value: object) -> str:
    """An http:// or https:// URL with a host (and a valid port, if any), without its trailing `/`."""
    checked = text(value)
    try:
        parts = urlsplit(checked)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", checked)
        _ = parts.port  # raises ValueError for a port that is not one
    except ValueError:
        valid = False
    if not valid:
        raise invalid(f"expected an http:// or https:// URL, got {value!r}")
    return checked.rstrip("/")


def directory(value: object) -> Path:
    return value if isinstance(value, Path) else Path(text(value))


def host_pattern(value: object) -> str:
    """A host name, or `*.domain` for any host under a domain; lowercased."""
    if not isinstance(value, str) or not _HOST_PATTERN.fullmatch(value.lower()) or value.strip("*.") == "":
        raise invalid(f"expected a host name like cdn.example.com or *.example.com, got {value!r}")
    return value.lower()


def network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise invalid(f"expected an address or network like 10.0.0.0/8, got {value!r}") from None


def sequence(what: str) -> BeforeValidator:
    """A YAML list (or, from Python, a tuple) whose items are then checked one by one, each error at `[index]`."""
    def check(value: object) -> tuple[object, ...]:
        if not isinstance(value, (list, tuple)):
            raise invalid(f"expected a list of {what}")
        return tuple(value)

    return BeforeValidator(check)


def optional(check: Callable[[object], T]) -> BeforeValidator:
    """The same check, except that null (or an absent key) is None."""
    def maybe(value: object) -> T | None:
        return None if value is None else check(value)

    return BeforeValidator(maybe)


# -- the types the models are made of -------------------------------------------------------------

Size = Annotated[int, BeforeValidator(size)]
PositiveSize = Annotated[int, BeforeValidator(size), AfterValidator(positive)]
Duration = Annotated[float, BeforeValidator(duration)]
PositiveDuration = Annotated[float, BeforeValidator(duration), AfterValidator(positive)]
Integer = Annotated[int, BeforeValidator(integer)]
PositiveInteger = Annotated[int, BeforeValidator(integer), AfterValidator(positive)]
NonNegativeInteger = Annotated[int, BeforeValidator(integer), AfterValidator(non_negative)]
Boolean = Annotated[bool, BeforeValidator(boolean)]
Text = Annotated[str, BeforeValidator(text)]
OptionalText = Annotated[str | None, optional(text)]
LogLevel = Annotated[str, BeforeValidator(log_level)]
Url = Annotated[str, BeforeValidator(url)]
OptionalUrl = Annotated[str | None, optional(url)]
Directory = Annotated[Path, BeforeValidator(directory)]
HostPattern = Annotated[str, BeforeValidator(host_pattern)]
HostPatterns = Annotated[tuple[HostPattern, ...], sequence("host names like cdn.example.com or *.example.com")]
Urls = Annotated[tuple[Url, ...], sequence("http://HOST:PORT")]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(network)]
Networks = Annotated[tuple[Network, ...], sequence("addresses or networks like 10.0.0.0/8")]


# -- the same checks for callers that hold one value and its key ----------------------------------


def _named(key: str, check: Callable[[object], T], value: object) -> T:
    try:
        return check(value)
    except PydanticCustomError as exc:
        raise ConfigError(f"{key}: {message_of(exc)}") from None


def parse_size(key: str, value: object) -> int:
    """`16MiB` → 16777216; a bare integer is bytes. A bad value raises `ConfigError` naming `key`."""
    return _named(key, size, value)


def parse_duration(key: str, value: object) -> float:
    """`60s` → 60.0; a bare number is seconds. A bad value raises `ConfigError` naming `key`."""
    return _named(key, duration, value)


def parse_listen(key: str, value: object) -> tuple[str, int]:
    """`0.0.0.0:8080` → ("0.0.0.0", 8080); `[::]:8080` for IPv6. A bad value raises `ConfigError` naming `key`."""
    return _named(key, listen, value)


def within(key: str, check: Callable[[object], T], value: object) -> T:
    """`check(value)` for the value of `key` below the one being validated: its errors name that key."""
    try:
        return check(value)
    except PydanticCustomError as exc:
        raise invalid(message_of(exc), key, *(exc.context or {}).get("at", ())) from None
