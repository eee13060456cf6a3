"""S3 and S3-compatible stores (R2) through one shared aiobotocore client per source.

Paths are `{bucket}/{key}`. Credentials come from the standard AWS chain (environment,
profile, IRSA web identity) unless the source is `anonymous`. Reads are ranged GETs pinned to
the version being cached (`If-Match: <etag>`, and `VersionId` when the bucket reports one), so
chunks of two versions can never mix; the answer's `Content-Range` and length are checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import botocore
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from bdn.config import S3SourceConfig, UpstreamConfig
from bdn.errors import BadRequest, Forbidden, NotFound, UpstreamError, UpstreamUnreachable, VersionChanged
from bdn.objects import ObjectInfo, split_bucket_key
from bdn.sources import Speculation
from bdn.sources.http import counted
from bdn.sources.retry import RETRYABLE_STATUSES, busy

READ_PIECE = 256 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion"}
_FORBIDDEN = {"403", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_CHANGED = {"412", "PreconditionFailed"}
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


def _translate(exc: Exception, what: str) -> Exception:
    """The bdn error for an aiobotocore failure; messages carry no credentials."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return NotFound(f"{what} does not exist upstream")
        if code in _FORBIDDEN:
            return Forbidden(f"upstream refused access to {what}")
        if code in _CHANGED:
            return VersionChanged(f"{what} changed upstream")
        metadata = exc.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        if status in RETRYABLE_STATUSES or code in _BUSY:
            return busy(int(status or 503), metadata.get("HTTPHeaders", {}).get("retry-after"), what)
        return UpstreamError(f"upstream answered {status} {code} for {what}")
    if isinstance(exc, botocore.exceptions.ParamValidationError):  # e.g. a bucket name S3 cannot have
        return BadRequest(f"not a valid S3 bucket or key: {what}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return UpstreamError("no AWS credentials found for this source")
    if isinstance(exc, _UNREACHABLE):
        return UpstreamUnreachable(f"upstream unreachable for {what}: {type(exc).__name__}")
    return UpstreamError(f"upstream failed for {what}: {type(exc).__name__}")


class S3Source:
    """One S3-compatible endpoint; see the module docstring."""

    def __init__(self, config: S3SourceConfig, upstream: UpstreamConfig) -> None:
        self._config = config
        self._aio_config = AioConfig(
            connect_timeout=upstream.connect_timeout,
            read_timeout=upstream.read_timeout,
            retries={"total_max_attempts": 1},  # bdn.sources.retry retries, with one policy for every source
            max_pool_connections=64,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version=botocore.UNSIGNED if config.anonymous else None,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                session = get_session()
                self._client = await self._stack.enter_async_context(
                    session.create_client(
                        "s3",
                        region_name=self._config.region,
                        endpoint_url=self._config.endpoint_url,
                        config=self._aio_config,
                    )
                )
            return self._client

    async def stat(self, path: str) -> ObjectInfo:
        bucket, key = split_bucket_key(path)
        try:
            head = await (await self._s3()).head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise _translate(exc, path) from None
        headers = head["ResponseMetadata"]["HTTPHeaders"]
        return ObjectInfo(
            size=int(head["ContentLength"]),
            etag=headers.get("etag", head.get("ETag", "")),
            last_modified=headers.get("last-modified"),
            version_id=head.get("VersionId"),
            content_type=head.get("ContentType"),
        )

    async def read(self, path: str, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        bucket, key = split_bucket_key(path)
        extra = {"VersionId": info.version_id} if info.version_id else {}
        try:
            answer = await (await self._s3()).get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=info.etag, **extra
            )
        except Exception as exc:
            raise _translate(exc, path) from None
        expected = f"bytes {start}-{end - 1}/{info.size}"
        async with answer["Body"] as body:
            if answer.get("ContentRange") != expected or int(answer["ContentLength"]) != end - start:
                raise UpstreamError(f"upstream sent {answer.get('ContentRange')!r} for {expected!r}")
            if answer.get("ETag") != info.etag or (info.version_id and answer.get("VersionId") != info.version_id):
                raise VersionChanged(f"upstream answered ETag {answer.get('ETag')!r} for {path}, "
                                     f"pinned at {info.etag!r}")
            received = 0
            try:
                async for piece in body.iter_chunks(READ_PIECE):
                    received += len(piece)
                    if received > end - start:
                        raise UpstreamError(f"upstream sent more than {end - start} bytes")
                    yield piece
            except (UpstreamError, GeneratorExit):
                raise
            except Exception as exc:
                raise _translate(exc, path) from None
            if received != end - start:
                raise UpstreamError(f"upstream body ended at {received} of {end - start} bytes")

    async def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under `prefix` (ListObjectsV2, all pages)."""
        keys: list[str] = []
        token: dict[str, str] = {}
        try:
            while True:
                page = await (await self._s3()).list_objects_v2(Bucket=bucket, Prefix=prefix, **token)
                keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
                if not page.get("IsTruncated"):
                    return keys
                token = {"ContinuationToken": page["NextContinuationToken"]}
        except Exception as exc:
            raise _translate(exc, f"{bucket}/{prefix}") from None

    async def speculate(self, path: str, start: int, end: int) -> Speculation | None:
        """A ranged GetObject with no version pin (see `Speculation`); None if it failed."""
        try:
            bucket, key = split_bucket_key(path)
            answer = await (await self._s3()).get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except Exception:
            return None
        stream = answer["Body"]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for piece in counted(stream.iter_chunks(READ_PIECE), int(answer["ContentLength"])):
                    yield piece
            except UpstreamError:
                raise
            except Exception as exc:
                raise _translate(exc, path) from None
            finally:
                stream.close()

        etag = answer["ResponseMetadata"]["HTTPHeaders"].get("etag", "")
        return Speculation(etag, str(answer.get("ContentRange", "")), body(), stream.close)

    async def close(self) -> None:
        await self._stack.aclose()
