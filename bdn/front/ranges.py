"""Pure RFC 9110 byte-range logic: parse `Range`/`If-Range` against a known size, format `Content-Range`.

Decisions (RFC 9110 §14):
- one range-spec is honoured: `bytes=a-b`, `bytes=a-`, `bytes=-n`; an end past the size is clamped;
- a syntactically invalid header, another unit, or a multi-range set is ignored and the whole
  body is sent with 200 (§14.2 lets a server ignore Range; we never build multipart/byteranges);
- a valid range that starts at or past the size, or `bytes=-0`, is unsatisfiable: 416 with
  `Content-Range: bytes */SIZE`;
- a suffix range on an empty representation selects nothing we can express in Content-Range,
  so the empty body is sent with 200 (§14.1.1 only says such a range is satisfiable);
- `If-Range` (§13.1.5) honours the range only when it equals the current strong ETag, or the
  current Last-Modified exactly; otherwise 200 with the whole body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)  # DIGIT is 0-9 only
_MAX_DIGITS = 19  # larger numbers cannot be offsets of any object we hold


@dataclass(frozen=True)
class ByteRange:
    """A satisfiable range, `start` inclusive and `end` exclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class Unsatisfiable(Exception):
    """A well-formed range that selects no byte of the representation (→ 416)."""


def parse(header: str | None, size: int) -> ByteRange | None:
    """The range a `Range` header selects, or None for "send the whole body with 200".

    Raises `Unsatisfiable` for a valid range that selects nothing.
    """
    if header is None:
        return None
    match = _RANGE.match(header)
    if not match:
        return None  # invalid, multi-range or another unit: ignored (§14.2)
    first, last = match.group(1), match.group(2)
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return None
    if not first:
        if not last:
            return None  # "bytes=-" is not a range-spec
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable
        if size == 0:
            return None
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None  # last < first makes the range-spec invalid (§14.1.1)
    if start >= size:
        raise Unsatisfiable
    end = size if not last else min(int(last) + 1, size)
    return ByteRange(start, end)


def if_range_allows(if_range: str | None, etag: str, last_modified: str | None) -> bool:
    """Whether a `Range` may be honoured given the request's `If-Range` (§13.1.5)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return not value.startswith("W/") and value == etag
    return last_modified is not None and value == last_modified


def unsatisfied_content_range(size: int) -> str:
    return f"bytes */{size}"
