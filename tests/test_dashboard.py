"""deploy/grafana/bdn.json: every query names a metric that a running bdn really exports."""

from __future__ import annotations

import json
import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, StartBdn, free_port
from tests.origin import Origin

METRIC = re.compile(r"\bbdn_[a-z_]+\b")


async def test_every_dashboard_query_names_an_exported_metric(start_bdn: StartBdn, origin: Origin,
                                                              http: aiohttp.ClientSession) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "bdn.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in METRIC.findall(target["expr"])}
    assert used, "the dashboard queries bdn's metrics"
    port = free_port()  # a node with a (silent) peer, so the peer families are exported too
    node = await start_bdn({"web": {"type": "http", "base_url": origin.url}}, port=port,
                           peers={"static": [f"http://127.0.0.1:{free_port()}"], "self": f"127.0.0.1:{port}"})
    origin.put("x.bin", b"x" * 10)
    async with http.get(f"{node.url}/web/x.bin") as response:
        assert await response.read() == b"x" * 10
    async with http.get(f"{node.url}/metrics") as response:
        exported = {sample.name for family in text_string_to_metric_families(await response.text())
                    for sample in family.samples}
    assert used - exported == set()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("hit ratio", "upstream", "first byte", "fills in flight", "budget", "peer health"):
        assert topic in titles
