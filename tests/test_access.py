"""Access control: client tokens per source (401, never touching cache or upstream), the admin allow-list, no SSRF.

Tokens are checked for every path a source answers (the GCS JSON API at `/` too), and never reach
a log line, /metrics or an answer; the admin API and /_peer/ judge the socket's address only (no
forwarding header counts, an IPv4-mapped IPv6 address is its IPv4 address).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import botocore.exceptions
import pytest
from aiohttp import web
from google.oauth2.credentials import Credentials

from bdn.app import make_app
from bdn.config import ConfigError, from_mapping
from bdn.objects import ObjectInfo, ObjectRef
from bdn.peers import wire
from tests.conftest import MiB, StartBdn, bdn_config, free_port, sha256
from tests.hub import FakeHub
from tests.origin import Origin
from tests.proxy import CountingProxy
from tests.test_gcs import Gcs
from tests.test_upstream_faults import metric

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported
import gcsfs

TOKEN = "pod-token-0123456789abcdef"
OTHER = "another-token-0123456789"
WRONG = "wrong-token-0123456789abcdef"


def chunk_files(cache_dir: Path) -> list[Path]:
    """Every chunk file the cache holds under `cache_dir`."""
    return sorted(path for path in (cache_dir / "chunks").rglob("*") if path.is_file())


def protected(origin: Origin, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("BDN_TEST_CLIENT_TOKENS", f"{OTHER}, {TOKEN}")
    return {"web": {"type": "http", "base_url": origin.url, "clients": {"bearer_tokens_env": "BDN_TEST_CLIENT_TOKENS"}}}


async def test_a_source_with_client_tokens_refuses_requests_without_one(
        start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(2 * MiB)
    origin.put("m.bin", data)
    caplog.set_level(logging.DEBUG)
    node = await start_bdn(protected(origin, monkeypatch))
    url = f"{node.url}/web/m.bin"
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "}):
        for method in ("GET", "HEAD"):
            async with http.request(method, url, headers=headers) as response:
                assert response.status == 401, headers
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="bdn"'
                if method == "GET":
                    assert (await response.json())["error"] == "unauthorized"
    assert origin.log == [], "a refused request never reached the upstream"
    assert not any((tmp_path / "cache" / "chunks").rglob("*.*")), "nor the cache"
    for token in (TOKEN, OTHER):
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            assert await response.read() == data
    async with http.get(url) as response:
        assert response.status == 401, "cached bytes are refused all the same"
    async with http.get(f"{node.url}/metrics") as response:
        exported = await response.text()
    assert TOKEN not in caplog.text and OTHER not in caplog.text and TOKEN not in exported


async def test_s3_sdks_present_the_token_as_their_access_key(start_bdn: StartBdn, s3: Any, bucket: str,
                                                              proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    body = b"weights" * 1000
    s3.put_object(Bucket=bucket, Key="w.bin", Body=body)
    monkeypatch.setenv("BDN_TEST_CLIENT_TOKENS", TOKEN)
    node = await start_bdn({"s3": {"type": "s3", "endpoint_url": proxy.url, "region": "us-east-1",
                                   "clients": {"bearer_tokens_env": "BDN_TEST_CLIENT_TOKENS"}}})

    def client(key_id: str) -> Any:
        return boto3.client("s3", endpoint_url=f"{node.url}/s3", region_name="us-east-1",
                            aws_access_key_id=key_id, aws_secret_access_key="anything")

    def read(key_id: str) -> bytes:
        got: bytes = client(key_id).get_object(Bucket=bucket, Key="w.bin")["Body"].read()
        return got

    def head(key_id: str) -> int:
        size: int = client(key_id).head_object(Bucket=bucket, Key="w.bin")["ContentLength"]
        return size

    # A HEAD error has no body, so botocore takes its status as the code.
    for refused_call, code in ((read, "AccessDenied"), (head, "401")):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            await asyncio.to_thread(refused_call, "AKIAWRONGWRONGWRONG")
        assert refused.value.response["Error"]["Code"] == code
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert proxy.log == [], "a refused SDK request never reached moto"
    assert chunk_files(tmp_path / "cache") == [], "nor the cache"
    assert await asyncio.to_thread(read, TOKEN) == body
    assert await asyncio.to_thread(head, TOKEN) == len(body)
    assert chunk_files(tmp_path / "cache") != []
    forwarded = len(proxy.log)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        await asyncio.to_thread(read, "AKIAWRONGWRONGWRONG")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401, "cached bytes are refused all the same"
    assert len(proxy.log) == forwarded


REFUSED = ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Bearer {TOKEN}x"},
           {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "})


async def test_a_gcs_source_with_client_tokens_refuses_requests_without_one_on_every_path(
        start_bdn: StartBdn, gcs_url: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 3)
    store = Gcs(gcs_url, http)
    await store.create()
    await store.put("dir/m.bin", data)
    monkeypatch.setenv("BDN_TEST_CLIENT_TOKENS", f"{OTHER}, {TOKEN}")
    async with CountingProxy(gcs_url) as upstream:
        node = await start_bdn({"gcs": {"type": "gcs", "endpoint_url": upstream.url, "token": "anon", "project": "test",
                                        "json_api": True, "clients": {"bearer_tokens_env": "BDN_TEST_CLIENT_TOKENS"}}})
        bucket, name = store.bucket, quote("dir/m.bin", safe="")
        media = [f"/gcs/{bucket}/dir/m.bin", f"/storage/v1/b/{bucket}/o/{name}?alt=media",
                 f"/download/storage/v1/b/{bucket}/o/{name}?alt=media"]
        resource, bucket_info = f"/storage/v1/b/{bucket}/o/{name}", f"/storage/v1/b/{bucket}"
        listing = f"/storage/v1/b/{bucket}/o?prefix=dir/&delimiter=/"
        for headers in REFUSED:
            for path in (*media, resource, listing, bucket_info):
                for method in ("GET", "HEAD"):
                    async with http.request(method, node.url + path, headers=headers) as response:
                        assert response.status == 401, (method, path, headers)
                        assert response.headers["WWW-Authenticate"] == 'Bearer realm="bdn"'
                        body = await response.read()
                        if method == "HEAD":
                            assert body == b""
                        else:
                            assert response.content_type == "application/json"
                            assert json.loads(body)["error"] == "unauthorized"
        assert upstream.log == [], "a refused request never reached the upstream"
        assert chunk_files(tmp_path / "cache") == [], "nor the cache"

        allowed = {"Authorization": f"Bearer {TOKEN}"}
        for path in media:
            async with http.get(node.url + path, headers=allowed) as response:
                assert response.status == 200, path
                assert sha256(await response.read()) == sha256(data), path
            async with http.head(node.url + path, headers=allowed) as response:
                assert response.status == 200, path
                assert response.headers["Content-Length"] == str(len(data))
        async with http.get(node.url + resource, headers=allowed) as response:
            assert response.status == 200
            assert {k: v for k, v in (await response.json()).items() if k in ("name", "size")} == {
                "name": "dir/m.bin", "size": str(len(data))}
        async with http.get(node.url + listing, headers=allowed) as response:
            assert response.status == 200
            assert [item["name"] for item in (await response.json())["items"]] == ["dir/m.bin"]
        async with http.get(node.url + bucket_info, headers=allowed) as response:
            assert response.status == 200
            assert (await response.json())["name"] == bucket
        assert chunk_files(tmp_path / "cache") != []
        forwarded = len(upstream.log)
        for path in (*media, resource):
            async with http.get(node.url + path) as response:
                assert response.status == 401, f"{path}: cached bytes are refused all the same"
        assert len(upstream.log) == forwarded


async def test_gcsfs_with_a_token_reads_and_without_one_is_refused(
        start_bdn: StartBdn, gcs_url: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """gcsfs given credentials sends `Authorization: Bearer <access token>` (PROTOCOLS.md 3.1)."""
    data = os.urandom(MiB + 77)
    store = Gcs(gcs_url, http)
    await store.create()
    await store.put("m.bin", data)
    monkeypatch.setenv("BDN_TEST_CLIENT_TOKENS", TOKEN)
    async with CountingProxy(gcs_url) as upstream:
        node = await start_bdn({"gcs": {"type": "gcs", "endpoint_url": upstream.url, "token": "anon", "project": "test",
                                        "json_api": True, "clients": {"bearer_tokens_env": "BDN_TEST_CLIENT_TOKENS"}}})

        def read(token: Any) -> tuple[int, bytes, bytes]:
            fs = gcsfs.GCSFileSystem(token=token, endpoint_url=node.url, project="test", skip_instance_cache=True,
                                     retries=1)
            path = f"{store.bucket}/m.bin"
            return fs.info(path)["size"], fs.cat_file(path), fs.cat_file(path, start=10, end=5000)

        for refused in ("anon", Credentials(WRONG)):
            with pytest.raises(gcsfs.retry.HttpError) as info:
                await asyncio.to_thread(read, refused)
            assert info.value.code == 401
        assert upstream.log == []
        assert chunk_files(tmp_path / "cache") == []
        assert await asyncio.to_thread(read, Credentials(TOKEN)) == (len(data), data, data[10:5000])


def sigv4(key_id: str) -> str:
    """An S3 SDK's Authorization header, as botocore writes it, with `key_id` as the access key id."""
    return (f"AWS4-HMAC-SHA256 Credential={key_id}/20260101/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}")


def assert_nowhere(secrets: tuple[str, ...], caplog: pytest.LogCaptureFixture, exported: str,
                   answers: list[tuple[int, str, bytes]]) -> None:
    """None of `secrets` is in a log record, the /metrics text, or any answer's headers or body."""
    assert '"status": 401' in caplog.text, "bdn's access log was captured"
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    for secret in secrets:
        assert secret not in logged, "a token was logged"
        assert secret not in exported, "a token was exported"
        for status, headers, body in answers:
            assert secret not in headers and secret.encode() not in body, f"a token was echoed in a {status}"


@pytest.mark.parametrize("kind", ["http", "s3", "gcs"])
async def test_client_tokens_are_never_logged_exported_or_echoed(
        kind: str, start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> None:
    data = os.urandom(MiB + 5)
    monkeypatch.setenv("BDN_TEST_CLIENT_TOKENS", TOKEN)
    clients = {"bearer_tokens_env": "BDN_TEST_CLIENT_TOKENS"}
    if kind == "http":
        origin.put("m.bin", data)
        source: dict[str, Any] = {"type": "http", "base_url": origin.url}
        paths = ["/src/m.bin"]
    elif kind == "s3":
        request.getfixturevalue("s3").put_object(Bucket=request.getfixturevalue("bucket"), Key="m.bin", Body=data)
        source = {"type": "s3", "endpoint_url": request.getfixturevalue("moto_url"), "region": "us-east-1"}
        paths = ["/src/models/m.bin"]
    else:
        store = Gcs(request.getfixturevalue("gcs_url"), http)
        await store.create()
        await store.put("m.bin", data)
        source = {"type": "gcs", "endpoint_url": store.url, "token": "anon", "project": "test", "json_api": True}
        paths = [f"/src/{store.bucket}/m.bin", f"/storage/v1/b/{store.bucket}/o/m.bin?alt=media"]
    caplog.set_level(logging.DEBUG)
    node = await start_bdn({"src": {**source, "clients": clients}})
    answers: list[tuple[int, str, bytes]] = []

    async def ask(method: str, path: str, authorization: str) -> int:
        async with http.request(method, node.url + path, headers={"Authorization": authorization}) as response:
            answers.append((response.status, repr(response.headers), await response.read()))
            return response.status

    for path in paths:
        missing, bad = path.replace("m.bin", "missing.bin"), path.replace("m.bin", "m%00.bin")
        for scheme in (lambda token: f"Bearer {token}", sigv4):
            assert await ask("GET", path, scheme(TOKEN)) == 200
            assert answers[-1][2] == data
            assert await ask("HEAD", path, scheme(TOKEN)) == 200
            assert [await ask(method, path, scheme(WRONG)) for method in ("GET", "HEAD")] == [401, 401]
            assert await ask("GET", path, scheme(TOKEN + "x")) == 401
            assert await ask("GET", missing, scheme(TOKEN)) == 404
            assert await ask("GET", bad, scheme(TOKEN)) == 400
            assert await ask("GET", missing, scheme(WRONG)) == 401
    async with http.get(f"{node.url}/metrics") as response:
        exported = await response.text()
    assert_nowhere((TOKEN, WRONG), caplog, exported, answers)


async def test_hub_tokens_are_never_logged_exported_or_echoed(
        start_bdn: StartBdn, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    node_token, user, stranger = "hf_bdn_node_0123456789abcdef", "hf_user_0123456789abcdef", "hf_wrong_0123456789abcdef"
    late = "hf_late_0123456789abcdef"
    files = {"config.json": b'{"model_type": "tiny"}\n', "w.bin": os.urandom(2 * MiB)}  # w.bin is LFS
    hub = FakeHub()
    await hub.start()
    try:
        hub.add_repo("acme/secret", files, private=True, tokens=(node_token, user))
        hub.add_repo("acme/gated", files, gated="manual", tokens=(node_token, user))
        monkeypatch.setenv("BDN_TEST_HF_TOKEN", node_token)
        caplog.set_level(logging.DEBUG)
        node = await start_bdn({"hf": {"type": "hf", "endpoint": hub.url, "token_env": "BDN_TEST_HF_TOKEN",
                                       "storage_hosts": ["127.0.0.1"]}})
        answers: list[tuple[int, str, bytes]] = []

        async def ask(method: str, path: str, token: str | None) -> int:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            async with http.request(method, f"{node.url}/hf/{path}", headers=headers) as response:
                answers.append((response.status, repr(response.headers), await response.read()))
                return response.status

        for repo, refusal in (("acme/secret", 401), ("acme/gated", 403)):
            for name in files:
                for method in ("GET", "HEAD"):
                    assert await ask(method, f"{repo}/resolve/main/{name}", user) == 200
                    if method == "GET":
                        assert answers[-1][2] == files[name]
                    # refused although bdn has the bytes cached by now
                    assert await ask(method, f"{repo}/resolve/main/{name}", stranger) == refusal, (repo, name)
                    assert await ask(method, f"{repo}/resolve/main/{name}", None) == refusal, (repo, name)
            assert await ask("GET", f"{repo}/resolve/main/nope.bin", user) == 404
        for api in ("api/models/acme/secret", "api/models/acme/secret/revision/main",
                    "api/models/acme/secret/tree/main?recursive=true"):
            assert await ask("GET", api, user) == 200, api
            assert await ask("GET", api, stranger) == 401, api
        assert await ask("GET", "acme/nope/resolve/main/config.json", user) == 401  # RepoNotFound, as the Hub says
        assert await ask("GET", "acme/nope/resolve/main/config.json", stranger) == 401
        assert {r.authorization for r in hub.log} >= {f"Bearer {user}", f"Bearer {stranger}"}, \
            "bdn asked the Hub about both client tokens"
        hub.down, hub.down_status = True, 500  # a token bdn has not seen yet cannot be checked: an error, not a leak
        assert await ask("GET", "acme/secret/resolve/main/config.json", late) == 502
        assert await ask("HEAD", "acme/secret/resolve/main/config.json", late) == 502
        async with http.get(f"{node.url}/metrics") as response:
            exported = await response.text()
        assert_nowhere((user, stranger, late, node_token), caplog, exported, answers)
    finally:
        await hub.stop()


def test_client_tokens_from_a_file_and_bad_token_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# pods of team a\n{TOKEN}\n\n{OTHER}\n")
    config = from_mapping({"sources": {"w": {"type": "http", "base_url": "http://o",
                                             "clients": {"bearer_tokens_file": str(tokens)}}}})
    clients = config.sources["w"].clients  # type: ignore[union-attr]
    assert clients is not None and clients.tokens == {TOKEN, OTHER}
    assert TOKEN not in repr(config), "tokens never appear in a repr"
    monkeypatch.delenv("BDN_TEST_UNSET", raising=False)
    monkeypatch.setenv("BDN_TEST_SHORT", "short")
    for clients_raw, key in (({"bearer_tokens_env": "BDN_TEST_UNSET"}, "sources.w.clients.bearer_tokens_env"),
                             ({"bearer_tokens_env": "BDN_TEST_SHORT"}, "sources.w.clients.bearer_tokens_env"),
                             ({"bearer_tokens_file": str(tmp_path / "none")}, "sources.w.clients.bearer_tokens_file"),
                             ({}, "sources.w.clients"),
                             ({"tokens": [TOKEN]}, "sources.w.clients.tokens")):
        with pytest.raises(ConfigError) as info:
            from_mapping({"sources": {"w": {"type": "http", "base_url": "http://o", "clients": clients_raw}}})
        assert str(info.value).startswith(f"{key}: "), info.value
        assert "short" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^sources\.h\.clients: "):
        from_mapping({"sources": {"h": {"type": "hf", "clients": {"bearer_tokens_file": str(tokens)}}}})
    with pytest.raises(ConfigError, match=r"^admin\.allow\[1\]: "):
        from_mapping({"admin": {"allow": ["10.0.0.0/8", "everyone"]}})


async def test_the_admin_api_answers_the_allow_list_only(start_bdn: StartBdn, origin: Origin,
                                                         http: aiohttp.ClientSession, tmp_path: Path) -> None:
    origin.put("x.bin", b"x")
    sources = {"web": {"type": "http", "base_url": origin.url}}
    closed = await start_bdn(sources, sections={"admin": {"allow": ["10.0.0.0/8"]}}, cache_dir=tmp_path / "closed")
    for method, path in (("POST", "/v1/warm"), ("GET", "/v1/warm/123")):
        async with http.request(method, f"{closed.url}{path}", json={"urls": ["web://x.bin"]}) as response:
            assert response.status == 403
            assert (await response.json())["error"] == "forbidden"
    assert origin.log == []
    opened = await start_bdn(sources)  # the default allow-list is the node itself (127.0.0.0/8, ::1)
    async with http.post(f"{opened.url}/v1/warm", json={"urls": ["web://x.bin"]}) as response:
        assert response.status == 202
    async with http.get(f"{opened.url}/_peer/web") as response:
        assert response.status == 403, "/_peer/ answers configured peers only"


SPOOFED = ({"X-Forwarded-For": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1, 127.0.0.2"},
           {"Forwarded": "for=127.0.0.1"}, {"Forwarded": 'for="127.0.0.1:8080";proto=http'}, {"X-Real-IP": "127.0.0.1"},
           {"X-Client-IP": "127.0.0.1", "True-Client-IP": "127.0.0.1", "CF-Connecting-IP": "127.0.0.1"},
           {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1", "X-Real-IP": "127.0.0.1"})


async def test_forwarding_headers_do_not_open_the_admin_api_or_the_peer_endpoint(
        start_bdn: StartBdn, origin: Origin, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """bdn judges the socket's peer address only: a client may write any X-Forwarded-For it likes."""
    data = os.urandom(MiB + 11)
    origin.put("x.bin", data)
    port = free_port()
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, port=port,
                           peers={"static": [f"http://127.0.0.1:{port}"], "self": f"127.0.0.1:{port}"},
                           sections={"admin": {"allow": ["127.0.0.1/32"]}})
    asked = {wire.OBJECT_HEADER: wire.encode_object(ObjectRef("web", "x.bin"),
                                                      ObjectInfo(size=len(data), etag=origin.etag("x.bin")))}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as stranger:
        for spoofed in SPOOFED:
            for method, path, body in (("POST", "/v1/warm", {"urls": ["web://x.bin"]}), ("GET", "/v1/warm/1", None),
                                       ("GET", "/_peer/web", None), ("HEAD", "/_peer/web", None)):
                async with stranger.request(method, node.url + path, json=body,
                                            headers={**spoofed, **asked}) as response:
                    assert response.status == 403, (method, path, spoofed)
                    if method != "HEAD":
                        assert (await response.json())["error"] == "forbidden"
        await asyncio.sleep(0.1)  # a warm job would have started by now
        assert origin.log == [], "nothing was fetched for a refused address"
        assert chunk_files(tmp_path / "cache") == []
        # The same requests from the allowed address are served: the 403s above were the address check.
        async with http.get(f"{node.url}/_peer/web", headers=asked) as response:
            assert response.status == 200
            assert sha256(await response.read()) == sha256(data)
        async with http.post(f"{node.url}/v1/warm", json={"urls": ["web://x.bin"]}) as response:
            assert response.status == 202
            job = (await response.json())["id"]
        for spoofed in SPOOFED:
            async with stranger.get(f"{node.url}/v1/warm/{job}", headers=spoofed) as response:
                assert response.status == 403, spoofed
    assert origin.log != []


def dual_stack_listener() -> socket.socket:
    """An IPv6 socket that also accepts IPv4 (IPV6_V6ONLY off), on loopback: IPv4 peers show as ::ffff:a.b.c.d."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::ffff:127.0.0.1", 0))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        pytest.skip(f"no dual-stack IPv6 loopback on this machine: {exc}")
    with socket.socket() as probe:
        probe.connect(("127.0.0.1", sock.getsockname()[1]))
        accepted, address = sock.accept()
        accepted.close()
    assert address[0] == "::ffff:127.0.0.1", address
    return sock


async def test_ipv4_mapped_client_addresses_count_as_their_ipv4_address(
        origin: Origin, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    """Behind a dual-stack listener `request.remote` is `::ffff:127.0.0.1` for 127.0.0.1: admin.allow
    and the peer list name 127.0.0.1, and must admit it (and still refuse ::ffff:127.0.0.2).

    bdn's own `listen: "[::]:PORT"` socket is IPv6-only (asyncio sets IPV6_V6ONLY), so the app is
    handed a dual-stack socket here, as a `bindv6only=0` or socket-activated listener would be.
    """
    data = os.urandom(MiB + 3)
    origin.put("x.bin", data)
    sock = dual_stack_listener()
    port = sock.getsockname()[1]
    raw = bdn_config(tmp_path / "cache", {"web": {"type": "http", "base_url": origin.url}})
    raw.update(admin={"allow": ["127.0.0.1/32"]},
               peers={"static": [f"http://127.0.0.1:{port}"], "self": f"127.0.0.1:{port}"})
    runner = web.AppRunner(make_app(from_mapping(raw)), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        url = f"http://127.0.0.1:{port}"
        asked = {wire.OBJECT_HEADER: wire.encode_object(ObjectRef("web", "x.bin"),
                                                          ObjectInfo(size=len(data), etag=origin.etag("x.bin")))}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as stranger:
            async with stranger.post(f"{url}/v1/warm", json={"urls": ["web://x.bin"]}) as response:
                assert response.status == 403, "::ffff:127.0.0.2 is not 127.0.0.1"
            async with stranger.get(f"{url}/_peer/web", headers=asked) as response:
                assert response.status == 403, "::ffff:127.0.0.2 is not a peer"
        assert origin.log == []
        async with http.get(f"{url}/_peer/web", headers=asked) as response:
            assert response.status == 200, "::ffff:127.0.0.1 is the peer 127.0.0.1"
            assert sha256(await response.read()) == sha256(data)
        async with http.post(f"{url}/v1/warm", json={"urls": ["web://x.bin"]}) as response:
            assert response.status == 202, "::ffff:127.0.0.1 is in admin.allow 127.0.0.1/32"
    finally:
        await runner.cleanup()


async def test_the_hub_cannot_send_bdn_to_another_host(start_bdn: StartBdn, http: aiohttp.ClientSession) -> None:
    knocks: list[str] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        knocks.append("connection")
        writer.close()

    elsewhere = await asyncio.start_server(count, "127.0.0.2", 0)
    hub = FakeHub()
    await hub.start()
    try:
        hub.add_repo("acme/tiny", {"model.safetensors": os.urandom(2 * MiB)})
        hub.storage_url = f"http://127.0.0.2:{elsewhere.sockets[0].getsockname()[1]}"  # e.g. a metadata service
        node = await start_bdn({"hf": {"type": "hf", "endpoint": hub.url}})
        async with http.get(f"{node.url}/hf/acme/tiny/resolve/main/model.safetensors") as response:
            assert response.status == 502
            detail = (await response.json())["detail"]
            assert "storage_hosts" in detail and "127.0.0.2" in detail
        assert knocks == [], "bdn never connected to a host outside the source's configuration"
        assert await metric(node, http, "bdn_fills_total") == 0
    finally:
        await hub.stop()
        elsewhere.close()
