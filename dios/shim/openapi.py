"""The OpenAPI 3 document, generated from the operation table (never written by hand).

Every operation's 200 response is the success envelope whose ``data`` is a ``$ref`` to the
schema of its reply message (:mod:`dios.shim.schemas`; a file download is the file
itself), every other response the error envelope (``dios.ErrorEnvelope``). Request
bodies, path and query parameters have the schemas of the declared parameters. The
components hold every message, the RPC ones included (``dios.File``, ``dios.Event``,
``dios.rpc.*``); ``x-rpc-method`` and ``x-rpc-result`` name an operation's
MessagePack-RPC method and result, ``x-protocol-version`` the RPC protocol
(:mod:`dios.shim.contract`).
"""

from __future__ import annotations

import re
from typing import Any

from dios.codes import OUT_OF_RANGE, SUCCESS, all_codes
from dios.shim.api import (
    DEVICE_REPLY_EXAMPLE,
    DEVICE_REPLY_REFUSED_EXAMPLE,
    MESSAGE_SCHEMAS,
    reply_schema_name,
)
from dios.shim.contract import PROTOCOL_VERSION
from dios.shim.dispatch import REPLY_FLAG, Operation, Param
from dios.shim.envelope import EMPTY, type_url
from dios.shim.schemas import (
    BINARY_MEDIA_TYPES,
    ERROR_ENVELOPE,
    EVENT,
    param_schema,
    ref,
)

HEADERS = [
    {"name": "Language", "in": "header", "schema": {"type": "string", "enum": ["en", "zh"]},
     "description": "Language of descriptions, solutions and localized names"},
    {"name": "Product", "in": "header", "schema": {"type": "string", "enum": ["DROS", "VETDROS"]},
     "description": "Product whose catalog is served"},
    {"name": "Source", "in": "header",
     "schema": {"type": "string", "enum": ["Electron", "Browser", "Android"]},
     "description": "Client kind (recorded)"},
    {"name": "Request-Id", "in": "header",
     "schema": {"type": "string", "minLength": 1, "maxLength": 128},
     "description": "A retried request with the same id (same user, same operation, within "
                    "five minutes) gets the first request's outcome instead of running twice"},
]


def _schema(p: Param) -> dict[str, Any]:
    return param_schema(p, "http")


def _required(params: list[Param]) -> dict[str, Any]:
    """``{"required": [...]}``, or nothing when no field is required (OpenAPI 3.0 wants
    a non-empty list)."""
    names = [p.name for p in params if p.required]
    return {"required": names} if names else {}


def _error_envelope() -> dict[str, Any]:
    """The error envelope's schema, inline (to put another ``data`` in it)."""
    env = dict(MESSAGE_SCHEMAS[ERROR_ENVELOPE])
    env.pop("example", None)
    return env


def _with_data(data: dict[str, Any]) -> dict[str, Any]:
    """The success envelope around ``data``'s schema."""
    desc, _ = SUCCESS.text("en")
    return {"type": "object", "required": ["code", "description", "solution", "data"],
            "properties": {"code": {"type": "string", "enum": [SUCCESS.hex],
                                    "description": "the result code: success"},
                           "description": {"type": "string", "example": desc},
                           "solution": {"type": "string"}, "data": data}}


def _error_response(description: str = "error envelope (see x-result-codes); nothing "
                                       "was changed") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": ref(ERROR_ENVELOPE)}}}


#: A reply event as it arrives on the WebSocket (RPC: the same map in ``[2, "event", [...]]``).
REPLY_EVENT_EXAMPLE: dict[str, Any] = {
    "type": "event", "subscription": 1, "uri": DEVICE_REPLY_EXAMPLE["deviceUri"],
    "kind": "reply", "name": DEVICE_REPLY_EXAMPLE["reqName"],
    "value": DEVICE_REPLY_EXAMPLE["code"],
    "data": {k: v for k, v in DEVICE_REPLY_EXAMPLE.items() if k != "@type"},
    "reqTransaction": DEVICE_REPLY_EXAMPLE["reqTransaction"],
    "reqClientID": DEVICE_REPLY_EXAMPLE["reqClientID"],
    "timestamp": 1749545373.668, "seq": 4711,
}


def _full_reply_responses(op: Operation) -> dict[str, Any]:
    """200 and error responses of an operation with two reply shapes."""
    assert op.full_reply is not None
    desc, sol = SUCCESS.text("en")
    ok_schema = _with_data({"oneOf": [ref(op.reply or EMPTY), ref(op.full_reply)]})
    ok_examples = {
        "seed": {"summary": "without the flag: as the seed",
                 "value": {"code": SUCCESS.hex, "description": desc, "solution": sol,
                           "data": {"@type": type_url(EMPTY), "value": {}}}},
    }
    err_examples: dict[str, Any] = {}
    if op.full_reply == "dr.task.DeviceReply":
        ok_examples["reply"] = {
            "summary": f"?{REPLY_FLAG}=true, SetParam_MA 130: the generator accepted 125",
            "value": {"code": SUCCESS.hex, "description": desc, "solution": sol,
                      "data": DEVICE_REPLY_EXAMPLE}}
        refused = DEVICE_REPLY_REFUSED_EXAMPLE
        err_examples = {
            "seed": {"summary": "without the flag: the detail fields",
                     "value": {"code": OUT_OF_RANGE.hex,
                               "description": "Parameter out of range: SetParam_KV on "
                                              "DIOS/DEVICE/Generator: KV 200 outside 40..150",
                               "solution": refused["solution"], "data": refused["data"]}},
            "reply": {"summary": f"?{REPLY_FLAG}=true, SetParam_KV 200: refused, kV unchanged",
                      "value": {"code": OUT_OF_RANGE.hex,
                                "description": "Parameter out of range: SetParam_KV on "
                                               "DIOS/DEVICE/Generator: KV 200 outside 40..150",
                                "solution": refused["solution"], "data": refused}},
        }
    ok = {"description": f"success: data is {op.reply} without the query flag "
                         f"{REPLY_FLAG}, {op.full_reply} with {REPLY_FLAG}=true (or 1)",
          "content": {"application/json": {"schema": ok_schema, "examples": ok_examples}}}
    err_content: dict[str, Any] = {
        "schema": {**_error_envelope(), "properties": {
            **_error_envelope()["properties"],
            "data": {"anyOf": [ref("dios.ErrorDetail"), ref(op.full_reply)]}}}}
    if err_examples:
        err_content["examples"] = err_examples
    err = {"description": f"error envelope (see x-result-codes); a refusal of the device "
                          f"carries {op.full_reply} as data with {REPLY_FLAG}=true",
           "content": {"application/json": err_content}}
    return {"200": ok, "default": err}


def openapi_document(operations: list[Operation], prefix: str, title: str,
                     version: str) -> dict[str, Any]:
    """OpenAPI 3.0.3 for ``operations`` under ``prefix``."""
    paths: dict[str, Any] = {}
    for op in operations:
        path = re.sub(r"{(\w+):\w+}", r"{\1}", op.path)
        item: dict[str, Any] = {
            "operationId": op.name, "summary": op.summary or op.name,
            "tags": [op.tag or op.name.split(".")[0]],
            "x-rpc-method": op.name,
            "x-permission": op.permission or "public",
            "parameters": list(HEADERS),
        }
        for name in re.findall(r"{(\w+)}", path):
            p = next((q for q in op.params if q.name == name), Param(name, where="path"))
            item["parameters"].append({"name": name, "in": "path", "required": True,
                                       "schema": _schema(p)})
        for p in op.params:
            if p.where == "query":
                item["parameters"].append({"name": p.name, "in": "query",
                                           "required": p.required, "schema": _schema(p)})
        body = [p for p in op.params if p.where == "body"]
        if op.body == "upload":
            item["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", **_required(body),
                "properties": {p.name: _schema(p) for p in body}}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}}
        elif op.body == "json-array" and body:
            item["requestBody"] = {"required": body[0].required,
                                   "content": {"application/json": {"schema": _schema(body[0])}}}
        elif body or op.open_body:
            item["requestBody"] = {"required": any(p.required for p in body), "content": {
                "application/json": {"schema": {
                    "type": "object", **_required(body),
                    "properties": {p.name: _schema(p) for p in body},
                    "additionalProperties": op.open_body}}}}
        if op.permission is not None:
            item["security"] = [{"bearer": []}]
        if op.binary_reply:
            ok = {"description": "the file", "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in BINARY_MEDIA_TYPES.get(op.name, ("application/octet-stream",))}}
        else:
            name = reply_schema_name(op, "http")
            assert name is not None
            ok = {"description": f"success: data is {name}",
                  "content": {"application/json": {"schema": _with_data(ref(name))}}}
        item["responses"] = {"200": ok, "default": _error_response()}
        if op.full_reply is not None:
            item["responses"] = _full_reply_responses(op)
        item["x-rpc-result"] = ref(str(reply_schema_name(op, "rpc")))
        paths.setdefault(prefix + path, {})[op.method.lower()] = item
    paths[prefix + "/events"] = {"get": {
        "operationId": "events", "tags": ["events"],
        "summary": "WebSocket event stream (upgrade); see the module documentation of dios.shim.ws",
        "description": (
            "Authenticate (?token=, Authorization header or a first message {\"type\": "
            "\"auth\", \"token\"}; needs task.read), then send {\"type\": \"subscribe\", "
            "\"pattern\": \"device\"|\"task\"|\"study\"|\"all\"|\"DIOS/DEVICE/*\", "
            "\"kinds\": [...], \"reqClientID\": \"...\"} (kinds and reqClientID optional "
            "filters) and receive {\"type\": \"event\", ...} messages (schema dios.Event). "
            "Reply events (kind \"reply\"): every reply of a device to a command, from any "
            "client: name = reqName, value = the result code, data = the reply (the fields "
            "of dr.task.DeviceReply without @type, plus late: true for the outcome of a "
            "command whose requester had already been answered TIMEOUT), reqTransaction "
            "and reqClientID = the request's. Subscribe with kinds [\"reply\"] and your "
            "reqClientID to receive the replies to your own commands."),
        "parameters": [{"name": "token", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {"101": {"description": "switching protocols; then event messages",
                              "content": {"application/json": {
                                  "schema": ref(EVENT),
                                  "examples": {"reply": {
                                      "summary": "the reply event of SetParam_MA 130",
                                      "value": REPLY_EVENT_EXAMPLE}}}}}},
        "x-event-schema": ref(EVENT)}}
    schemas: dict[str, Any] = {name: schema for name, schema in MESSAGE_SCHEMAS.items()}
    schemas[EVENT] = {**schemas[EVENT], "example": REPLY_EVENT_EXAMPLE}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version,
                 "description": "The console API over HTTP JSON. The same operations are "
                                "MessagePack-RPC methods (x-rpc-method); rpc.describe "
                                "returns their catalogue, rpc.hello the handshake.",
                 "x-protocol-version": PROTOCOL_VERSION},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "JWT"}},
                       "schemas": schemas},
        "x-result-codes": [{"code": c.hex, "name": c.name, "description": c.description,
                            "solution": c.solution} for c in all_codes()],
    }
