"""The fake Hub (tests/hub.py) against the unmodified huggingface_hub client, directly, with no bdn involved.

If these pass, the fake speaks the protocol the client expects, so tests that put bdn between the
two test bdn and not the fake. The client is synchronous: it runs in a thread (`asyncio.to_thread`)
while both servers run in the test's event loop. `endpoint=` is passed explicitly because
`HF_ENDPOINT` is read at import time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub import FakeHub, MiB, flipped, git_blob_sha1, sha256, xet_hash

CONFIG = b'{"model_type": "tiny", "hidden_size": 8}\n'
WEIGHTS = random.Random(1).randbytes(3 * MiB + 17)  # LFS, multi-MiB, not a multiple of anything
SHARD = random.Random(2).randbytes(MiB)  # exactly at the LFS threshold: LFS
SMALL = random.Random(3).randbytes(MiB - 1)  # just under: a regular git file


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HF_HOME / cache dir, telemetry off, and no implicit token from the environment or disk."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    # constants are read once at import; patch what the client consults at call time
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return tmp_path / "hub_cache"


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    server = FakeHub()
    await server.start()
    yield server
    await server.stop()


async def download(hub: FakeHub, hf_cache: Path, repo_id: str, filename: str, **kwargs: Any) -> bytes:
    path = await asyncio.to_thread(
        hf_hub_download, repo_id, filename, endpoint=hub.url, cache_dir=hf_cache, **kwargs,
    )
    return Path(path).read_bytes()


async def snapshot(hub: FakeHub, hf_cache: Path, repo_id: str, **kwargs: Any) -> Path:
    return Path(await asyncio.to_thread(snapshot_download, repo_id, endpoint=hub.url, cache_dir=hf_cache, **kwargs))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the client, directly


async def test_hf_hub_download_regular_and_lfs(hub: FakeHub, hf_cache: Path) -> None:
    odd = "docs/a b+c ü.txt"  # the client percent-encodes everything but "/"
    files = {"config.json": CONFIG, "model.bin": WEIGHTS, "sub/shard.bin": SHARD, "sub/small.bin": SMALL, odd: b"odd"}
    sha = hub.add_repo("acme/tiny", files)

    for name, data in files.items():
        assert await download(hub, hf_cache, "acme/tiny", name) == data

    repo_dir = hf_cache / "models--acme--tiny"
    assert (repo_dir / "refs" / "main").read_text() == sha
    assert files_under(repo_dir / "snapshots" / sha) == files
    # the cache keys blobs by the Hub's ETags: git blob sha1 for regular files, sha256 for LFS
    blobs = {p.name for p in (repo_dir / "blobs").iterdir()}
    assert blobs == {git_blob_sha1(CONFIG), git_blob_sha1(SMALL), git_blob_sha1(b"odd"), sha256(WEIGHTS), sha256(SHARD)}
    assert hub.resolves("/resolve/main/docs/a%20b%2Bc%20%C3%BC.txt", "GET")

    # regular files come from the Hub itself; LFS files by a 302 to the storage host, fetched there once
    assert [r.method for r in hub.resolves("/resolve/main/config.json")] == ["HEAD", "GET"]
    assert [r.method for r in hub.resolves("/resolve/main/model.bin")] == ["HEAD"]
    assert len(hub.storage_gets(sha256(WEIGHTS))) == 1
    assert len(hub.storage_gets(sha256(SHARD))) == 1
    assert hub.storage_gets(sha256(SMALL)) == []
    assert hub.completed == 2
    assert hub.xet_requests() == []
    assert not any(r.auth for r in hub.log)

    # a second call is served from the cache after one metadata HEAD
    hub.clear_log()
    assert await download(hub, hf_cache, "acme/tiny", "model.bin") == WEIGHTS
    assert [(r.host, r.method) for r in hub.log] == [("hub", "HEAD")]


async def test_snapshot_download_with_allow_patterns(hub: FakeHub, hf_cache: Path) -> None:
    files = {
        "config.json": CONFIG, "model.bin": WEIGHTS, "sub/shard.bin": SHARD, "sub/deeper/notes.txt": b"notes\n",
        "README.md": b"# tiny\n", "other/skip.bin": SMALL,
    }
    sha = hub.add_repo("acme/tiny", files)

    folder = await snapshot(hub, hf_cache, "acme/tiny", allow_patterns=["*.json", "sub/*", "model.bin"])

    assert folder == hf_cache / "models--acme--tiny" / "snapshots" / sha
    wanted = {"config.json", "model.bin", "sub/shard.bin", "sub/deeper/notes.txt"}
    assert files_under(folder) == {name: files[name] for name in wanted}
    paths = [r.path for r in hub.requests("hub")]
    assert paths[:2] == ["/api/models/acme/tiny/revision/main", f"/api/models/acme/tiny/tree/{sha}"]
    assert {p.rsplit("/resolve/", 1)[-1] for p in paths[2:]} == {f"{sha}/{name}" for name in wanted}
    assert not any("skip.bin" in p or "README" in p for p in paths)
    assert hub.xet_requests() == []


async def test_dataset_repo_with_a_one_segment_id(hub: FakeHub, hf_cache: Path) -> None:
    files = {"data/train.parquet": WEIGHTS, "README.md": b"# squad\n"}
    sha = hub.add_repo("squad", files, repo_type="dataset")
    hub.add_repo("squad", {"README.md": b"a model with the same name\n"})  # must not be confused with it

    assert await download(hub, hf_cache, "squad", "data/train.parquet", repo_type="dataset") == WEIGHTS
    folder = await snapshot(hub, hf_cache, "squad", repo_type="dataset")

    assert folder == hf_cache / "datasets--squad" / "snapshots" / sha
    assert files_under(folder) == files
    assert hub.resolves("/datasets/squad/resolve/main/data/train.parquet")
    assert hub.requests("hub", "GET", "/api/datasets/squad/revision/main")


async def test_revision_by_sha_by_tag_and_by_pr_ref(hub: FakeHub, hf_cache: Path) -> None:
    first = hub.add_repo("acme/tiny", {"config.json": b"v1\n", "model.bin": WEIGHTS})
    second = hub.commit("acme/tiny", {"config.json": b"v2\n", "model.bin": SHARD})
    hub.set_ref("acme/tiny", "v1.0", first)
    pr = hub.commit("acme/tiny", {"config.json": b"pr\n"}, branch="refs/pr/1")
    assert len({first, second, pr}) == 3 and hub.head("acme/tiny") == second

    assert await download(hub, hf_cache, "acme/tiny", "config.json") == b"v2\n"
    assert await download(hub, hf_cache, "acme/tiny", "config.json", revision=first) == b"v1\n"
    assert await download(hub, hf_cache, "acme/tiny", "model.bin", revision="v1.0") == WEIGHTS
    assert await download(hub, hf_cache, "acme/tiny", "config.json", revision="refs/pr/1") == b"pr\n"
    assert await download(hub, hf_cache, "acme/tiny", "model.bin", revision="refs/pr/1") == SHARD

    refs = hf_cache / "models--acme--tiny" / "refs"
    assert (refs / "main").read_text() == second
    assert (refs / "v1.0").read_text() == first
    assert (refs / "refs" / "pr" / "1").read_text() == pr
    assert hub.resolves(f"/resolve/{first}/config.json")
    assert hub.resolves("/resolve/refs%2Fpr%2F1/config.json")  # the client percent-encodes the ref

    folder = await snapshot(hub, hf_cache, "acme/tiny", revision="v1.0")
    assert folder.name == first
    assert files_under(folder) == {"config.json": b"v1\n", "model.bin": WEIGHTS}


async def test_private_repo_needs_one_of_its_tokens(hub: FakeHub, hf_cache: Path) -> None:
    hub.add_repo("acme/secret", {"config.json": CONFIG, "model.bin": WEIGHTS}, private=True, tokens=("hf_good",))

    for token in (None, "hf_wrong"):
        with pytest.raises(RepositoryNotFoundError) as raised:
            await download(hub, hf_cache, "acme/secret", "config.json", token=token)
        assert not isinstance(raised.value, GatedRepoError)
        assert raised.value.response is not None and raised.value.response.status_code == 401
        with pytest.raises(RepositoryNotFoundError):
            await snapshot(hub, hf_cache, "acme/secret", token=token)

    hub.clear_log()
    assert await download(hub, hf_cache, "acme/secret", "config.json", token="hf_good") == CONFIG
    assert await download(hub, hf_cache, "acme/secret", "model.bin", token="hf_good") == WEIGHTS
    assert all(r.authorization == "Bearer hf_good" for r in hub.requests("hub"))
    # the client drops the token when following the redirect to another origin (a signed URL)
    assert [r.auth for r in hub.storage_gets(sha256(WEIGHTS))] == [False]


async def test_gated_repo(hub: FakeHub, hf_cache: Path) -> None:
    hub.add_repo("acme/gated", {"config.json": CONFIG, "model.bin": WEIGHTS}, gated=True, tokens=("hf_ok",))

    for token in (None, "hf_wrong"):
        with pytest.raises(GatedRepoError):
            await download(hub, hf_cache, "acme/gated", "model.bin", token=token)
    # like the Hub: a gated repo lists publicly, its files need access
    with pytest.raises(GatedRepoError):
        await snapshot(hub, hf_cache, "acme/gated")
    assert hub.storage_gets() == []

    folder = await snapshot(hub, hf_cache, "acme/gated", token="hf_ok")
    assert files_under(folder) == {"config.json": CONFIG, "model.bin": WEIGHTS}


async def test_missing_repo_file_and_revision(hub: FakeHub, hf_cache: Path) -> None:
    sha = hub.add_repo("acme/tiny", {"config.json": CONFIG})

    with pytest.raises(RepositoryNotFoundError):
        await download(hub, hf_cache, "acme/nope", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        await download(hub, hf_cache, "acme/tiny", "config.json", repo_type="dataset")

    with pytest.raises(RemoteEntryNotFoundError) as raised:
        await download(hub, hf_cache, "acme/tiny", "missing.bin")
    assert isinstance(raised.value, EntryNotFoundError)
    # X-Repo-Commit on the 404 lets the client remember the miss
    assert (hf_cache / "models--acme--tiny" / ".no_exist" / sha / "missing.bin").exists()

    with pytest.raises(RevisionNotFoundError):
        await download(hub, hf_cache, "acme/tiny", "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        await download(hub, hf_cache, "acme/tiny", "config.json", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        await snapshot(hub, hf_cache, "acme/tiny", revision="no-such-branch")


async def test_client_never_calls_xet_unless_advertised(hub: FakeHub, hf_cache: Path) -> None:
    hub.add_repo("acme/tiny", {"config.json": CONFIG, "model.bin": WEIGHTS})

    folder = await snapshot(hub, hf_cache / "plain", "acme/tiny")
    assert files_under(folder) == {"config.json": CONFIG, "model.bin": WEIGHTS}
    assert hub.xet_requests() == []
    assert not any("xet" in r.path or "cas" in r.path for r in hub.log)

    # the counterpart, which makes the stripping tests meaningful: the advertised headers do send
    # hf_xet to the token route, and with no xet backend the download fails (no fallback to HTTP)
    hub.advertise_xet = True
    with pytest.raises(HfHubHTTPError):
        await download(hub, hf_cache / "xet", "acme/tiny", "model.bin")
    assert [r.path for r in hub.xet_requests()] == [f"/api/models/acme/tiny/xet-read-token/{hub.head('acme/tiny')}"]
    assert hub.storage_gets(sha256(WEIGHTS)) == [hub.storage_gets()[0]]  # only the plain download's GET


async def test_hfapi_tree_pagination_paths_info_and_repo_info(hub: FakeHub, hf_cache: Path) -> None:
    files = {f"shards/{i:03d}.txt": b"%d\n" % i for i in range(25)}
    sha = hub.add_repo("acme/many", {**files, "model.bin": WEIGHTS, "a/b/c.json": CONFIG}, tokens=("t",))
    hub.page_size = 7
    api = HfApi(endpoint=hub.url, token=False)

    listing = await asyncio.to_thread(lambda: list(api.list_repo_tree("acme/many", recursive=True)))
    assert [e.path for e in listing] == [
        "a", "a/b", "a/b/c.json", "model.bin", "shards", *sorted(files),
    ]
    assert len(hub.requests("hub", "GET", "/tree/")) == 5  # 30 entries in pages of 7
    model = next(e for e in listing if e.path == "model.bin")
    assert model.lfs is not None and model.lfs.sha256 == sha256(WEIGHTS) and model.size == len(WEIGHTS)
    assert model.xet_hash is None
    config = next(e for e in listing if e.path == "a/b/c.json")
    assert config.blob_id == git_blob_sha1(CONFIG) and config.lfs is None

    subtree = await asyncio.to_thread(lambda: list(api.list_repo_tree("acme/many", "a/b", revision=sha)))
    assert [e.path for e in subtree] == ["a/b/c.json"]

    infos = await asyncio.to_thread(api.get_paths_info, "acme/many", ["model.bin", "a", "nope"], expand=True)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "model.bin"), ("RepoFolder", "a")]
    assert infos[0].last_commit is not None and infos[0].last_commit.oid == sha

    info = await asyncio.to_thread(api.model_info, "acme/many", files_metadata=True)
    assert info.sha == sha and info.id == "acme/many"
    assert info.siblings is not None and len(info.siblings) == 27
    hub.advertise_xet = True
    listing = await asyncio.to_thread(lambda: list(api.list_repo_tree("acme/many", recursive=True)))
    assert next(e for e in listing if e.path == "model.bin").xet_hash == xet_hash(WEIGHTS)


# ------------------------------------------------------------------ the wire, byte for byte


async def test_wire_resolve_headers_and_errors(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    sha = hub.add_repo("acme/tiny", {"config.json": CONFIG, "model.bin": WEIGHTS})
    base = f"{hub.url}/acme/tiny/resolve"

    async with http.head(f"{base}/main/config.json") as resp:
        assert resp.status == 200
        assert resp.headers["X-Repo-Commit"] == sha
        assert resp.headers["ETag"] == f'"{git_blob_sha1(CONFIG)}"'
        assert resp.headers["Content-Length"] == str(len(CONFIG))
        assert "Content-Encoding" not in resp.headers
    async with http.get(f"{base}/main/config.json", headers={"Range": "bytes=5-"}) as resp:
        assert resp.status == 206 and await resp.read() == CONFIG[5:]
        assert resp.headers["Content-Range"] == f"bytes 5-{len(CONFIG) - 1}/{len(CONFIG)}"

    async with http.head(f"{base}/{sha}/model.bin", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["X-Repo-Commit"] == sha
        assert resp.headers["X-Linked-Etag"] == f'"{sha256(WEIGHTS)}"'
        assert resp.headers["X-Linked-Size"] == str(len(WEIGHTS))
        assert resp.headers["Location"].startswith(f"{hub.storage_url}/blobs/{sha256(WEIGHTS)}?X-Amz-Signature=")
        assert not any(h.lower().startswith("x-xet") for h in resp.headers) and "Link" not in resp.headers
    hub.advertise_xet = True
    async with http.get(f"{base}/main/model.bin", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["X-Xet-Hash"] == xet_hash(WEIGHTS)
        assert resp.headers["X-Xet-Refresh-Route"] == f"/api/models/acme/tiny/xet-read-token/{sha}"
        assert 'rel="xet-auth"' in resp.headers["Link"]

    expected = {
        f"{hub.url}/acme/nope/resolve/main/x": (401, "RepoNotFound", None),
        f"{base}/nope/config.json": (404, "RevisionNotFound", None),
        f"{base}/main/nope.bin": (404, "EntryNotFound", sha),
        f"{hub.url}/api/models/acme/tiny/revision/nope": (404, "RevisionNotFound", None),
        f"{hub.url}/api/datasets/acme/tiny": (401, "RepoNotFound", None),
    }
    for url, (status, code, commit) in expected.items():
        async with http.head(url) as resp:
            assert (resp.status, resp.headers.get("X-Error-Code"), resp.headers.get("X-Repo-Commit")) == (
                status, code, commit,
            ), url
            assert resp.headers["X-Error-Message"]
    async with http.get(f"{hub.url}/api/agent-harnesses") as resp:
        assert resp.status == 404


async def test_wire_storage_ranges_signatures_and_faults(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    data = WEIGHTS
    hub.add_repo("acme/tiny", {"model.bin": data})
    digest = sha256(data)
    url = hub.signed_url(digest)
    size = len(data)

    cases = {
        "bytes=0-99": (206, data[:100], f"bytes 0-99/{size}"),
        "bytes=100-": (206, data[100:], f"bytes 100-{size - 1}/{size}"),
        "bytes=-10": (206, data[-10:], f"bytes {size - 10}-{size - 1}/{size}"),
        f"bytes=-{size + 5}": (206, data, f"bytes 0-{size - 1}/{size}"),
        f"bytes={size - 1}-{size + 100}": (206, data[-1:], f"bytes {size - 1}-{size - 1}/{size}"),
        f"bytes={size}-": (416, b"", f"bytes */{size}"),
        "bytes=-0": (416, b"", f"bytes */{size}"),
        "bytes=9-3": (200, data, None),  # invalid: ignored
        "bytes=0-1,5-6": (200, data, None),  # multi-range: may be ignored
    }
    for header, (status, body, content_range) in cases.items():
        async with http.get(url, headers={"Range": header, "Authorization": "Bearer ignored"}) as resp:
            assert (resp.status, resp.headers.get("Content-Range")) == (status, content_range), header
            if status != 416:
                assert await resp.read() == body, header
                assert resp.headers["ETag"] == f'"{digest}"'
    async with http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}) as resp:
        assert resp.status == 200 and len(await resp.read()) == size
    async with http.head(url) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(size)

    bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    async with http.get(bad) as resp:
        assert resp.status == 403
    hub.expire_urls()
    async with http.get(url) as resp:
        assert resp.status == 403

    hub.corrupt(digest)
    async with http.get(hub.signed_url(digest), headers={"Range": "bytes=10-19"}) as resp:
        assert resp.status == 206 and await resp.read() == flipped(data[10:20])
    hub.corrupt(digest, on=False)

    hub.down = True
    async with http.head(f"{hub.url}/acme/tiny/resolve/main/model.bin") as resp:
        assert resp.status == 503
    hub.down = False

    old = hub.url, hub.storage_url
    await hub.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{hub.url}/api/models/acme/tiny"):
            pass
    await hub.start()
    assert (hub.url, hub.storage_url) == old
    async with http.get(f"{hub.url}/api/models/acme/tiny") as resp:
        assert resp.status == 200 and (await resp.json())["sha"] == hub.head("acme/tiny")
    assert {r.host for r in hub.log} == {"hub", "storage"}


async def test_stopping_cuts_a_transfer_in_flight(hub: FakeHub, http: aiohttp.ClientSession) -> None:
    hub.add_repo("acme/tiny", {"model.bin": WEIGHTS})
    hub.storage_bytes_per_second = 4 * MiB

    async def fetch() -> bytes:
        async with http.get(hub.signed_url(sha256(WEIGHTS))) as resp:
            return await resp.read()

    transfer = asyncio.create_task(fetch())
    await asyncio.sleep(0.2)
    await hub.stop()
    with pytest.raises(aiohttp.ClientPayloadError):
        await transfer
    assert hub.completed == 0
