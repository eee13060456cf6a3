"""Content digests an upstream vouches for, and the hashers that check them.

A digest is written `algorithm:hex`: `sha256` (Hugging Face LFS files), `git-sha1` (a regular
file in a git repo: sha1 over `blob {size}\\0` + content), `md5` and `crc32c` (GCS objects,
which the JSON API gives in base64 and `from_base64` turns into hex).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Protocol

import google_crc32c


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Crc32c:
    def __init__(self) -> None:
        self._checksum = google_crc32c.Checksum()

    def update(self, data: bytes, /) -> None:
        self._checksum.update(data)

    def hexdigest(self) -> str:
        return bytes(self._checksum.digest()).hex()


def hasher_for(digest: str, size: int) -> tuple[Hasher, str]:
    """(a fresh hasher, the expected hex value) for a digest of a `size`-byte object."""
    algorithm, _, expected = digest.partition(":")
    if algorithm == "sha256":
        return hashlib.sha256(), expected
    if algorithm == "git-sha1":
        return hashlib.sha1(b"blob %d\0" % size), expected
    if algorithm == "md5":
        return hashlib.md5(), expected
    if algorithm == "crc32c":
        return _Crc32c(), expected
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def from_base64(algorithm: str, value: str) -> str:
    """`algorithm:hex` from a base64 digest as GCS gives it."""
    return f"{algorithm}:{base64.b64decode(value).hex()}"
