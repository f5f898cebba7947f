"""The RPC contract: protocol version, handshake and the method catalogue.

A client written from this contract (C#, C++, TypeScript ...) learns three things:

* the protocol version, ``major.minor`` (:data:`PROTOCOL_VERSION`): a client is
  compatible when its major equals the server's and its minor is not above the server's.
  A minor version only adds (methods, optional arguments, reply fields, notifications);
  a major version may change or remove. ``rpc.hello [{"client": "console/2.3",
  "protocol": "1.1"}]`` answers with :func:`handshake`: the server's name and package
  version, its protocol, whether the client is compatible and why not, and the optional
  features the server has;
* every method (``rpc.describe`` answers with :func:`catalogue`): its summary, the
  permission it needs, the JSON schema of its arguments (``params[0]``), the JSON schema
  of its result (a ``$ref`` into ``schemas``) and whether the result is a file
  (``dios.File``, content as MessagePack bin). The operations of the HTTP API and the
  connection-level methods (:data:`CONNECTION_METHODS`) alike;
* the notifications the server sends (:data:`NOTIFICATIONS`): events with their
  per-subscription sequence, drop notices, the end of a session, fatal errors.

Everything here is data and its translation to JSON Schema: no service is called.
``python -m dios.shim.contract`` prints the catalogue (JSON) without a running server,
for generating client types offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Iterable
from typing import Any

from dios.codes import INVALID_FIELD, DiosError
from dios.shim.api import operations, reply_schema_name
from dios.shim.dispatch import REPLY_FLAG, Operation
from dios.shim.envelope import type_url
from dios.shim.events import EVENT_SCHEMA, TOPICS
from dios.shim.schemas import MESSAGE_SCHEMAS, RPC_ERROR, json_schema, param_schema

__all__ = ["CONNECTION_METHODS", "FEATURES", "NOTIFICATIONS", "PROTOCOL_VERSION",
           "SERVER_NAME", "catalogue", "compatibility", "handshake", "server_version"]

#: The protocol this server speaks, ``major.minor``.
PROTOCOL_VERSION = "1.1"
#: The server's name in the handshake.
SERVER_NAME = "dios-engine"
#: Optional behaviours a client may rely on: ``resume`` (events.subscribe resume_from),
#: ``drop-notices`` (events.dropped and the per-subscription ``sseq``), ``request-id``
#: (``meta.requestId`` makes a retried call return the first call's outcome),
#: ``binary-files`` (files as MessagePack bin in a ``dios.File``).
FEATURES: tuple[str, ...] = ("resume", "drop-notices", "request-id", "binary-files")

_PROTOCOL = re.compile(r"(\d{1,6})\.(\d{1,6})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CLIENT = 200
#: Where the catalogue's ``$ref`` point.
SCHEMAS_REF = "#/schemas/"


def server_version() -> str:
    """The installed ``dios-engine`` package version (``0+unknown`` when not installed)."""
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _parse(protocol: Any) -> tuple[int, int]:
    """``"1.1"`` -> ``(1, 1)``; INVALID_FIELD for anything that is not major.minor."""
    match = _PROTOCOL.fullmatch(protocol) if isinstance(protocol, str) else None
    if match is None:
        raise DiosError(INVALID_FIELD, "protocol must be major.minor, for example "
                        f"{PROTOCOL_VERSION}", field="protocol")
    return int(match.group(1)), int(match.group(2))


def compatibility(protocol: str | None) -> tuple[bool, str]:
    """Whether a client speaking ``protocol`` can talk to this server, and why not.

    Compatible when the majors are equal and the client's minor is not above the
    server's; a client that names no protocol is taken as compatible.
    """
    if protocol is None:
        return True, ""
    major, minor = _parse(protocol)
    ours_major, ours_minor = _parse(PROTOCOL_VERSION)
    if major != ours_major:
        return False, (f"the client speaks protocol {protocol} and this server "
                       f"{PROTOCOL_VERSION}: the major versions differ")
    if minor > ours_minor:
        return False, (f"the client speaks protocol {protocol}, newer than this server's "
                       f"{PROTOCOL_VERSION}: update the server, or have the client speak "
                       f"{ours_major}.{ours_minor}")
    return True, ""


def handshake(args: dict[str, Any]) -> dict[str, Any]:
    """The reply of ``rpc.hello``.

    Parameters
    ----------
    args
        ``{"client": "<name/version>", "protocol": "<major.minor>"}``, both optional.

    Returns
    -------
    dict
        ``dios.rpc.Hello``: ``server``, ``version``, ``protocol``, ``compatible``,
        ``reason`` (empty when compatible) and ``features``.

    Raises
    ------
    DiosError
        ``INVALID_FIELD`` (naming the field) for arguments that are not an object, a
        client name that is not a short printable string, or a protocol that is not
        ``major.minor``.
    """
    if not isinstance(args, dict):
        raise DiosError(INVALID_FIELD, "parameters must be an object")
    client = args.get("client")
    if client is not None and (not isinstance(client, str) or len(client) > MAX_CLIENT
                               or _CONTROL.search(client)):
        raise DiosError(INVALID_FIELD, f"client must be a printable string of at most "
                        f"{MAX_CLIENT} characters", field="client")
    protocol = args.get("protocol")
    if protocol is not None:
        _parse(protocol)
    compatible, reason = compatibility(protocol)
    return {"@type": type_url("dios.rpc.Hello"), "server": SERVER_NAME,
            "version": server_version(), "protocol": PROTOCOL_VERSION,
            "compatible": compatible, "reason": reason, "features": list(FEATURES)}


# --- the connection-level methods and the notifications --------------------------------------
def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS_REF + name}


def _args(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


_KINDS = list(EVENT_SCHEMA["properties"]["kind"]["enum"])

#: The RPC methods of the connection itself (not operations of the HTTP API), in the
#: catalogue's entry shape.
CONNECTION_METHODS: dict[str, dict[str, Any]] = {
    "session.authenticate": {
        "summary": "Authenticate the connection with a token (from auth.login or the "
                   "guest token of resource.software_info); later calls need no token",
        "permission": "public",
        "params": _args({
            "token": {"type": "string", "description": "a bearer token"},
            "language": {"type": "string", "enum": ["en", "zh"],
                         "description": "the connection's default language"},
            "product": {"type": "string", "enum": ["DROS", "VETDROS"]},
            "source": {"type": "string", "description": "client kind (recorded)"},
        }, ["token"]),
        "result": _ref("dios.rpc.Session"), "binary": False},
    "events.subscribe": {
        "summary": "Subscribe to events; they arrive as event notifications. Raw frame "
                   "pixels need the event.images permission",
        "permission": "task.read",
        "params": _args({
            "pattern": {"type": "string", "maxLength": 200,
                        "description": "a URI pattern (DIOS/DEVICE/*, DIOS/STUDY/*) or a "
                                       f"topic: {', '.join(TOPICS)} (default all)",
                        "examples": ["DIOS/DEVICE/*", "device"]},
            "kinds": {"type": "array", "items": {"type": "string", "enum": _KINDS},
                      "description": "only these kinds of event"},
            "reqClientID": {"type": "string", "minLength": 1, "maxLength": 200,
                            "description": "only events of this client's requests"},
            "frames": {"type": "boolean",
                       "description": "raw frame pixels as bin (needs event.images)"},
            "resume_from": {"type": "integer", "minimum": 0,
                            "description": "the last global seq the client saw: events "
                                           "after it still retained are replayed first"},
        }),
        "result": _ref("dios.rpc.Subscription"), "binary": False},
    "events.unsubscribe": {
        "summary": "End a subscription of this connection",
        "permission": "public",
        "params": _args({"subscription": {"type": "integer", "minimum": 1}},
                        ["subscription"]),
        "result": _ref("dios.Ack"), "binary": False},
    "rpc.methods": {
        "summary": "The method names (describe: true adds summaries, parameters and "
                   "result types)",
        "permission": "public",
        "params": _args({"describe": {"type": "boolean"}}),
        "result": _ref("dios.rpc.Methods"), "binary": False},
    "rpc.describe": {
        "summary": "This catalogue: every method with its argument and result schemas",
        "permission": "public",
        "params": _args({}),
        "result": _ref("dios.rpc.Catalogue"), "binary": False},
    "rpc.hello": {
        "summary": "Handshake: server and protocol versions, the client's compatibility, "
                   "features",
        "permission": "public",
        "params": _args({
            "client": {"type": "string", "maxLength": MAX_CLIENT,
                       "description": "the client's name/version", "examples": ["console/2.3"]},
            "protocol": {"type": "string", "pattern": r"^\d+\.\d+$",
                         "description": "the protocol the client speaks, major.minor",
                         "examples": [PROTOCOL_VERSION]},
        }),
        "result": _ref("dios.rpc.Hello"), "binary": False},
}

#: Server-to-client notifications ``[2, method, params]``: the schemas of ``params``.
NOTIFICATIONS: dict[str, dict[str, Any]] = {
    "event": {
        "summary": "An event of a subscription, with subscription (its id) and sseq (the "
                   "subscription's sequence: 1, 2, 3 ... over every event that matched "
                   "it; a gap means events were dropped)",
        "params": [_ref("dios.Event")]},
    "events.dropped": {
        "summary": "Events of a subscription were dropped because the client read too "
                   "slowly; sent before the subscription's next event",
        "params": [_ref("dios.rpc.Dropped")]},
    "events.closed": {
        "summary": "The server ended a subscription (its principal's role may no longer "
                   "receive what it asked for, e.g. frames after a role change)",
        "params": [{"type": "object", "required": ["subscription", "code", "description",
                                                   "solution"],
                    "properties": {"subscription": {"type": "integer"},
                                   "code": {"type": "string"},
                                   "description": {"type": "string"},
                                   "solution": {"type": "string"}}}]},
    "session.expired": {
        "summary": "The connection's token expired: authenticate again",
        "params": [_ref("dios.rpc.SessionEnded")]},
    "session.revoked": {
        "summary": "The session was revoked (password changed, user disabled or deleted): "
                   "authenticate again",
        "params": [_ref("dios.rpc.SessionEnded")]},
    "error": {
        "summary": "A message that was no valid request, or why the server closes the "
                   "connection",
        "params": [_ref(RPC_ERROR)]},
}

#: ``params[1]`` of every request: the HTTP headers' equivalents and the request id.
META = _args({
    "token": {"type": "string", "description": "a token for this call only"},
    "language": {"type": "string", "enum": ["en", "zh"]},
    "product": {"type": "string", "enum": ["DROS", "VETDROS"]},
    "source": {"type": "string", "description": "client kind (recorded)"},
    "requestId": {"type": "string", "maxLength": 128,
                  "description": "a retried call with the same id gets the first call's "
                                 "outcome"},
})


def _method(op: Operation) -> dict[str, Any]:
    """The catalogue entry of one operation."""
    params = [p for p in op.params if not (op.full_reply and p.name == REPLY_FLAG)]
    required = [p.name for p in params if p.required]
    args: dict[str, Any] = {"type": "object",
                            "properties": {p.name: param_schema(p, "rpc") for p in params},
                            "additionalProperties": op.open_body}
    if required:
        args["required"] = required
    return {"summary": op.summary or op.name, "permission": op.permission or "public",
            "params": json_schema(args, SCHEMAS_REF),
            "result": _ref(str(reply_schema_name(op, "rpc"))), "binary": op.binary_reply}


def catalogue(operations: Iterable[Operation],
              connection_methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reply of ``rpc.describe``: every method and notification, with JSON schemas.

    Parameters
    ----------
    operations
        The operations the server exposes (:func:`dios.shim.api.operations`).
    connection_methods
        The connection-level methods, in the entry shape (:data:`CONNECTION_METHODS`).

    Returns
    -------
    dict
        ``dios.rpc.Catalogue``: ``protocol``, ``version``, ``methods`` (name -> summary,
        permission, params, result, binary), ``notifications``, ``meta`` (the schema of
        ``params[1]``), ``error`` (the schema of a response's error member) and
        ``schemas`` (the messages the ``$ref`` point to, as ``#/schemas/<name>``).
    """
    methods: dict[str, Any] = {op.name: _method(op) for op in operations}
    for name, entry in connection_methods.items():
        methods[name] = json_schema(entry, SCHEMAS_REF)
    return {"@type": type_url("dios.rpc.Catalogue"), "protocol": PROTOCOL_VERSION,
            "version": server_version(), "methods": dict(sorted(methods.items())),
            "notifications": json_schema(NOTIFICATIONS, SCHEMAS_REF),
            "meta": json_schema(META, SCHEMAS_REF), "error": _ref(RPC_ERROR),
            "schemas": {name: json_schema(schema, SCHEMAS_REF)
                        for name, schema in MESSAGE_SCHEMAS.items()}}


def main() -> None:
    """Print the catalogue of this engine's operations as JSON."""
    print(json.dumps(catalogue(operations(), CONNECTION_METHODS), indent=2,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
