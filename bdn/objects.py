"""What an object is to the cache: a reference (source + path) and the version the upstream reports.

Cache keys are immutable (groupcache's rule): chunk names hash the source, path, ETag and
VersionId together, so bytes of two versions of one key can never be mixed or confused.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bdn.errors import BadRequest


@dataclass(frozen=True)
class ObjectRef:
    """One object as a client names it: `/{source}/{path}`; `path` is already decoded and checked."""

    source: str
    path: str

    @property
    def key(self) -> str:
        """The metadata key: stable across versions of the object."""
        return f"{self.source}\0{self.path}"


@dataclass(frozen=True)
class ObjectInfo:
    """One version of an object, as the upstream described it."""

    size: int
    etag: str  # the upstream's ETag, quoted, byte-identical to what the upstream sent
    last_modified: str | None = None  # HTTP-date, as sent
    version_id: str | None = None
    content_type: str | None = None
    digest: str | None = None  # "algorithm:hex" (see bdn.sources.digests): checked before the object is trusted
    attributes: dict[str, Any] | None = field(default=None, compare=False)  # source-specific, passed to clients
    uncacheable: bool = False  # the source saw its reads answer another version than stat reports

    @property
    def pinnable(self) -> bool:
        """Whether every read can be held to this version: a strong ETag or a Last-Modified to check answers by.

        A version that is not (a weak ETag alone, or validators that differ between HEAD and GET)
        is served straight from the upstream, one upstream response per client response, and never
        cached: chunks read at different times could belong to different versions.
        """
        strong = bool(self.etag) and not self.etag.startswith("W/")
        return not self.uncacheable and (strong or bool(self.last_modified))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectInfo:
        return cls(**data)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SIZE = 2**63 - 1


def checked_info(info: ObjectInfo) -> ObjectInfo:
    """`info` if it is one a source could have reported (it came from another node); BadRequest otherwise.

    Fields of their declared types, a size from 0 to 2**63 - 1, and strings (which become response
    headers and upstream request values) with a UTF-8 form and no control characters.
    """
    if type(info.size) is not int or not 0 <= info.size <= MAX_SIZE:
        raise BadRequest("object info: size must be a whole number of bytes")
    texts = {"etag": info.etag, "last_modified": info.last_modified, "version_id": info.version_id,
             "content_type": info.content_type, "digest": info.digest}
    for name, value in texts.items():
        if value is None and name != "etag":
            continue
        if not isinstance(value, str) or _CONTROL.search(value) or not has_utf8(value):
            raise BadRequest(f"object info: {name} must be text without control characters")
    if type(info.uncacheable) is not bool:
        raise BadRequest("object info: uncacheable must be true or false")
    if info.attributes is not None and not isinstance(info.attributes, dict):
        raise BadRequest("object info: attributes must be an object")
    return info


def has_utf8(text: str) -> bool:
    """Whether `text` has a UTF-8 form (lone surrogates, as a JSON `\\udcff` escape gives, have none)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def checked_key(key: str) -> str:
    """The key itself if it is safe to pass upstream; `BadRequest` otherwise."""
    if "\0" in key:
        raise BadRequest("path contains a NUL byte")
    if key.startswith("/"):
        raise BadRequest("path must not start with '/' after decoding")
    if any(segment == ".." for segment in key.split("/")):
        raise BadRequest("path must not contain '..' segments")
    return key


def split_bucket_key(path: str) -> tuple[str, str]:
    """`bucket/key/with/slashes` → ("bucket", "key/with/slashes"); both parts must be there."""
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise BadRequest("object paths are /{source}/{bucket}/{key}")
    return bucket, key


@functools.lru_cache(maxsize=65536)  # asked on every request; a sha256 per hit shows in profiles
def version_id(ref: ObjectRef, info: ObjectInfo) -> str:
    """A filesystem-safe name for one version of one object (hex sha256)."""
    material = "\0".join((ref.source, ref.path, info.etag, info.version_id or "", str(info.size)))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def chunk_name(version: str, index: int) -> str:
    """The cache name of chunk `index` of an object version."""
    return f"{version}.{index}"


def chunk_span(index: int, chunk_bytes: int, size: int) -> tuple[int, int]:
    """Byte offsets [start, end) that chunk `index` covers in an object of `size` bytes."""
    start = index * chunk_bytes
    return start, min(start + chunk_bytes, size)
