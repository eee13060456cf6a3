"""The unmodified huggingface_hub client through bdn (`endpoint=http://NODE/hf`) against tests/hub.py's fake Hub."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from bdn.state import CACHE_KEY
from tests.conftest import ROOT, Bdn, MiB, StartBdn, sha256
from tests.hub import FakeHub

BDN_TOKEN = "hf_bdn_node_token"
USER_TOKEN = "hf_user_with_access"
OTHER_TOKEN = "hf_user_of_another_repo"
FILES = {
    "config.json": b'{"model_type": "tiny"}\n',
    "tokenizer/vocab.txt": b"hello\nworld\n" * 100,
    "model-00001-of-00002.safetensors": os.urandom(3 * MiB + 17),
    "model-00002-of-00002.safetensors": os.urandom(2 * MiB),
    "README.md": b"# tiny\n",
}


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    server = FakeHub()
    await server.start()
    server.add_repo("acme/tiny", FILES)
    server.add_repo("acme/data", {"train.jsonl": os.urandom(MiB + 5), "README.md": b"data\n"}, repo_type="dataset")
    server.add_repo("acme/secret", {"w.bin": os.urandom(2 * MiB)}, private=True, tokens=(BDN_TOKEN, USER_TOKEN))
    server.add_repo("acme/gated", {"w.bin": os.urandom(2 * MiB)}, gated="manual", tokens=(BDN_TOKEN, USER_TOKEN))
    server.add_repo("other/own", {"x.bin": b"x"}, private=True, tokens=(BDN_TOKEN, OTHER_TOKEN))
    yield server
    await server.stop()


@pytest.fixture
async def node(hub: FakeHub, start_bdn: StartBdn, monkeypatch: pytest.MonkeyPatch) -> Bdn:
    monkeypatch.setenv("BDN_TEST_HF_TOKEN", BDN_TOKEN)
    return await start_bdn({"hf": hub.source(token_env="BDN_TEST_HF_TOKEN")}, metadata_ttl="1h")


def endpoint(node: Bdn) -> str:
    return f"{node.url}/hf"


async def snapshot(node: Bdn, cache_dir: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("token", False)
    return Path(await asyncio.to_thread(snapshot_download, "acme/tiny", endpoint=endpoint(node),
                                        cache_dir=cache_dir, **kwargs))


async def download(node: Bdn, cache_dir: Path, repo_id: str, filename: str, **kwargs: Any) -> bytes:
    kwargs.setdefault("token", False)
    path = await asyncio.to_thread(hf_hub_download, repo_id, filename, endpoint=endpoint(node),
                                   cache_dir=cache_dir, **kwargs)
    return Path(path).read_bytes()


def assert_snapshot(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert sha256((folder / name).read_bytes()) == sha256(data), name


async def test_snapshot_download_matches_the_hub(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    folder = await snapshot(node, tmp_path / "client")
    assert_snapshot(folder, FILES)
    assert folder.name == hub.head("acme/tiny")
    assert hub.xet_requests() == []


async def test_eight_parallel_snapshots_fetch_each_file_from_storage_once(node: Bdn, hub: FakeHub,
                                                                        tmp_path: Path) -> None:
    folders = await asyncio.gather(*(snapshot(node, tmp_path / f"client{i}") for i in range(8)))
    for folder in folders:
        assert_snapshot(folder, FILES)
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        blob = hub.file("acme/tiny", name).sha256
        ranges = sorted((r.range or "" for r in hub.storage_gets(blob)), key=lambda r: int(r[6:].split("-")[0]))
        size = len(FILES[name])
        expected = [f"bytes={i}-{min(i + MiB, size) - 1}" for i in range(0, size, MiB)]
        assert ranges == expected, f"{name}: each chunk once from storage"
    regular = [r for r in hub.resolves("/config.json", "GET")]
    assert len(regular) <= 1


async def test_cached_repo_survives_the_hub_going_away(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    sha = hub.head("acme/tiny")
    assert_snapshot(await snapshot(node, tmp_path / "warm"), FILES)
    await hub.stop()
    assert_snapshot(await snapshot(node, tmp_path / "by-sha", revision=sha), FILES)
    assert_snapshot(await snapshot(node, tmp_path / "by-branch", revision="main"), FILES)
    single = await download(node, tmp_path / "single", "acme/tiny", "model-00001-of-00002.safetensors",
                            revision=sha)
    assert single == FILES["model-00001-of-00002.safetensors"]


async def test_by_sha_needs_no_upstream_request_once_cached(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    sha = hub.head("acme/tiny")
    await snapshot(node, tmp_path / "warm", revision=sha)
    hub.clear_log()
    assert_snapshot(await snapshot(node, tmp_path / "again", revision=sha), FILES)
    assert hub.log == []


async def test_corrupted_lfs_object_is_detected_and_never_served(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    name = "model-00001-of-00002.safetensors"
    hub.corrupt(hub.file("acme/tiny", name).sha256)
    with pytest.raises((OSError, httpx2.TransportError)):  # a broken transfer, never a complete wrong file
        await download(node, tmp_path / "c1", "acme/tiny", name)
    assert not list((tmp_path / "c1").rglob(name)), "no file of that name was completed"
    assert node.app[CACHE_KEY].checksum_failures >= 1  # once per attempt: the client retries
    url = f"{endpoint(node)}/acme/tiny/resolve/main/{name}"
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Range": "bytes=0-99"}) as response:
        assert response.status == 502  # a range that stops short of the end is checked before its first byte
    hub.corrupt(hub.file("acme/tiny", name).sha256, on=False)
    assert await download(node, tmp_path / "c2", "acme/tiny", name) == FILES[name]


async def test_regular_files_and_datasets(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    assert await download(node, tmp_path, "acme/tiny", "config.json") == FILES["config.json"]
    data = await download(node, tmp_path, "acme/data", "train.jsonl", repo_type="dataset")
    assert data == hub.file("acme/data", "train.jsonl", repo_type="dataset").data
    folder = Path(await asyncio.to_thread(snapshot_download, "acme/tiny", endpoint=endpoint(node), token=False,
                                          cache_dir=tmp_path / "pattern", allow_patterns=["*.json", "tokenizer/*"]))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "config.json", "tokenizer/vocab.txt"]


async def test_private_and_gated_repos_need_a_token_the_hub_accepts(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    for repo, error in (("acme/secret", RepositoryNotFoundError), ("acme/gated", GatedRepoError)):
        with pytest.raises(error):
            await download(node, tmp_path / "anon", repo, "w.bin")
        data = await download(node, tmp_path / "user", repo, "w.bin", token=USER_TOKEN)
        assert data == hub.file(repo, "w.bin").data
        with pytest.raises(error):  # cached now, and still refused to a token of another repo
            await download(node, tmp_path / "other", repo, "w.bin", token=OTHER_TOKEN)
        with pytest.raises(error):
            await download(node, tmp_path / "anon2", repo, "w.bin")


async def test_missing_repo_file_and_revision_raise_the_clients_errors(node: Bdn, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        await download(node, tmp_path, "acme/nope", "config.json")
    with pytest.raises(EntryNotFoundError):
        await download(node, tmp_path, "acme/tiny", "nope.json")
    with pytest.raises(RevisionNotFoundError):
        await download(node, tmp_path, "acme/tiny", "config.json", revision="no-such-branch")


async def test_xet_is_never_advertised_to_clients(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    hub.advertise_xet = True
    assert_snapshot(await snapshot(node, tmp_path / "client"), FILES)
    assert hub.xet_requests() == []
    async with aiohttp.ClientSession() as http:
        url = f"{endpoint(node)}/acme/tiny/resolve/main/model-00002-of-00002.safetensors"
        async with http.head(url) as head:
            assert head.status == 200
            assert not [h for h in head.headers if h.lower().startswith("x-xet")]
            assert "xet" not in head.headers.get("Link", "")
            assert head.headers["X-Linked-Size"] == str(2 * MiB)
        async with http.get(f"{endpoint(node)}/api/models/acme/tiny/tree/main?recursive=true") as tree:
            assert tree.status == 200
            assert all("xetHash" not in entry for entry in await tree.json())


async def test_hf_download_cli(node: Bdn, hub: FakeHub, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": endpoint(node), "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    target = tmp_path / "out"
    cli = Path(sys.executable).parent / "hf"
    process = await asyncio.create_subprocess_exec(
        str(cli), "download", "acme/tiny", "--local-dir", str(target), cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()[-2000:]
    assert_snapshot(target, FILES)
