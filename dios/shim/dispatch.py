"""Operations and their dispatch: the part of the shim both transports share.

An :class:`Operation` names one service method three ways: its MessagePack-RPC method
(``study.register``), its HTTP route (``POST /api/v1/study``) and the permission the
caller's role needs (a key of the auth service's permission table). :func:`dispatch`
validates the declared parameters, authenticates, authorises, calls the handler and
returns the reply message (tagged with its ``@type``) or a :class:`~dios.shim.envelope.Blob`.

An operation may have two reply shapes: ``reply``, the reference console's (for the device
command ``google.protobuf.Empty``), and ``full_reply``, the message the handler actually
returns (``dr.task.DeviceReply``). The caller gets the full one when it asks for it: over
HTTP with the query flag ``?reply=true`` (or ``1``; :data:`REPLY_FLAG`), always over
MessagePack-RPC (the engine's own protocol). A refusal that carries its reply message
(:class:`~dios.shim.envelope.ReplyFailure`) then shows that message as the error
envelope's ``data``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dios.codes import (
    INVALID_FIELD,
    MALFORMED_REQUEST,
    MISSING_FIELD,
    NOT_AUTHENTICATED,
    DiosError,
)
from dios.shim.envelope import Blob, ReplyFailure, typed

if TYPE_CHECKING:
    from dios.shim.api import Services


#: The query flag asking for an operation's ``full_reply`` over HTTP (``true``/``1``).
REPLY_FLAG = "reply"

#: JSON-schema-ish parameter types understood by the validator and the OpenAPI writer.
PARAM_TYPES = ("string", "integer", "number", "boolean", "boolish", "object", "array",
               "string[]", "object[]", "binary", "any")


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``where``: ``path``, ``query`` or ``body``."""

    name: str
    type: str = "string"
    required: bool = False
    where: str = "body"
    description: str = ""
    example: Any = None
    max_length: int = 4096

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"unknown param type {self.type}")


@dataclass
class Context:
    """Who is calling and how: filled by the transport, read by handlers."""

    services: Services
    token: str = ""
    language: str = "en"
    product: str = ""
    source: str = ""
    transport: str = "http"
    claims: dict[str, Any] | None = None
    peer: str = ""

    @property
    def user(self) -> str:
        return str((self.claims or {}).get("name", ""))


Handler = Callable[[Context, dict[str, Any]], Any]


@dataclass(frozen=True)
class Operation:
    """One service method as the shim exposes it."""

    name: str
    method: str
    path: str
    handler: Handler
    permission: str | None
    reply: str | None = None
    params: tuple[Param, ...] = ()
    summary: str = ""
    tag: str = ""
    #: body kinds: ``json`` (an object), ``json-array`` (a bare array bound to the first
    #: body param), ``upload`` (multipart form or raw bytes), ``none``
    body: str = "json"
    binary_reply: bool = False
    #: extra body fields are passed through to the handler (services validate them)
    open_body: bool = False
    #: the body's fields are documented here but checked by the service itself (one rule
    #: per field in one place); only path parameters are checked by the shim
    service_validates: bool = False
    examples: dict[str, Any] = field(default_factory=dict)
    #: the reply message sent instead of ``reply`` when the caller asks for it (HTTP query
    #: flag ``REPLY_FLAG``, which the operation declares) and always over MessagePack-RPC;
    #: the handler returns this message in every case
    full_reply: str | None = None

    def result_type(self, transport: str) -> str | None:
        """The reply type a caller on ``transport`` gets without asking (RPC: the full one)."""
        return self.full_reply if transport == "rpc" and self.full_reply else self.reply


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "string[]": (list,), "object[]": (list,),
    "binary": (bytes, bytearray, memoryview),
}

#: what a parameter of each type must be, in words
_EXPECTED = {
    "string": "a string", "integer": "an integer", "number": "a number",
    "boolean": "a boolean", "object": "an object", "array": "an array",
    "string[]": "an array of strings", "object[]": "an array of objects",
    "binary": "binary data",
}

#: integers are signed 64-bit, as the database and the MessagePack-RPC clients hold them
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def json_type(value: Any) -> str:
    """The JSON (or MessagePack) name of ``value``'s type: object, array, string, number,
    boolean, null, binary."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "binary"
    return "an unsupported value"


def text_problem(text: str) -> str:
    """What makes ``text`` unfit for the services ("" when nothing): a NUL character, or
    an unpaired surrogate (``"\\ud800"`` in JSON), which is not valid Unicode."""
    if text.isascii() and "\x00" not in text:
        return ""
    bad = _BAD_TEXT.search(text)
    if bad is None:
        return ""
    if bad.group() == "\x00":
        return "contains a NUL character"
    return "is not valid Unicode text (an unpaired surrogate)"


#: how deep arrays and objects may nest in what a client sends
MAX_DEPTH = 32


def check_values(value: Any, root: str = "", max_depth: int = MAX_DEPTH) -> None:
    """Refuse what JSON or MessagePack may carry but no service should see: nesting deeper
    than ``max_depth`` (MALFORMED_REQUEST), text that is not valid Unicode (an unpaired
    surrogate such as ``"\\ud800"``) or holds a NUL character, integers beyond 64 bits,
    NaN and infinities (INVALID_FIELD naming the field: ``views[0].view_id``; ``root``
    names ``value`` itself when it is bound to one parameter)."""
    stack: list[tuple[Any, str, int]] = [(value, root, 1)]
    while stack:
        item, where, depth = stack.pop()
        name = where or "the request"
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise DiosError(INVALID_FIELD, f"{name} {problem}", field=name)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise DiosError(INVALID_FIELD, f"{name} is outside the 64-bit integer range",
                                field=name)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise DiosError(INVALID_FIELD, f"{name} must be a finite number", field=name)
        elif isinstance(item, (dict, list, tuple)):
            if depth > max_depth:
                raise DiosError(MALFORMED_REQUEST, f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, sub in item.items():
                    if isinstance(key, str):
                        problem = text_problem(key)
                        if problem:
                            raise DiosError(INVALID_FIELD, f"a field name in {name} {problem}",
                                            field=where)
                    stack.append((sub, f"{where}.{key}" if where else str(key), depth + 1))
            else:
                stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))


def _integer_in_range(p: Param, value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise DiosError(INVALID_FIELD, f"{p.name} is outside the 64-bit integer range",
                        field=p.name)
    return value


def check_param(p: Param, value: Any) -> Any:
    """Validate (and for path/query strings, convert) one value; INVALID_FIELD if wrong."""
    if p.type == "any":
        return value
    if p.type == "boolish":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise DiosError(INVALID_FIELD, f"{p.name} must be a boolean", field=p.name)
    if p.where in ("path", "query") and isinstance(value, str):
        if p.type == "integer":
            text = value.strip()
            digits = text[1:] if text[:1] in ("+", "-") else text
            if not (digits.isascii() and digits.isdigit()):
                raise DiosError(INVALID_FIELD, f"{p.name} must be an integer", field=p.name)
            if len(digits.lstrip("0")) > 19:
                raise DiosError(INVALID_FIELD, f"{p.name} is outside the 64-bit integer range",
                                field=p.name)
            return _integer_in_range(p, int(text))
        if p.type == "boolean":
            if value.lower() not in ("true", "false", "1", "0"):
                raise DiosError(INVALID_FIELD, f"{p.name} must be true or false", field=p.name)
            return value.lower() in ("true", "1")
    want = _JSON_TYPES[p.type]
    if isinstance(value, bool) and bool not in want:
        raise DiosError(INVALID_FIELD, f"{p.name} must be {_EXPECTED[p.type]}, got boolean",
                        field=p.name)
    if not isinstance(value, want):
        raise DiosError(INVALID_FIELD, f"{p.name} must be {_EXPECTED[p.type]}, "
                                       f"got {json_type(value)}", field=p.name)
    if isinstance(value, int) and not isinstance(value, bool):
        _integer_in_range(p, value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise DiosError(INVALID_FIELD, f"{p.name} must be a finite number", field=p.name)
    if p.type == "string":
        if len(value) > p.max_length:
            raise DiosError(INVALID_FIELD, f"{p.name} longer than {p.max_length}", field=p.name)
        problem = text_problem(value)
        if problem:
            raise DiosError(INVALID_FIELD, f"{p.name} {problem}", field=p.name)
    if p.type == "string[]":
        if not all(isinstance(v, str) for v in value):
            raise DiosError(INVALID_FIELD, f"{p.name} must be an array of strings", field=p.name)
        for v in value:
            problem = text_problem(v)
            if problem:
                raise DiosError(INVALID_FIELD, f"{p.name} {problem}", field=p.name)
    if p.type == "object[]" and not all(isinstance(v, dict) for v in value):
        raise DiosError(INVALID_FIELD, f"{p.name} must be an array of objects", field=p.name)
    return value


def validate(op: Operation, args: dict[str, Any]) -> dict[str, Any]:
    """Check mandatory fields and types of ``args`` against ``op.params``."""
    if not isinstance(args, dict):
        raise DiosError(INVALID_FIELD, "parameters must be an object")
    out: dict[str, Any] = dict(args) if (op.open_body or op.service_validates) else {}
    for p in op.params:
        if op.service_validates and p.where != "path":
            continue
        if p.name not in args or args[p.name] is None:
            if p.required:
                raise DiosError(MISSING_FIELD, p.name, field=p.name)
            continue
        if isinstance(args[p.name], str) and args[p.name] == "" and p.required and p.type == "string":
            raise DiosError(MISSING_FIELD, f"{p.name} is empty", field=p.name)
        out[p.name] = check_param(p, args[p.name])
    return out


def authenticate(ctx: Context) -> dict[str, Any]:
    """Verify the caller's token with the auth service; return its claims."""
    if not ctx.token:
        raise DiosError(NOT_AUTHENTICATED)
    claims = ctx.services.auth.verify(ctx.token)
    ctx.claims = claims
    return claims


def check_access(op: Operation, ctx: Context) -> None:
    """Authenticate the caller and check ``op``'s permission (nothing for public ops)."""
    if op.permission is not None:
        claims = authenticate(ctx)
        ctx.services.auth.authorize(claims, op.permission)


def dispatch(op: Operation, ctx: Context, args: dict[str, Any], *,
             access_checked: bool = False) -> Any:
    """Run ``op`` for ``ctx`` with ``args``; return the typed reply data or a Blob.

    Order: authenticate, authorise, validate, call. Raises DiosError for every refusal.
    """
    if not access_checked:
        check_access(op, ctx)
    clean = validate(op, args)
    full = wants_full_reply(op, ctx, clean)
    try:
        result = op.handler(ctx, clean)
    except ReplyFailure as err:
        if full:
            err.shown = typed(op.full_reply, err.message)
        raise
    if op.binary_reply or isinstance(result, Blob):
        return result
    return typed(op.full_reply if full else op.reply, result)


def wants_full_reply(op: Operation, ctx: Context, clean: dict[str, Any]) -> bool:
    """Whether the caller gets ``op.full_reply``: over RPC always, over HTTP with the
    query flag. Takes the flag out of ``clean`` (it is not the handler's argument)."""
    if op.full_reply is None:
        return False
    flag = bool(clean.pop(REPLY_FLAG, False))
    return flag or ctx.transport == "rpc"
