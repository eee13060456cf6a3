"""Pure request-path decoding: `/{source}/{rest}` → source and key (or segments), refusing path tricks.

Every path is attacker-controlled. The raw request target is split on `/` *before* percent
decoding, each piece decoded exactly once, and refused (`BadRequest`) when the decoded key holds
a `..` segment (raw or `%2e%2e`), a NUL, a leading `/`, or bytes that are not UTF-8. Cache file
names never derive from these strings (they are hashes), so this guards upstream keys, not disk.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from bdn.errors import BadRequest
from bdn.objects import checked_key

MAX_PATH_BYTES = 4096


def _decode(raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError:  # also a raw non-UTF-8 byte, which aiohttp's Python parser passes on as a lone surrogate
        raise BadRequest("path is not valid UTF-8 after percent-decoding") from None


def split_target(raw_target: str) -> tuple[str, str]:
    """(decoded source, raw rest) from a raw request target such as `/s3/bucket/a%20b?x=1`."""
    raw_path = raw_target.split("?", 1)[0].split("#", 1)[0]
    if len(raw_path) > MAX_PATH_BYTES:
        raise BadRequest(f"path longer than {MAX_PATH_BYTES} bytes")
    if not raw_path.startswith("/"):
        raise BadRequest("request target must be an absolute path")
    source_raw, _, rest_raw = raw_path[1:].partition("/")
    return _decode(source_raw), rest_raw


def object_key(raw_rest: str) -> str:
    """The decoded, checked key of `/{source}/{key}` (a `%2F` is a `/` like any other)."""
    return checked_key(_decode(raw_rest))


def segments(raw_rest: str) -> list[str]:
    """The path segments, each decoded on its own (so `refs%2Fpr%2F1` stays one segment) and checked."""
    parts = [_decode(part) for part in raw_rest.split("/")]
    for part in parts:
        if "\0" in part:
            raise BadRequest("path contains a NUL byte")
        if ".." in part.split("/"):
            raise BadRequest("path must not contain '..' segments")
    return parts


def without_dot_segments(key: str) -> str:
    """`a/./b` → `a/b`: what an HTTP client makes of the URL (RFC 3986 §5.2.4), so one URL is one cache key.

    Only for `http` sources: an S3 or GCS key is opaque, and `a/./b` there names another object.
    """
    return "/".join(segment for segment in key.split("/") if segment != ".")
