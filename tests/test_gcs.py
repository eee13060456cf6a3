"""GCS through bdn: `/gcs/{bucket}/{object}`, and gcsfs pointed at bdn's root JSON API, against fake-gcs-server.

The hardening tests at the end also use scripted GCS endpoints: bad query values are 400s bdn
answers itself, an upstream 400 stays a 400, and no upstream redirect is ever followed (SSRF).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from bdn.state import CACHE_KEY
from tests.conftest import Bdn, MiB, StartBdn, sha256
from tests.proxy import CountingProxy

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
import gcsfs

NAMES = ["plain.bin", "dir/sub/deep.bin", "with space.bin", "ünïcødé/模型.bin", "a+b=c&d.bin"]


class Gcs:
    """A fresh bucket on fake-gcs-server, seeded over its JSON API."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http
        self.bucket = f"bkt-{uuid.uuid4().hex[:20]}"  # unique whatever imports this module, and how often

    async def create(self) -> None:
        async with self.http.post(f"{self.url}/storage/v1/b", json={"name": self.bucket}) as response:
            assert response.status == 200, await response.text()

    async def put(self, name: str, data: bytes) -> dict[str, Any]:
        url = f"{self.url}/upload/storage/v1/b/{self.bucket}/o?uploadType=media&name={quote(name, safe='')}"
        async with self.http.post(url, data=data, headers={"Content-Type": "application/octet-stream"}) as response:
            assert response.status == 200, await response.text()
            resource: dict[str, Any] = await response.json()
            return resource


@pytest.fixture
async def gcs(gcs_url: str, http: aiohttp.ClientSession) -> Gcs:
    store = Gcs(gcs_url, http)
    await store.create()
    return store


@pytest.fixture
async def gcs_proxy(gcs_url: str) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(gcs_url) as counting:
        yield counting


async def start_gcs_node(start_bdn: StartBdn, endpoint: str, **cache: Any) -> Bdn:
    return await start_bdn({"gcs": {"type": "gcs", "endpoint_url": endpoint, "token": "anon", "json_api": True,
                                  "project": "test"}},
                           **cache)


def media_gets(proxy: CountingProxy) -> list[str | None]:
    return [entry.range for entry in proxy.log if entry.method == "GET" and "/download/" in entry.path]


async def test_whole_and_range_reads_match(start_bdn: StartBdn, gcs: Gcs, gcs_proxy: CountingProxy,
                                           http: aiohttp.ClientSession) -> None:
    bodies = {name: os.urandom(size) for name, size in zip(NAMES, (0, 1000, MiB, 2 * MiB + 7, 3 * MiB), strict=True)}
    for name, body in bodies.items():
        await gcs.put(name, body)
    node = await start_gcs_node(start_bdn, gcs_proxy.url)
    for name, body in bodies.items():
        url = f"{node.url}/gcs/{gcs.bucket}/{quote(name)}"
        for _ in ("cold", "warm"):
            async with http.get(url) as response:
                assert response.status == 200, name
                assert sha256(await response.read()) == sha256(body), name
        if len(body) > 10:
            start, end = len(body) // 3, len(body) - 3
            async with http.get(url, headers={"Range": f"bytes={start}-{end}"}) as response:
                assert response.status == 206
                assert await response.read() == body[start:end + 1]
            async with http.get(url, headers={"Range": "bytes=-5"}) as response:
                assert await response.read() == body[-5:]
    async with http.get(f"{node.url}/gcs/{gcs.bucket}/missing.bin") as response:
        assert response.status == 404


async def test_gcsfs_through_bdn_matches_direct_reads(start_bdn: StartBdn, gcs: Gcs, gcs_url: str) -> None:
    bodies = {name: os.urandom(MiB + 100 * i) for i, name in enumerate(NAMES)}
    for name, body in bodies.items():
        await gcs.put(name, body)
    node = await start_gcs_node(start_bdn, gcs_url)

    def read_all(endpoint: str) -> dict[str, Any]:
        fs = gcsfs.GCSFileSystem(token="anon", endpoint_url=endpoint, project="test", skip_instance_cache=True)
        out: dict[str, Any] = {}
        for name in NAMES:
            path = f"{gcs.bucket}/{name}"
            info = fs.info(path)
            with fs.open(path, "rb") as handle:
                handle.seek(1000)
                middle = handle.read(5000)
            out[name] = (info["size"], info["generation"], sha256(fs.cat_file(path)),
                         fs.cat_file(path, start=10, end=20000), middle)
        out["listing"] = sorted(fs.ls(gcs.bucket, detail=False))
        return out

    direct = await asyncio.to_thread(read_all, gcs_url)
    through = await asyncio.to_thread(read_all, node.url)
    assert through == direct
    assert direct["plain.bin"][2] == sha256(bodies["plain.bin"])


async def test_32_concurrent_cold_reads_fetch_each_chunk_once(start_bdn: StartBdn, gcs: Gcs,
                                                              gcs_proxy: CountingProxy,
                                                              http: aiohttp.ClientSession) -> None:
    body = os.urandom(16 * MiB + 5)
    await gcs.put("big.bin", body)
    node = await start_gcs_node(start_bdn, gcs_proxy.url)

    async def read() -> str:
        async with http.get(f"{node.url}/gcs/{gcs.bucket}/big.bin") as response:
            assert response.status == 200
            return sha256(await response.read())

    assert set(await asyncio.gather(*(read() for _ in range(32)))) == {sha256(body)}
    expected = [f"bytes={i}-{min(i + MiB, len(body)) - 1}" for i in range(0, len(body), MiB)]
    assert sorted(media_gets(gcs_proxy), key=lambda r: int((r or "=0").split("=")[1].split("-")[0])) == expected


async def test_new_generation_served_after_ttl(start_bdn: StartBdn, gcs: Gcs, gcs_proxy: CountingProxy,
                                               http: aiohttp.ClientSession) -> None:
    old, new = os.urandom(2 * MiB), os.urandom(2 * MiB)
    first = await gcs.put("v.bin", old)
    node = await start_gcs_node(start_bdn, gcs_proxy.url, metadata_ttl="500ms")
    url = f"{node.url}/gcs/{gcs.bucket}/v.bin"
    async with http.get(url) as response:
        assert await response.read() == old
    second = await gcs.put("v.bin", new)
    assert second["generation"] != first["generation"]
    await asyncio.sleep(0.6)
    async with http.get(url) as response:
        assert response.status == 200
        assert await response.read() == new
        assert response.headers["ETag"] == f'"{second["etag"]}"'
    async with http.get(f"{node.url}/download/storage/v1/b/{gcs.bucket}/o/v.bin?alt=media") as response:
        assert response.headers["X-Goog-Generation"] == second["generation"]
        assert "X-Goog-Hash" in response.headers
        assert await response.read() == new


async def test_wrong_bytes_upstream_are_never_served(start_bdn: StartBdn, gcs: Gcs, gcs_proxy: CountingProxy,
                                                     http: aiohttp.ClientSession) -> None:
    body = os.urandom(2 * MiB + 1)
    await gcs.put("c.bin", body)
    node = await start_gcs_node(start_bdn, gcs_proxy.url)
    gcs_proxy.corrupt = True
    url = f"{node.url}/gcs/{gcs.bucket}/c.bin"
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url) as response:
            await response.read()
    async with http.get(url, headers={"Range": "bytes=0-99"}) as response:
        assert response.status == 502
    assert node.app[CACHE_KEY].checksum_failures == 2
    gcs_proxy.corrupt = False
    async with http.get(url) as response:
        assert response.status == 200
        assert await response.read() == body


async def test_json_api_metadata_errors_and_ranges(start_bdn: StartBdn, gcs: Gcs, gcs_url: str,
                                                   http: aiohttp.ClientSession) -> None:
    body = os.urandom(5000)
    resource = await gcs.put("dir/x y.bin", body)
    node = await start_gcs_node(start_bdn, gcs_url)
    encoded = quote("dir/x y.bin", safe="")
    async with http.get(f"{node.url}/storage/v1/b/{gcs.bucket}/o/{encoded}") as response:
        meta = await response.json()
        assert (meta["size"], meta["generation"], meta["md5Hash"]) == ("5000", resource["generation"],
                                                                       resource["md5Hash"])
    async with http.get(f"{node.url}/storage/v1/b/{gcs.bucket}/o/{encoded}?alt=media",
                        headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert "X-Goog-Hash" not in response.headers
        assert await response.read() == body[100:200]
    async with http.get(f"{node.url}/download/storage/v1/b/{gcs.bucket}/o/{encoded}?alt=media",
                        headers={"Range": "bytes=9000-"}) as response:
        assert response.status == 416
        assert "invalid" not in (await response.text()).lower()
    async with http.get(f"{node.url}/storage/v1/b/{gcs.bucket}/o/nope") as response:
        assert response.status == 404
    async with http.get(f"{node.url}/storage/v1/b/{gcs.bucket}/o?prefix=dir/") as response:
        assert [item["name"] for item in (await response.json())["items"]] == ["dir/x y.bin"]


async def test_unreachable_upstream_is_502(start_bdn: StartBdn, http: aiohttp.ClientSession) -> None:
    from tests.conftest import free_port

    node = await start_gcs_node(start_bdn, f"http://127.0.0.1:{free_port()}")
    async with http.get(f"{node.url}/gcs/bucket/obj.bin") as response:
        assert response.status == 502
        assert (await response.json())["error"] == "upstream_unreachable"


async def test_google_cloud_storage_client_through_bdn(start_bdn: StartBdn, gcs: Gcs, gcs_url: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    body = os.urandom(3 * MiB + 3)
    await gcs.put("dir/weights bin", body)
    node = await start_gcs_node(start_bdn, gcs_url)

    def read() -> tuple[bytes, bytes, int | None]:
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": node.url})
        blob = client.bucket(gcs.bucket).get_blob("dir/weights bin")
        assert blob is not None
        whole = blob.download_as_bytes(checksum="md5")  # checks X-Goog-Hash against the body
        return whole, blob.download_as_bytes(start=MiB - 1, end=MiB + 1), blob.size

    whole, part, size = await asyncio.to_thread(read)
    assert (whole, part, size) == (body, body[MiB - 1:MiB + 2], len(body))


BODY = b"abc"
RESOURCE = {"kind": "storage#object", "name": "x.bin", "bucket": "bkt", "size": "3", "generation": "7",
            "md5Hash": "kAFQmDzST7DWlj99KOF/cg=="}  # the md5 of BODY


@asynccontextmanager
async def serving(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A one-handler aiohttp server on 127.0.0.1 standing in for the GCS endpoint; yields its URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class Trap:
    """A raw TCP server that counts connections and answers each with a plausible object resource,
    as a host an upstream redirect points at would: following the redirect would be a silent success."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Trap:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        body = json.dumps(RESOURCE).encode()
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


NON_ASCII_DIGITS = [quote("١٢"), quote("\uff11\uff12")]  # Arabic-Indic and fullwidth: str.isdigit() says yes
BAD_OBJECT_QUERIES = ["generation=abc", "generation=-1", "generation=99999999999999999999",
                      "generation=9223372036854775808", "generation=", "generation=1e3", f"generation={'9' * 5000}",
                      "alt=xml", *(f"generation={digits}" for digits in NON_ASCII_DIGITS)]
BAD_LIST_QUERIES = ["maxResults=abc", "maxResults=-1", "maxResults=4294967296", "maxResults=1.5",
                    "versions=yes", "includeTrailingDelimiter=1", "softDeleted=",
                    *(f"maxResults={digits}" for digits in NON_ASCII_DIGITS)]


async def test_bad_query_values_are_400_json_and_never_reach_the_upstream(
        start_bdn: StartBdn, gcs: Gcs, gcs_proxy: CountingProxy, http: aiohttp.ClientSession) -> None:
    await gcs.put("x.bin", BODY)
    node = await start_gcs_node(start_bdn, gcs_proxy.url)
    base = f"{node.url}/storage/v1/b/{gcs.bucket}/o"
    urls = ([f"{base}/x.bin?{query}" for query in BAD_OBJECT_QUERIES]
            + [f"{node.url}/download/storage/v1/b/{gcs.bucket}/o/x.bin?alt=media&generation=abc"]
            + [f"{base}?prefix=x&{query}" for query in BAD_LIST_QUERIES])
    for url in urls:
        async with http.get(url) as response:
            assert response.status == 400, url
            body = await response.json()
            assert body["error"] == "bad_request", url
            assert "query parameter" in body["detail"], url
    assert gcs_proxy.log == []


async def test_good_query_values_still_work(start_bdn: StartBdn, gcs: Gcs, gcs_url: str,
                                           http: aiohttp.ClientSession) -> None:
    resource = await gcs.put("x.bin", BODY)
    await gcs.put("y.bin", BODY)
    node = await start_gcs_node(start_bdn, gcs_url)
    base = f"{node.url}/storage/v1/b/{gcs.bucket}/o"
    for generation in (resource["generation"], f"000{resource['generation']}"):
        async with http.get(f"{base}/x.bin?generation={generation}&alt=media&projection=noAcl") as response:
            assert response.status == 200
            assert await response.read() == BODY
            assert response.headers["X-Goog-Generation"] == resource["generation"]
    async with http.get(f"{base}/x.bin?alt=json&prettyPrint=false") as response:
        assert (await response.json())["generation"] == resource["generation"]
    listing = f"{base}?maxResults=0002&versions=True&includeTrailingDelimiter=FALSE&fields=items"
    async with http.get(listing) as response:
        assert response.status == 200
        assert [item["name"] for item in (await response.json())["items"]] == ["x.bin", "y.bin"]


async def test_listing_forwards_known_parameters_only_in_canonical_form(start_bdn: StartBdn,
                                                                        http: aiohttp.ClientSession) -> None:
    forwarded: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        forwarded.append(dict(request.query))
        return web.json_response({"kind": "storage#objects", "items": []})

    async with serving(record) as endpoint:
        node = await start_gcs_node(start_bdn, endpoint)
        query = "prefix=a+b/&maxResults=007&versions=True&softDeleted=FALSE&fields=items&userProject=p&prettyPrint=0"
        async with http.get(f"{node.url}/storage/v1/b/bkt/o?{query}") as response:
            assert response.status == 200
            assert await response.json() == {"kind": "storage#objects", "items": []}
    assert forwarded == [{"prefix": "a b/", "maxResults": "7", "versions": "true", "softDeleted": "false"}]


async def test_an_upstream_400_stays_a_400(start_bdn: StartBdn, http: aiohttp.ClientSession) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": 400, "message": "Invalid bucket name: 'bkt'"}}, status=400)

    async with serving(refuse) as endpoint:
        node = await start_gcs_node(start_bdn, endpoint)
        for path in ("/gcs/bkt/x.bin", "/storage/v1/b/bkt/o/x.bin", "/storage/v1/b/bkt/o?prefix=a",
                     "/storage/v1/b/bkt"):
            async with http.get(node.url + path) as response:
                assert response.status == 400, path
                body = await response.json()
                assert body["error"] == "bad_request", path
                assert "Invalid bucket name: 'bkt'" in body["detail"], path


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_upstream_redirects_are_502_and_never_followed(start_bdn: StartBdn, http: aiohttp.ClientSession,
                                                             status: int) -> None:
    seen: list[str] = []

    async with Trap() as trap:
        async def redirect(request: web.Request) -> web.StreamResponse:
            seen.append(request.path)
            if request.path == "/storage/v1/b/bkt/o/ok.bin":  # a good stat, so the media read is what redirects
                return web.json_response({**RESOURCE, "name": "ok.bin"})
            return web.Response(status=status, headers={"Location": f"{trap.url}{request.path_qs}"})

        async with serving(redirect) as endpoint:
            node = await start_gcs_node(start_bdn, endpoint)
            paths = ["/gcs/bkt/x.bin", "/storage/v1/b/bkt/o/x.bin", "/storage/v1/b/bkt/o?prefix=a",
                     "/storage/v1/b/bkt", "/gcs/bkt/ok.bin"]
            for path in paths:
                async with http.get(node.url + path) as response:
                    assert response.status == 502, path
                    assert (await response.json())["error"] == "upstream_error", path
    assert trap.connections == 0
    assert seen == ["/storage/v1/b/bkt/o/x.bin", "/storage/v1/b/bkt/o/x.bin", "/storage/v1/b/bkt/o",
                    "/storage/v1/b/bkt", "/storage/v1/b/bkt/o/ok.bin", "/download/storage/v1/b/bkt/o/ok.bin"]


@pytest.mark.parametrize("resource", [{"name": "x.bin"}, {**RESOURCE, "size": "-1"}, {**RESOURCE, "size": "many"},
                                      {**RESOURCE, "md5Hash": "not base64!"}, {**RESOURCE, "updated": 7}, ["x.bin"],
                                      {k: v for k, v in RESOURCE.items() if k != "generation"}])
async def test_a_malformed_object_resource_is_a_502(start_bdn: StartBdn, http: aiohttp.ClientSession,
                                                    resource: Any) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(resource)

    async with serving(answer) as endpoint:
        node = await start_gcs_node(start_bdn, endpoint)
        for path in ("/gcs/bkt/x.bin", "/storage/v1/b/bkt/o/x.bin?alt=media"):
            async with http.get(node.url + path) as response:
                assert response.status == 502, path
                assert (await response.json())["error"] == "upstream_error", path
