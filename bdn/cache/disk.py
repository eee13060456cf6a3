"""The disk tier: chunk files under `cache.dir`, an SQLite index, LRU eviction under a byte budget.

Layout: `chunks/ab/<version>.<index>` (names are hashes, never client paths), `tmp/` for fills
in progress, `index.sqlite` with two tables: `chunks` (name, size, atime) and `meta` (upstream answers as
JSON, such as an object's current version, with when they were last checked, so metadata age
survives restarts).

Crash safety: a chunk is written to `tmp/`, its length checked, fsynced, renamed into place,
and only then inserted into the index. A chunk is visible only once its row exists, so a
`kill -9` at any point leaves either nothing or a complete chunk. At open, `tmp/` is emptied,
rows whose file is missing or of the wrong size are dropped, and files with no row are removed.

Why SQLite directly rather than diskcache: diskcache stores a value by copying the file it
is given (every chunk would be written twice) and its LRU policy turns every read into an
UPDATE. bdn writes its own chunk files and needs only an index with a crash-recovery scan;
the hot path reads an in-memory copy of the index and never touches SQLite.

A full or failing disk never fails a request: a fill's space is allocated up front (so "no
space" comes before its first byte, not in the middle), and when allocation, a commit or an
index write fails, the tier notes the error (`write_error`, for /readyz and /metrics) and
`new_temp` answers None, so fills stream to their readers uncached; every `retry_interval` one
fill (or a /readyz probe) tries the disk again, and the first commit that works ends the episode.

All blocking work (SQLite, fsync, rename, unlink) runs on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("bdn.disk")
PROBE_BYTES = 1 << 20  # what a /readyz probe of a failing disk allocates
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (name TEXT PRIMARY KEY, size INTEGER NOT NULL, atime REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, info TEXT NOT NULL, checked_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pins (name TEXT PRIMARY KEY);
"""
_ATIME_FLUSH_BATCH = 256


class DiskTier:
    """See the module docstring. Create with `await DiskTier.open(root, budget)`."""

    def __init__(self, root: Path, budget: int, retry_interval: float = 5.0) -> None:
        self.root = root
        self.budget = budget
        self.retry_interval = retry_interval  # seconds between attempts to write to a failing disk
        self.write_error: str | None = None  # why writes fail, while they do
        self.write_errors = 0
        self._retry_at = 0.0
        self._chunks: OrderedDict[str, int] = OrderedDict()  # name → size, least recently used first
        self._meta: dict[str, tuple[dict[str, Any], float]] = {}
        self._touched: dict[str, float] = {}
        self._pinned: set[str] = set()  # chunks a preheat asked to keep: never evicted
        self.used_bytes = 0
        self.evictions = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bdn-disk")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, root: Path, budget: int, retry_interval: float = 5.0) -> DiskTier:
        tier = cls(root, budget, retry_interval)
        await tier._run(tier._open_blocking)
        return tier

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # -- start-up -------------------------------------------------------------------------------

    def _open_blocking(self) -> None:
        (self.root / "chunks").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for leftover in (self.root / "tmp").iterdir():
            leftover.unlink(missing_ok=True)
        self._load_chunks()
        self._remove_orphans()
        self._pinned = {name for (name,) in self._db.execute("SELECT name FROM pins")}
        for key, info, checked_at in self._db.execute("SELECT key, info, checked_at FROM meta"):
            self._meta[key] = (json.loads(info), checked_at)
        self._delete_blocking(self._pick_victims())

    def _load_chunks(self) -> None:
        assert self._db is not None
        dangling = []
        for name, size in self._db.execute("SELECT name, size FROM chunks ORDER BY atime"):
            try:
                on_disk = self.chunk_path(name).stat().st_size
            except FileNotFoundError:
                on_disk = -1
            if on_disk != size:
                dangling.append((name,))
                continue
            self._chunks[name] = size
            self.used_bytes += size
        self._db.executemany("DELETE FROM chunks WHERE name = ?", dangling)

    def _remove_orphans(self) -> None:
        for shard in (self.root / "chunks").iterdir():
            for path in shard.iterdir():
                if path.name not in self._chunks:
                    path.unlink(missing_ok=True)

    # -- chunks ---------------------------------------------------------------------------------

    def chunk_path(self, name: str) -> Path:
        return self.root / "chunks" / name[:2] / name

    def has(self, name: str) -> bool:
        return name in self._chunks

    def open_chunk(self, name: str) -> int | None:
        """An fd on a committed chunk (the caller closes it), or None when it is not on disk."""
        if name not in self._chunks:
            return None
        try:
            fd = os.open(self.chunk_path(name), os.O_RDONLY)
        except FileNotFoundError:
            return None
        self._chunks.move_to_end(name)
        self._touched[name] = time.time()
        if len(self._touched) >= _ATIME_FLUSH_BATCH:
            touched = self._take_touched()
            asyncio.get_running_loop().run_in_executor(self._thread, self._guarded(lambda: self._flush_atimes(touched)))
        return fd

    def new_temp(self, size: int) -> tuple[Path, int] | None:
        """A fresh file in `tmp/` with `size` bytes allocated, for a fill to write into: (path, read-write fd).

        None while the disk cannot take it (no space, failing writes): the fill then goes uncached.
        """
        if self.write_error is not None and time.monotonic() < self._retry_at:
            return None
        path = self.root / "tmp" / uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            self.write_failed(exc)
            return None
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            self.write_failed(exc)
            return None
        return path, fd

    def write_failed(self, exc: BaseException) -> None:
        """Note a failed write: fills go uncached for `retry_interval`, then the disk is tried again."""
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__  # never a path
        self.write_errors += 1
        if self.write_error is None:
            log.error("cache disk write failed (%s): serving uncached until writes work again", reason)
        self.write_error = reason
        self._retry_at = time.monotonic() + self.retry_interval

    def _write_worked(self) -> None:
        if self.write_error is not None:
            log.warning("cache disk writes work again: caching resumes")
            self.write_error = None

    async def recovered(self) -> bool:
        """Whether writes work (for /readyz): while they fail, probe once per `retry_interval`."""
        if self.write_error is None:
            return True

        def probe() -> None:
            temp = self.new_temp(PROBE_BYTES)
            if temp is not None:
                os.close(temp[1])
                temp[0].unlink()
                self._write_worked()

        await self._run(probe)
        return self.write_error is None

    async def commit(self, temp: Path, fd: int, name: str, size: int) -> bool:
        """Make a fully written temp file the chunk `name`; False (and the temp file gone) if the disk failed."""
        try:
            await self._run(lambda: self._commit_blocking(temp, fd, name, size))
        except (OSError, sqlite3.Error) as exc:
            self.discard(temp)
            self.chunk_path(name).unlink(missing_ok=True)  # renamed but not indexed: not a chunk
            self.write_failed(exc)
            return False
        self._write_worked()
        self._chunks[name] = size
        self.used_bytes += size
        victims = self._pick_victims()
        if victims:
            await self._run(self._guarded(lambda: self._delete_blocking(victims)))
        return True

    def _guarded(self, write: Callable[[], None]) -> Callable[[], None]:
        """`write`, noting rather than raising a disk failure (index writes must never fail a request)."""
        def run() -> None:
            try:
                write()
            except (OSError, sqlite3.Error) as exc:
                self.write_failed(exc)

        return run

    def _commit_blocking(self, temp: Path, fd: int, name: str, size: int) -> None:
        assert self._db is not None
        actual = os.fstat(fd).st_size
        if actual != size:
            raise ValueError(f"chunk {name}: wrote {actual} bytes, expected {size}")
        os.fsync(fd)
        final = self.chunk_path(name)
        final.parent.mkdir(exist_ok=True)
        os.rename(temp, final)
        self._db.execute("INSERT OR REPLACE INTO chunks (name, size, atime) VALUES (?, ?, ?)",
                         (name, size, time.time()))

    async def pin(self, names: list[str]) -> None:
        """Keep these chunks whatever the budget (a preheat with `pin: true`)."""
        self._pinned.update(names)
        rows = [(name,) for name in names]
        await self._run(self._guarded(lambda: self._db_executemany("INSERT OR IGNORE INTO pins (name) VALUES (?)",
                                                                   rows)))

    def _db_executemany(self, sql: str, rows: list[tuple[str]]) -> None:
        assert self._db is not None
        self._db.executemany(sql, rows)

    async def remove(self, names: list[str]) -> None:
        """Drop committed chunks (their bytes proved wrong)."""
        victims = [name for name in names if name in self._chunks]
        for name in victims:
            self.used_bytes -= self._chunks.pop(name)
            self._touched.pop(name, None)
        await self._run(self._guarded(lambda: self._delete_blocking(victims)))

    def discard(self, temp: Path) -> None:
        """Forget a temp file whose fill failed (never committed)."""
        temp.unlink(missing_ok=True)

    def _take_touched(self) -> dict[str, float]:
        touched, self._touched = self._touched, {}
        return touched

    def _flush_atimes(self, touched: dict[str, float]) -> None:
        assert self._db is not None
        self._db.executemany("UPDATE chunks SET atime = ? WHERE name = ?", [(t, n) for n, t in touched.items()])

    def _pick_victims(self) -> list[str]:
        """Take least-recently-used chunks (never pinned ones) out of the index until within budget."""
        victims = []
        for name in list(self._chunks):
            if self.used_bytes <= self.budget:
                break
            if name in self._pinned:
                continue
            size = self._chunks.pop(name)
            self.used_bytes -= size
            self.evictions += 1
            self._touched.pop(name, None)
            victims.append(name)
        return victims

    def _delete_blocking(self, victims: list[str]) -> None:
        """Drop evicted chunks: the row first, then the file (a crash between leaves an orphan file)."""
        assert self._db is not None
        self._db.executemany("DELETE FROM chunks WHERE name = ?", [(name,) for name in victims])
        for name in victims:
            self.chunk_path(name).unlink(missing_ok=True)

    # -- object metadata ------------------------------------------------------------------------

    def meta(self, key: str) -> tuple[dict[str, Any], float] | None:
        """A stored upstream answer and the wall-clock time it was last checked."""
        return self._meta.get(key)

    async def put_meta(self, key: str, value: dict[str, Any], checked_at: float) -> None:
        self._meta[key] = (value, checked_at)
        text = json.dumps(value)
        sql = "INSERT OR REPLACE INTO meta (key, info, checked_at) VALUES (?, ?, ?)"
        await self._run(self._guarded(lambda: self._execute(sql, (key, text, checked_at))))

    def expire_meta(self, key: str) -> None:
        """Mark a stored answer as needing revalidation (the upstream says it changed)."""
        known = self._meta.get(key)
        if known is not None:
            self._meta[key] = (known[0], 0.0)
            asyncio.get_running_loop().run_in_executor(
                self._thread, self._guarded(lambda: self._execute("UPDATE meta SET checked_at = 0 WHERE key = ?",
                                                                  (key,))))

    async def drop_meta(self, key: str) -> None:
        if self._meta.pop(key, None) is not None:
            await self._run(self._guarded(lambda: self._execute("DELETE FROM meta WHERE key = ?", (key,))))

    def _execute(self, sql: str, args: tuple[object, ...]) -> None:
        assert self._db is not None
        self._db.execute(sql, args)

    # -- health and shutdown --------------------------------------------------------------------

    async def close(self) -> None:
        if self._db is not None:
            touched = self._take_touched()
            await self._run(self._guarded(lambda: self._flush_atimes(touched)))
            await self._run(self._db.close)
        self._thread.shutdown(wait=True)
