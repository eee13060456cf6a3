"""Short soak (issue 8, point 7): 100 connections via a bdn subprocess; no wrong byte, 5xx, error, RSS past bound.

The same code path as `python benchmarks/soak.py` (60 s, 500 connections): the origin and bdn
run as subprocesses on 127.0.0.1, and every answer is checked against the origin's bytes.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import KINDS, MiB, SoakConfig, run_soak, summary


def test_short_soak_serves_every_byte_right_within_the_rss_bound(tmp_path: Path) -> None:
    report = run_soak(SoakConfig(seconds=10, connections=100), tmp_path)
    print(summary(report))
    assert report.failures() == [], summary(report)
    assert all(report.requests[kind] > 0 for kind in KINDS), report.requests
    assert report.statuses.get("200", 0) > 0 and report.statuses.get("206", 0) > 0, report.statuses
    assert report.cache.get("MISS", 0) > 0 and report.cache.get("HIT-RAM", 0) > 0, report.cache


def test_rss_stays_within_ram_bytes_plus_the_constant_with_4mib_chunks(tmp_path: Path) -> None:
    """The RAM tier stays within its budget whatever the chunk size (production's default is 16 MiB).

    16 objects of 16 MiB (4x the tier), 4 MiB chunks, a 64 MiB tier and 100 connections: the tier
    churns (~500 evictions in 5 s). Before d9ab2fd bdn peaked at 403-459 MiB here against a bound
    of 320: fills kept chunk copies outside the budget, disk hits loaded chunks unreserved, and
    responses sending from RAM kept evicted chunks alive (benchmarks/RESULTS.md, "Soak").
    """
    config = SoakConfig(seconds=5, connections=100, objects=16, object_size=16 * MiB, chunk_bytes=4 * MiB)
    report = run_soak(config, tmp_path)
    print(summary(report))
    assert report.failures() == [], summary(report)
    assert report.metrics['bdn_cache_evictions_total{tier="ram"}'] >= 100, "the tier churned"
