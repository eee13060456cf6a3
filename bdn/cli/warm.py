"""`bdn warm URL... --node http://NODE:8080`: start a preheat on a node and follow it with a progress bar.

Exits 0 when every object is cached, 1 when any failed (each error is printed), 2 when the node
cannot be asked.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from tqdm import tqdm

POLL_SECONDS = 0.5


def _call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def warm(node: str, urls: list[str], pin: bool) -> int:
    node = node.rstrip("/")
    try:
        job = _call(f"{node}/v1/warm", {"urls": urls, "pin": pin})
        with tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="warming", file=sys.stderr) as bar:
            while True:
                bar.total = job["bytes"]["total"]
                bar.n = job["bytes"]["done"]
                bar.set_postfix_str(f"{job['objects']['done']}/{job['objects']['total']} objects")
                bar.refresh()
                if job["state"] != "running":
                    break
                time.sleep(POLL_SECONDS)
                job = _call(f"{node}/v1/warm/{job['id']}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"bdn warm: cannot reach {node}: {exc}", file=sys.stderr)
        return 2
    for error in job["errors"]:
        print(f"bdn warm: {error}", file=sys.stderr)
    print(f"{job['objects']['done']} objects, {job['bytes']['done']} bytes, {len(job['errors'])} errors")
    return 1 if job["errors"] else 0
