"""`/metrics`: the daemon's counters in the Prometheus text format, read from the parts that keep them.

One collector per app reads the state the cache, its tiers and the peer tier already count, at
scrape time, on a registry of its own (so several apps in one process never share counters).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bdn.state import CACHE_KEY

TIER_OF_RESULT = {"HIT-RAM": "ram", "HIT": "disk", "HIT-PEER": "peer", "MISS": "upstream", "BYPASS": "upstream"}


class RequestMetrics:
    """Per-request counters, fed by the access log middleware."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("bdn_requests", "Requests answered, by source, status and cache result",
                                ["source", "status", "cache"], registry=registry)
        self.served = Counter("bdn_served_bytes", "Object bytes sent to clients, by the tier that had them",
                              ["tier"], registry=registry)
        self.ttfb = Histogram("bdn_ttfb_seconds", "Time from request to the first body byte of object answers",
                              buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
                              registry=registry)
        self.fill_seconds = Histogram("bdn_fill_seconds", "Time to fill one chunk, from its first read to its commit",
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=registry)


REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
REQUESTS_KEY = web.AppKey("request_metrics", RequestMetrics)


def observe_request(app: web.Application, source: str, status: int, cache: str, sent: int,
                    ttfb: float | None) -> None:
    metrics = app.get(REQUESTS_KEY)
    if metrics is None:
        return
    metrics.requests.labels(source or "-", str(status), cache or "-").inc()
    if cache in TIER_OF_RESULT:
        metrics.served.labels(TIER_OF_RESULT[cache]).inc(sent)
    if ttfb is not None:
        metrics.ttfb.observe(ttfb)


class CacheCollector(Collector):
    """Tier sizes, evictions, checksum failures and peer traffic of one app."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        cache = self._app.get(CACHE_KEY)
        if cache is None:
            return
        tiers = {"ram": cache.ram, "disk": cache.disk}
        for kind, name, doc, attribute in (
                (GaugeMetricFamily, "bdn_cache_used_bytes", "Bytes held by each cache tier", "used_bytes"),
                (GaugeMetricFamily, "bdn_cache_budget_bytes", "Configured budget of each cache tier", "budget"),
                (CounterMetricFamily, "bdn_cache_evictions", "Chunks evicted to stay within budget", "evictions")):
            metric = kind(name, doc, labels=["tier"])
            for tier, store in tiers.items():
                metric.add_metric([tier], getattr(store, attribute))
            yield metric
        yield GaugeMetricFamily("bdn_cache_disk_writable", "0 while cache disk writes fail (fills go uncached)",
                                value=0.0 if cache.disk.write_error else 1.0)
        yield CounterMetricFamily("bdn_cache_disk_write_errors", "Cache disk writes that failed (no space, I/O)",
                                  value=cache.disk.write_errors)
        yield CounterMetricFamily("bdn_uncached_fills", "Chunk fills streamed through memory (disk unwritable)",
                                  value=cache.fills.uncached)
        yield CounterMetricFamily("bdn_checksum_failures", "Objects whose bytes did not match their upstream digest",
                                  value=cache.checksum_failures)
        from_peers = sum(cache.peers.bytes_in.values()) if cache.peers is not None else 0
        yield CounterMetricFamily("bdn_upstream_bytes", "Bytes read from upstreams into the cache",
                                  value=cache.fills.filled_bytes - from_peers)
        yield CounterMetricFamily("bdn_fills", "Chunk fills started", value=cache.fills.started)
        yield CounterMetricFamily("bdn_coalesced_reads", "Chunk reads that joined a fill already in flight",
                                  value=cache.coalesced)
        upstream = CounterMetricFamily("bdn_upstream_requests", "Requests to upstreams and peers", labels=["kind"])
        upstream.add_metric(["metadata"], cache.metadata.fetches)
        upstream.add_metric(["chunk"], cache.fills.started)
        yield upstream
        yield CounterMetricFamily("bdn_upstream_retries", "Upstream requests retried or fills resumed after a failure",
                                  value=cache.retry.retries)
        yield GaugeMetricFamily("bdn_fills_in_flight", "Chunk fills in progress", value=cache.fills.in_flight)
        if cache.peers is None:
            return
        peers = cache.peers
        for name, doc, counts in (
                ("bdn_peer_hits", "Chunk reads a peer answered in full", peers.hits),
                ("bdn_peer_errors", "Peer reads that failed and fell back to the upstream", peers.errors),
                ("bdn_peer_received_bytes", "Bytes received from each peer", peers.bytes_in)):
            family = CounterMetricFamily(name, doc, labels=["peer"])
            for peer in peers.members:
                if peer != peers.self_url:
                    family.add_metric([peer], counts[peer])
            yield family
        sent = CounterMetricFamily("bdn_peer_sent_bytes", "Bytes sent on /_peer/, by asking address", labels=["peer"])
        for address, count in sorted(peers.bytes_out.items()):
            sent.add_metric([address], count)
        yield sent
        healthy = GaugeMetricFamily("bdn_peer_healthy", "1 while a peer is not backed off", labels=["peer"])
        for peer in peers.members:
            if peer != peers.self_url:
                healthy.add_metric([peer], 1.0 if peers.healthy(peer) else 0.0)
        yield healthy


def install(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CacheCollector(app))
    app[REGISTRY_KEY] = registry
    app[REQUESTS_KEY] = RequestMetrics(registry)
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
