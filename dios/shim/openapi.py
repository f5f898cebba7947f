"""The OpenAPI 3 document, generated from the operation table (never written by hand)."""

from __future__ import annotations

import re
from typing import Any

from dios.codes import all_codes
from dios.shim.dispatch import Operation, Param

_SCHEMA = {
    "string": {"type": "string"}, "integer": {"type": "integer", "format": "int32"},
    "number": {"type": "number"}, "boolean": {"type": "boolean"},
    "boolish": {"type": "boolean", "description": "true/false, or the strings \"true\"/\"false\""},
    "object": {"type": "object"}, "array": {"type": "array", "items": {}},
    "string[]": {"type": "array", "items": {"type": "string"}},
    "object[]": {"type": "array", "items": {"type": "object"}},
    "binary": {"type": "string", "format": "binary"}, "any": {},
}

HEADERS = [
    {"name": "Language", "in": "header", "schema": {"type": "string", "enum": ["en", "zh"]},
     "description": "Language of descriptions, solutions and localized names"},
    {"name": "Product", "in": "header", "schema": {"type": "string", "enum": ["DROS", "VETDROS"]},
     "description": "Product whose catalog is served"},
    {"name": "Source", "in": "header",
     "schema": {"type": "string", "enum": ["Electron", "Browser", "Android"]},
     "description": "Client kind (recorded)"},
]


def _schema(p: Param) -> dict[str, Any]:
    s = dict(_SCHEMA[p.type])
    if p.description:
        s["description"] = p.description
    if p.example is not None:
        s["example"] = p.example
    return s


def _envelope(type_name: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "object"}
    if type_name:
        data["properties"] = {"@type": {"type": "string",
                                        "example": f"type.googleapis.com/{type_name}"}}
    return {"type": "object", "required": ["code", "description", "solution", "data"],
            "properties": {"code": {"type": "string", "example": "0x000000"},
                           "description": {"type": "string"}, "solution": {"type": "string"},
                           "data": data}}


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
                "type": "object", "required": [p.name for p in body if p.required],
                "properties": {p.name: _schema(p) for p in body}}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}}
        elif op.body == "json-array" and body:
            item["requestBody"] = {"required": body[0].required,
                                   "content": {"application/json": {"schema": _schema(body[0])}}}
        elif body or op.open_body:
            item["requestBody"] = {"required": any(p.required for p in body), "content": {
                "application/json": {"schema": {
                    "type": "object", "required": [p.name for p in body if p.required],
                    "properties": {p.name: _schema(p) for p in body},
                    "additionalProperties": op.open_body}}}}
        if op.permission is not None:
            item["security"] = [{"bearer": []}]
        if op.binary_reply:
            ok = {"description": "the file", "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}
        else:
            ok = {"description": f"success: data is {op.reply or 'untyped'}",
                  "content": {"application/json": {"schema": _envelope(op.reply)}}}
        item["responses"] = {
            "200": ok,
            "default": {"description": "error envelope (see x-result-codes)",
                        "content": {"application/json": {"schema": _envelope(None)}}},
        }
        paths.setdefault(prefix + path, {})[op.method.lower()] = item
    paths[prefix + "/events"] = {"get": {
        "operationId": "events", "tags": ["events"],
        "summary": "WebSocket event stream (upgrade); see the module documentation of dios.shim.ws",
        "parameters": [{"name": "token", "in": "query", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {"101": {"description": "switching protocols"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "JWT"}}},
        "x-result-codes": [{"code": c.hex, "name": c.name, "description": c.description,
                            "solution": c.solution} for c in all_codes()],
    }
