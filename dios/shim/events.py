"""Bus events as wire messages, and the checks of a subscription request.

The same event reaches WebSocket clients as JSON and MessagePack-RPC clients as a
notification; binary members (frame pixels) are kept as bytes for MessagePack and
described (shape, dtype) without the pixels for JSON.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import PurePath
from typing import Any

import numpy as np

from dios.codes import INVALID_FIELD, DiosError
from dios.messages import Event, EventKind

#: The event topics clients subscribe to, by URI pattern: device events come from
#: ``DIOS/DEVICE/<Name>``; the services publish on ``DIOS/TASK/*`` (exposure progress,
#: image ready, selection) and ``DIOS/STUDY/*`` (study changes).
TOPICS = {
    "device": "DIOS/DEVICE/*",
    "task": "DIOS/TASK/*",
    "study": "DIOS/STUDY/*",
    "all": "DIOS/*",
}
MAX_PATTERN = 200
MAX_CLIENT_ID = 200

#: The wire form of one event (OpenAPI schema ``dios.Event``): the same fields on the
#: WebSocket (JSON, plus ``type: "event"``) and in MessagePack-RPC notifications.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One event. Kinds: state, param, progress, fault, exposure, image, "
                   "reply. A reply event is a device's reply to one command, whoever sent "
                   "it: name = reqName, value = the result code, data = the reply "
                   "(deviceUri, reqName, reqTransaction, reqClientID, code, description, "
                   "solution, result, data; late: true when its requester had already "
                   "been answered TIMEOUT), reqTransaction/reqClientID = the request's.",
    "required": ["uri", "kind", "name", "value", "data", "reqTransaction", "reqClientID",
                 "timestamp", "seq"],
    "properties": {
        "type": {"type": "string", "enum": ["event"], "description": "WebSocket only"},
        "subscription": {"type": "integer"},
        "uri": {"type": "string", "example": "DIOS/DEVICE/Generator"},
        "kind": {"type": "string", "enum": list(EventKind.ALL)},
        "name": {"type": "string"},
        "value": {"type": "string"},
        "data": {"type": "object", "additionalProperties": True},
        "reqTransaction": {"type": "string"},
        "reqClientID": {"type": "string"},
        "timestamp": {"type": "number", "description": "seconds since the epoch"},
        "seq": {"type": "integer", "description": "increasing across all events; the "
                "cursor of resume_from"},
        "sseq": {"type": "integer",
                 "description": "the subscription's own sequence: 1, 2, 3 ... over every "
                                "event that matched it; a gap means events were dropped"},
    },
}


def check_subscription(pattern: Any, kinds: Any) -> tuple[str, list[str] | None]:
    """Validate a subscription request; INVALID_FIELD otherwise."""
    if pattern is None:
        pattern = TOPICS["all"]
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise DiosError(INVALID_FIELD, "pattern must be a URI pattern such as DIOS/DEVICE/*",
                        field="pattern")
    pattern = TOPICS.get(pattern, pattern)
    if not pattern.startswith("DIOS/"):
        raise DiosError(INVALID_FIELD, "pattern must start with DIOS/", field="pattern")
    if kinds is None:
        return pattern, None
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise DiosError(INVALID_FIELD, "kinds must be an array of strings", field="kinds")
    unknown = [k for k in kinds if k not in EventKind.ALL]
    if unknown:
        raise DiosError(INVALID_FIELD, f"unknown kind(s) {unknown}; use {list(EventKind.ALL)}",
                        field="kinds")
    return pattern, kinds or None


def check_client(value: Any) -> str | None:
    """Validate a subscription's optional ``reqClientID`` filter; INVALID_FIELD otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_CLIENT_ID:
        raise DiosError(INVALID_FIELD, "reqClientID must be a non-empty string",
                        field="reqClientID")
    return value


def plain(value: Any, binary: bool, depth: int = 0) -> Any:
    """Make ``value`` encodable: JSON-safe (binary=False) or MessagePack-safe (True)."""
    if depth > 8:
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if binary else {"bytes": len(value)}
    if isinstance(value, np.ndarray):
        desc = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if binary:
            desc["data"] = np.ascontiguousarray(value).tobytes()
        return desc
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v, binary, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, binary, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if f.name == "truth":  # simulator ground truth stays server-side
                continue
            out[f.name] = plain(getattr(value, f.name), binary, depth + 1)
        return out
    return str(value)


def event_message(ev: Event, binary: bool = False, frames: bool = False) -> dict[str, Any]:
    """The wire form of one event. Frame pixels only when ``binary and frames``."""
    data = dict(ev.data)
    if not (binary and frames):
        for key, val in list(data.items()):
            if hasattr(val, "pixels"):
                data[key] = plain({k: v for k, v in vars(val).items() if k != "pixels"}
                                  | {"shape": list(val.pixels.shape)}, binary)
    return {
        "uri": ev.deviceUri, "kind": ev.kind, "name": ev.name, "value": ev.value,
        "data": plain(data, binary), "reqTransaction": ev.reqTransaction,
        "reqClientID": ev.reqClientID, "timestamp": ev.timestamp, "seq": ev.seq,
    }


