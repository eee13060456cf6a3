"""Unmodified boto3 and aiobotocore clients through bdn's S3 route (`endpoint_url={bdn}/s3`, path style).

Every answer is compared with what moto gives the same call directly: bytes (sha256), status,
ContentRange, ContentLength, ETag, LastModified, ContentType. boto3 runs in a worker thread
(`asyncio.to_thread`) because bdn serves from the test's own event loop. Two boto3 flavours are
used: the defaults (GetObject sends `x-amz-checksum-mode: ENABLED`, s3transfer HEADs first) and
`when_required` checksums (s3transfer skips the HEAD and learns the size from its first ranged GET).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import Bdn, MiB, StartBdn, chunk_of, sha256
from tests.proxy import CountingProxy

CHUNK = MiB  # start_bdn's chunk_bytes
BIG = 9 * MiB + 12345  # ~9 MiB, not a multiple of the chunk size
SMALL = 1000
MODES = ["default", "when_required"]
TRANSFER = TransferConfig(multipart_threshold=2 * MiB, multipart_chunksize=2 * MiB, max_concurrency=8)
ODD_KEYS = [
    "dir/w eights+1.bin",
    "a/b/c/d/e/deeply nested+plus.bin",
    "ünïcødé/模型/权重 файл+x.bin",
    "sym bols/100%/a=b&c;d,e~f@g.bin",
    "q?x#y/space end .bin",
]


def s3_sources(endpoint: str) -> dict[str, Any]:
    return {"s3": {"type": "s3", "endpoint_url": endpoint, "region": "us-east-1"}}


def boto_client(endpoint: str, mode: str) -> Any:
    """An unmodified boto3 S3 client; `mode` picks the default config or `when_required` checksums."""
    config = None
    if mode == "when_required":
        config = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


def get(client: Any, bucket: str, key: str, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    """GetObject and read the whole body (sync; run it in a thread)."""
    answer = client.get_object(Bucket=bucket, Key=key, **kwargs)
    with answer["Body"] as body:
        data = body.read()
    return answer, data


def fields(answer: dict[str, Any]) -> dict[str, Any]:
    """The response fields bdn must reproduce exactly as moto gives them."""
    return {name: answer.get(name) for name in ("ContentLength", "ContentRange", "ETag", "LastModified",
                                                   "ContentType")}


def status(answer: dict[str, Any]) -> int:
    return int(answer["ResponseMetadata"]["HTTPStatusCode"])


def error_status(exc: ClientError) -> int:
    return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def assert_chunks_fetched_once(proxy: CountingProxy, key: str, size: int, needed: set[int] | None = None) -> None:
    """Every upstream GET of `key` read one whole chunk, and no chunk was read twice."""
    ranges = [entry.range for entry in proxy.gets("/models/" + key)]
    if size == 0:  # only the speculative first read of a cold miss, answered 416 with no bytes
        assert len(ranges) <= 1, ranges
        return
    chunks = [chunk_of(header, size, CHUNK) for header in ranges]
    repeated = {c: n for c, n in Counter(chunks).items() if n > 1}
    assert not repeated, f"chunks of {key!r} fetched more than once: {repeated}"
    fetched = set(chunks)
    if needed is not None:
        assert fetched == needed, f"fetched chunks {sorted(fetched)}, needed {sorted(needed)}"


def chunks_of(start: int, end: int) -> set[int]:
    """Chunk indices covering bytes [start, end)."""
    return set(range(start // CHUNK, (end - 1) // CHUNK + 1)) if end > start else set()


@pytest.fixture
def weights(s3: Any, bucket: str) -> dict[str, bytes]:
    data = {"w/big.bin": os.urandom(BIG), "w/small.bin": os.urandom(SMALL), "w/empty.bin": b""}
    for key, body in data.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return data


@pytest.fixture
async def node(start_bdn: StartBdn, proxy: CountingProxy) -> Bdn:
    return await start_bdn(s3_sources(proxy.url))


# --- GetObject ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_get_object_whole(node: Bdn, proxy: CountingProxy, s3: Any, weights: dict[str, bytes],
                                mode: str) -> None:
    client = boto_client(f"{node.url}/s3", mode)
    for key, body in weights.items():
        direct, direct_data = await asyncio.to_thread(get, s3, "models", key)
        assert sha256(direct_data) == sha256(body)
        for attempt in ("cold", "warm"):
            answer, data = await asyncio.to_thread(get, client, "models", key)
            assert status(answer) == 200, (key, attempt)
            assert sha256(data) == sha256(body), (key, attempt)
            assert fields(answer) == fields(direct), (key, attempt)
            assert answer["ContentLength"] == len(body)
            assert answer["ETag"].startswith('"') and answer["ETag"].endswith('"')
            assert answer.get("AcceptRanges") == "bytes"
            assert not any(name.startswith("x-amz-checksum-") for name in answer["ResponseMetadata"]["HTTPHeaders"])
        assert_chunks_fetched_once(proxy, key, len(body), chunks_of(0, len(body)))


# (Range header, slice of the big object it selects)
RANGES = [
    ("bytes=0-0", slice(0, 1)),
    ("bytes=10-99", slice(10, 100)),
    (f"bytes={CHUNK - 10}-{CHUNK + 9}", slice(CHUNK - 10, CHUNK + 10)),  # crosses the first chunk border
    (f"bytes={CHUNK - 1}-{CHUNK}", slice(CHUNK - 1, CHUNK + 1)),  # the two bytes around a border
    (f"bytes={CHUNK}-{2 * CHUNK - 1}", slice(CHUNK, 2 * CHUNK)),  # exactly one chunk
    (f"bytes={2 * CHUNK + 7}-{5 * CHUNK + 3}", slice(2 * CHUNK + 7, 5 * CHUNK + 4)),  # spans several chunks
    (f"bytes={8 * CHUNK + 5}-", slice(8 * CHUNK + 5, BIG)),  # open end, through the short last chunk
    ("bytes=-100", slice(BIG - 100, BIG)),  # suffix inside the last chunk
    (f"bytes=-{CHUNK + 20000}", slice(BIG - CHUNK - 20000, BIG)),  # suffix crossing a border
    (f"bytes={BIG - 50}-{BIG + 5000}", slice(BIG - 50, BIG)),  # end past the size: clamped
    ("bytes=0-", slice(0, BIG)),  # the whole object, as a 206
]


@pytest.mark.parametrize("mode", MODES)
async def test_get_object_ranges_match_moto(node: Bdn, proxy: CountingProxy, s3: Any, weights: dict[str, bytes],
                                            mode: str) -> None:
    client = boto_client(f"{node.url}/s3", mode)
    body = weights["w/big.bin"]
    needed: set[int] = set()
    for header, selected in RANGES:
        direct, direct_data = await asyncio.to_thread(get, s3, "models", "w/big.bin", Range=header)
        assert direct_data == body[selected], header
        needed |= chunks_of(selected.start, selected.stop)
        for attempt in ("cold", "warm"):
            answer, data = await asyncio.to_thread(get, client, "models", "w/big.bin", Range=header)
            assert status(answer) == 206 == status(direct), (header, attempt)
            assert sha256(data) == sha256(body[selected]), (header, attempt)
            assert fields(answer) == fields(direct), (header, attempt)
            assert answer["ContentRange"] == f"bytes {selected.start}-{selected.stop - 1}/{BIG}"
            assert answer["ContentLength"] == selected.stop - selected.start
            assert not any(name.startswith("x-amz-checksum-") for name in answer["ResponseMetadata"]["HTTPHeaders"])
    assert_chunks_fetched_once(proxy, "w/big.bin", BIG, needed)


@pytest.mark.parametrize("mode", MODES)
async def test_get_object_conditionals(node: Bdn, s3: Any, weights: dict[str, bytes], mode: str) -> None:
    """The s3transfer pattern (If-Match on a ranged GET), and If-None-Match, as statuses a client sees."""
    client = boto_client(f"{node.url}/s3", mode)
    etag = s3.head_object(Bucket="models", Key="w/big.bin")["ETag"]
    answer, data = await asyncio.to_thread(get, client, "models", "w/big.bin", Range="bytes=5-9", IfMatch=etag)
    assert status(answer) == 206
    assert data == weights["w/big.bin"][5:10]
    with pytest.raises(ClientError) as mismatch:
        await asyncio.to_thread(get, client, "models", "w/big.bin", Range="bytes=5-9", IfMatch='"0000"')
    assert error_status(mismatch.value) == 412
    with pytest.raises(ClientError) as unchanged:
        await asyncio.to_thread(get, client, "models", "w/big.bin", IfNoneMatch=etag)
    assert error_status(unchanged.value) == 304
    assert error_code(unchanged.value) == "304"


# --- HeadObject and missing keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_head_object_matches_moto(node: Bdn, proxy: CountingProxy, s3: Any, weights: dict[str, bytes],
                                        mode: str) -> None:
    client = boto_client(f"{node.url}/s3", mode)
    for key, body in weights.items():
        direct = s3.head_object(Bucket="models", Key=key)
        for attempt in ("cold", "warm"):
            answer = await asyncio.to_thread(client.head_object, Bucket="models", Key=key)
            assert status(answer) == 200, (key, attempt)
            assert answer["ContentLength"] == len(body) == direct["ContentLength"]
            assert answer["ETag"] == direct["ETag"]
            assert answer["LastModified"] == direct["LastModified"]
            assert answer["ContentType"] == direct["ContentType"]
        if body:
            ranged = await asyncio.to_thread(client.head_object, Bucket="models", Key=key, Range="bytes=0-0")
            direct_ranged = s3.head_object(Bucket="models", Key=key, Range="bytes=0-0")
            assert status(ranged) == 206 == status(direct_ranged)
            assert ranged["ContentLength"] == 1 == direct_ranged["ContentLength"]
            assert ranged["ContentRange"] == f"bytes 0-0/{len(body)}" == direct_ranged["ContentRange"]
    assert proxy.gets() == [], "HeadObject never reads object bytes upstream"


@pytest.mark.parametrize("mode", MODES)
async def test_missing_key(node: Bdn, s3: Any, bucket: str, mode: str) -> None:
    client = boto_client(f"{node.url}/s3", mode)
    with pytest.raises(ClientError) as direct_head:
        s3.head_object(Bucket="models", Key="w/nope.bin")
    with pytest.raises(ClientError) as head:
        await asyncio.to_thread(client.head_object, Bucket="models", Key="w/nope.bin")
    assert error_code(head.value) == "404" == error_code(direct_head.value)  # HEAD has no body: code is the status
    assert error_status(head.value) == 404
    with pytest.raises(ClientError) as get_missing:
        await asyncio.to_thread(get, client, "models", "w/nope.bin")
    assert error_status(get_missing.value) == 404
    with pytest.raises(ClientError) as ranged_missing:
        await asyncio.to_thread(get, client, "models", "w/nope.bin", Range="bytes=0-9")
    assert error_status(ranged_missing.value) == 404


@pytest.mark.parametrize("mode", MODES)
async def test_error_codes_match_moto(node: Bdn, s3: Any, weights: dict[str, bytes], mode: str) -> None:
    """PROTOCOLS 2.5: GET errors carry the S3 XML error body, so `Error.Code` (and the modeled exception
    classes such as `client.exceptions.NoSuchKey`, and s3transfer's `PreconditionFailed`/`InvalidRange`
    handling) work the same through bdn as against S3."""
    client = boto_client(f"{node.url}/s3", mode)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("w/nope.bin", {}),  # NoSuchKey
        ("w/small.bin", {"IfMatch": '"0000"'}),  # PreconditionFailed
        ("w/small.bin", {"Range": f"bytes={SMALL}-"}),  # InvalidRange
        ("w/empty.bin", {"Range": "bytes=0-99"}),  # InvalidRange: what s3transfer sends for an empty object
    ]
    mismatched = []
    for key, kwargs in cases:
        with pytest.raises(ClientError) as direct:
            await asyncio.to_thread(get, s3, "models", key, **kwargs)
        with pytest.raises(ClientError) as through:
            await asyncio.to_thread(get, client, "models", key, **kwargs)
        assert error_status(through.value) == error_status(direct.value), (key, kwargs)
        want, got = error_code(direct.value), error_code(through.value)
        if got != want:
            mismatched.append(f"GET {key} {kwargs}: moto {want!r}, bdn {got!r}")
    assert not mismatched, "Error.Code differs from moto's: " + "; ".join(mismatched)


# --- aiobotocore ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_aiobotocore(node: Bdn, proxy: CountingProxy, s3: Any, weights: dict[str, bytes], mode: str) -> None:
    config = None
    if mode == "when_required":
        config = AioConfig(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    body = weights["w/big.bin"]
    async with get_session().create_client("s3", endpoint_url=f"{node.url}/s3", region_name="us-east-1",
                                           config=config) as client:
        direct = s3.head_object(Bucket="models", Key="w/big.bin")
        head = await client.head_object(Bucket="models", Key="w/big.bin")
        assert head["ContentLength"] == BIG
        assert head["ETag"] == direct["ETag"]
        for header, selected in [(None, slice(0, BIG)), *RANGES[:4], RANGES[7]]:
            kwargs = {"Range": header} if header else {}
            want, _ = await asyncio.to_thread(get, s3, "models", "w/big.bin", **kwargs)
            for attempt in ("cold", "warm"):
                answer = await client.get_object(Bucket="models", Key="w/big.bin", **kwargs)
                async with answer["Body"] as stream:
                    data = await stream.read()
                assert status(answer) == (206 if header else 200), (header, attempt)
                assert sha256(data) == sha256(body[selected]), (header, attempt)
                assert fields(answer) == fields(want), (header, attempt)
        with pytest.raises(ClientError) as head_missing:
            await client.head_object(Bucket="models", Key="w/nope.bin")
        assert error_code(head_missing.value) == "404"
        with pytest.raises(ClientError) as get_missing:
            await client.get_object(Bucket="models", Key="w/nope.bin")
        assert error_status(get_missing.value) == 404
    assert_chunks_fetched_once(proxy, "w/big.bin", BIG, chunks_of(0, BIG))


# --- download_file (s3transfer) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_download_file_multipart(node: Bdn, proxy: CountingProxy, weights: dict[str, bytes], tmp_path: Path,
                                       mode: str) -> None:
    """s3transfer: HEAD (default mode) or a first `bytes=0-…` GET (when_required), then 2 MiB ranged parts
    with If-Match, eight at a time; every chunk still reaches the upstream at most once."""
    client = boto_client(f"{node.url}/s3", mode)
    body = weights["w/big.bin"]
    for attempt in ("cold", "warm", "again"):
        target = tmp_path / f"big-{attempt}.bin"
        await asyncio.to_thread(client.download_file, "models", "w/big.bin", str(target), Config=TRANSFER)
        assert sha256(target.read_bytes()) == sha256(body), attempt
    assert_chunks_fetched_once(proxy, "w/big.bin", BIG, chunks_of(0, BIG))


@pytest.mark.parametrize("mode", MODES)
async def test_download_file_small_and_empty(node: Bdn, weights: dict[str, bytes], tmp_path: Path,
                                             mode: str) -> None:
    """Below the multipart threshold: one GET (default mode) or one `bytes=0-2097151` GET (when_required,
    which for an empty object is a 416 `InvalidRange` that s3transfer treats as "empty")."""
    client = boto_client(f"{node.url}/s3", mode)
    for key in ("w/small.bin", "w/empty.bin"):
        target = tmp_path / key.replace("/", "_")
        await asyncio.to_thread(client.download_file, "models", key, str(target), Config=TRANSFER)
        assert sha256(target.read_bytes()) == sha256(weights[key]), key


# --- keys that need encoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_encoded_keys_round_trip(node: Bdn, proxy: CountingProxy, s3: Any, bucket: str, tmp_path: Path,
                                       mode: str) -> None:
    client = boto_client(f"{node.url}/s3", mode)
    bodies = {key: os.urandom(CHUNK + 100 + index) for index, key in enumerate(ODD_KEYS)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    for key, body in bodies.items():
        direct = s3.head_object(Bucket=bucket, Key=key)
        head = await asyncio.to_thread(client.head_object, Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(body), key
        assert head["ETag"] == direct["ETag"], key
        answer, data = await asyncio.to_thread(get, client, bucket, key)
        assert status(answer) == 200, key
        assert sha256(data) == sha256(body), key
        answer, data = await asyncio.to_thread(get, client, bucket, key, Range=f"bytes={CHUNK - 3}-{CHUNK + 3}")
        assert status(answer) == 206, key
        assert data == body[CHUNK - 3:CHUNK + 4], key
        target = tmp_path / "download.bin"
        await asyncio.to_thread(client.download_file, bucket, key, str(target))
        assert sha256(target.read_bytes()) == sha256(body), key
    for key, body in bodies.items():
        assert_chunks_fetched_once(proxy, key, len(body), chunks_of(0, len(body)))
    assert len(proxy.gets()) == 2 * len(ODD_KEYS), [entry.path for entry in proxy.gets()]
