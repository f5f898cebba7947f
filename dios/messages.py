"""The messages on the bus: requests, replies and events.

Field names follow the reference console's device command (``deviceUri``, ``reqName``,
``reqParam``, ``reqTransaction``, ``reqClientID``) so that the shim passes them through
unchanged.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from dios.codes import SUCCESS, DiosError, ResultCode


@dataclass(frozen=True)
class Request:
    """A command for one device. ``reqParam`` is always a string, as on the wire."""

    deviceUri: str
    reqName: str
    reqParam: str = ""
    reqTransaction: str = ""
    reqClientID: str = ""

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> Request:
        """Build from a decoded JSON/MessagePack object, checking field types."""
        from dios.codes import BAD_PARAMETER

        if not isinstance(m, dict):
            raise DiosError(BAD_PARAMETER, "request must be an object")
        unknown = set(m) - {"deviceUri", "reqName", "reqParam", "reqTransaction", "reqClientID"}
        if unknown:
            raise DiosError(BAD_PARAMETER, f"unknown field(s): {', '.join(sorted(unknown))}")
        for key in ("deviceUri", "reqName"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise DiosError(BAD_PARAMETER, f"{key} is mandatory and must be a non-empty string")
        for key in ("reqParam", "reqTransaction", "reqClientID"):
            if not isinstance(m.get(key, ""), str):
                raise DiosError(BAD_PARAMETER, f"{key} must be a string")
        return cls(**{k: m.get(k, "") for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Reply:
    """The one reply to a request: same transaction and client id, a result code and text."""

    deviceUri: str
    reqName: str
    reqTransaction: str
    reqClientID: str
    code: str
    description: str
    solution: str
    result: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS.hex

    @classmethod
    def success(cls, req: Request, result: str = "", data: dict | None = None,
                language: str = "en") -> Reply:
        desc, sol = SUCCESS.text(language)
        return cls(req.deviceUri, req.reqName, req.reqTransaction, req.reqClientID,
                   SUCCESS.hex, desc, sol, result, data or {})

    @classmethod
    def failure(cls, req: Request, err: DiosError | ResultCode, language: str = "en") -> Reply:
        if isinstance(err, ResultCode):
            err = DiosError(err)
        return cls(req.deviceUri, req.reqName, req.reqTransaction, req.reqClientID,
                   err.code.hex, err.description(language), err.solution(language), "",
                   {k: v for k, v in err.data.items()})

    def raise_for_error(self) -> Reply:
        """Return self on success; otherwise raise the reply's own code as DiosError."""
        if self.ok:
            return self
        from dios.codes import INTERNAL

        try:
            code = ResultCode.from_hex(self.code)
        except (KeyError, ValueError):
            code = INTERNAL
        desc = code.text("en")[0]
        detail = self.description[len(desc) + 2:] if self.description.startswith(desc + ": ") else ""
        raise DiosError(code, f"{self.reqName} on {self.deviceUri}" + (f": {detail}" if detail else ""),
                        **self.data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deviceUri": self.deviceUri, "reqName": self.reqName,
            "reqTransaction": self.reqTransaction, "reqClientID": self.reqClientID,
            "code": self.code, "description": self.description, "solution": self.solution,
            "result": self.result, "data": self.data,
        }


class EventKind:
    """The kinds of events the bus publishes."""

    STATE = "state"          #: a device changed state (value = new status string)
    PARAM = "param"          #: a parameter changed (name = parameter, value = new value)
    PROGRESS = "progress"    #: a long task advanced (value = percent 0..100)
    FAULT = "fault"          #: a fault was raised (data: code, description)
    EXPOSURE = "exposure"    #: an exposure finished (data: actual technique, DAP)
    IMAGE = "image"          #: a frame was read out (data: frame, truth, meta)
    REPLY = "reply"          #: a reply to a request (for RPC listeners that mirror traffic)

    ALL = (STATE, PARAM, PROGRESS, FAULT, EXPOSURE, IMAGE, REPLY)


_seq = itertools.count(1)


def seq_mark() -> int:
    """A sequence number: every event made after this call has a larger ``seq``."""
    return next(_seq)


@dataclass(frozen=True)
class Event:
    """Something that happened on a device. Events caused by a request carry its ids."""

    deviceUri: str
    kind: str
    name: str
    value: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    reqTransaction: str = ""
    reqClientID: str = ""
    timestamp: float = field(default_factory=time.time)
    seq: int = field(default_factory=lambda: next(_seq))
