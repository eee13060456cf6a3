"""What crosses between nodes on `/_peer/`: the object and version a request names, the version an answer has."""

from __future__ import annotations

import base64
import json
from typing import Any

from bdn.objects import ObjectInfo, ObjectRef

OBJECT_HEADER = "X-Bdn-Object"  # the asking node's ObjectRef and ObjectInfo, base64 JSON
VERSION_HEADER = "X-Bdn-Version"  # the owner's version id of what it sends


def encode_object(ref: ObjectRef, info: ObjectInfo) -> str:
    payload = {"source": ref.source, "path": ref.path, "info": info.to_json()}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def decode_object(header: str) -> tuple[ObjectRef, ObjectInfo]:
    payload: dict[str, Any] = json.loads(base64.b64decode(header, validate=True))
    return ObjectRef(payload["source"], payload["path"]), ObjectInfo.from_json(payload["info"])
