"""The HTTP JSON shim: a Starlette application served by uvicorn.

Every operation of :mod:`dios.shim.api` is one route under ``/api/v1`` (see
:func:`dios.shim.api.operations` for the table). Requests carry the reference console's
headers: ``Language`` (``en``/``zh``: localized descriptions and names), ``Product``
(``DROS``/``VETDROS``: filters the catalog), ``Source`` (``Electron``/``Browser``/``Android``:
recorded with the request) and ``Authorization: Bearer <token>``. Every reply is the
envelope ``{code, description, solution, data}``; file downloads are the raw bytes.

A request with a ``Request-Id`` header (1-128 characters) that the same user already sent
to the same operation within five minutes gets the first request's outcome again, also
while it is still running, instead of running twice (see :mod:`dios.shim.once`): a browser
that lost the reply of ``POST /task/image/expose`` retries with the same id and gets the
stored image, not a second exposure.

``POST /api/v1/task/device/command`` replies as the seed (``data`` =
``google.protobuf.Empty``); with the query flag ``?reply=true`` (or ``1``) ``data`` is the
device's reply, ``dr.task.DeviceReply`` (the value it accepted in ``result``), on success
and, beside the device's code in the envelope, on a refusal (see :mod:`dios.shim.api`).

HTTP status codes follow the result code's class (400 validation, 401 authentication,
403 role, 404 unknown id, 409 state conflict, 413 too large, 415 media type, 429 limits,
500 internal) and the envelope is always present, so a client may rely on either. The
listener (:mod:`dios.shim.listener`) adds 429 for a connection over the cap and 408 for a
request head or body that does not arrive in time.

Request bodies are checked before any service sees them: JSON numbers must fit a 64-bit
integer or a finite double (no ``NaN``/``Infinity``), nesting is at most
:data:`MAX_JSON_DEPTH` deep, and text must be valid Unicode without NUL characters (a
lone surrogate such as ``"\\ud800"`` is refused with ``INVALID_FIELD`` naming the field).
Descriptions speak of JSON types (object, array, string, number, boolean, null), never
of the server's internals.

CORS: the ``[http] cors_origins`` are allowed to call the API from a browser on another
origin (methods :data:`CORS_METHODS`, request headers :data:`CORS_HEADERS`); a preflight
from any other origin is refused with a 400 envelope and no
``Access-Control-Allow-Origin``. With no origins configured (the default) there are no
CORS headers at all and a preflight gets 405.

The OpenAPI 3 document is generated from the same table and served at
``/api/v1/openapi.json``; the WebSocket event stream is ``/api/v1/events``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from dios import codes
from dios.codes import (
    INVALID_FIELD,
    MALFORMED_REQUEST,
    METHOD_NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA,
    DiosError,
)
from dios.shim.dispatch import MAX_DEPTH, Context, Operation, check_access, check_values, dispatch
from dios.shim.envelope import Blob, failure, internal_error, language_of, success
from dios.shim.once import Once, check_request_id

if TYPE_CHECKING:
    from dios.events import EventHub
    from dios.shim.api import Services


log = logging.getLogger("dios.shim.http")

PREFIX = "/api/v1"
PRODUCTS = ("DROS", "VETDROS")
SOURCES = ("Electron", "Browser", "Android")

_STATUS_BY_CODE = {
    codes.NOT_AUTHENTICATED: 401, codes.TOKEN_EXPIRED: 401, codes.TOKEN_INVALID: 401,
    codes.BAD_CREDENTIALS: 401, codes.FORBIDDEN: 403, codes.PASSWORD_CHANGE_REQUIRED: 403,
    codes.NOT_FOUND: 404, codes.STUDY_NOT_FOUND: 404, codes.IMAGE_NOT_FOUND: 404,
    codes.CATALOG_NOT_FOUND: 404, codes.UNKNOWN_DEVICE: 404, codes.METHOD_NOT_FOUND: 404,
    codes.INVALID_TRANSITION: 409, codes.STUDY_LOCKED: 409, codes.CONFLICT: 409,
    codes.DUPLICATE: 409, codes.USER_EXISTS: 409, codes.WRONG_STATE: 409, codes.BUSY: 409,
    codes.CATALOG_READONLY: 409,
    codes.PAYLOAD_TOO_LARGE: 413, codes.UNSUPPORTED_MEDIA: 415,
    codes.TOO_MANY_ATTEMPTS: 429, codes.LIMIT_REACHED: 429,
    codes.INTERNAL: 500, codes.STORAGE_ERROR: 500,
}


def http_status(err: DiosError) -> int:
    """The HTTP status that accompanies ``err``'s envelope."""
    if err.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[err.code]
    domain = err.code.value >> 16
    return {0x01: 409, 0x02: 401, 0x03: 400, 0x04: 400, 0x05: 400, 0x06: 400, 0x07: 422}.get(domain, 500)


def error_response(err: DiosError, language: str) -> JSONResponse:
    return JSONResponse(failure(err, language), status_code=http_status(err))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise DiosError(MALFORMED_REQUEST, "bad Content-Length")
        if int(declared) > limit:
            raise DiosError(PAYLOAD_TOO_LARGE, f"{declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DiosError(PAYLOAD_TOO_LARGE, f"over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


#: how deep JSON arrays and objects may nest in a request body
MAX_JSON_DEPTH = MAX_DEPTH
#: JSON integers must fit a signed 64-bit integer (the database's, and other clients')
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _json_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 19 or not INT64_MIN <= int(text) <= INT64_MAX:
        shown = text if len(text) <= 24 else f"{text[:12]}... ({len(digits)} digits)"
        raise DiosError(MALFORMED_REQUEST, f"the number {shown} is outside the 64-bit "
                                           "integer range")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else text[:12] + "..."
        raise DiosError(MALFORMED_REQUEST, f"the number {shown} is too large")
    return value


def _json_constant(name: str) -> Any:
    raise DiosError(MALFORMED_REQUEST, f"{name} is not a JSON number")


def parse_json(body: bytes, want: type, name: str = "") -> Any:
    """Decode a JSON body of type ``want`` (dict or list); MALFORMED_REQUEST otherwise
    (and for numbers beyond 64-bit integers or doubles, NaN and Infinity, nesting deeper
    than :data:`MAX_JSON_DEPTH`), INVALID_FIELD for text that is not valid Unicode (``name``:
    the parameter the whole body is, for an array body)."""
    if not body.strip():
        return want()
    try:
        value = json.loads(body, parse_int=_json_int, parse_float=_json_float,
                           parse_constant=_json_constant)
    except UnicodeDecodeError:
        raise DiosError(MALFORMED_REQUEST, "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DiosError(MALFORMED_REQUEST, f"invalid JSON: {exc.msg} at line {exc.lineno} "
                                           f"column {exc.colno}") from None
    except RecursionError:
        raise DiosError(MALFORMED_REQUEST,
                        f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_values(value, name)
    if not isinstance(value, want):
        kind = "an object" if want is dict else "an array"
        raise DiosError(MALFORMED_REQUEST, f"the body must be {kind}")
    return value


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields of a ``multipart/form-data`` body: text fields as str, files as bytes
    (with ``<name>.filename`` and ``<name>.content_type`` alongside)."""
    msg = BytesParser(policy=HTTP_POLICY).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise DiosError(MALFORMED_REQUEST, "multipart body without parts or boundary")
    fields: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None or part.get_content_type() not in ("text/plain",):
            fields[name] = payload
            fields[f"{name}.filename"] = filename or ""
            fields[f"{name}.content_type"] = part.get_content_type()
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields


#: what a browser on an allowed origin may send (CORS)
CORS_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
CORS_HEADERS = ("Authorization", "Content-Type", "Language", "Product", "Source",
                "Request-Id")
#: what a browser script may read of a reply besides the safelisted headers
CORS_EXPOSE = ("Content-Disposition",)


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS middleware whose refused preflights are envelopes like every other
    refusal (400 ``INVALID_FIELD`` naming the header that was not allowed) and carry no
    ``Access-Control-Allow-Origin``."""

    _FIELDS = {"origin": "Origin", "method": "Access-Control-Request-Method",
               "headers": "Access-Control-Request-Headers",
               "private-network": "Access-Control-Request-Private-Network"}

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        text = bytes(response.body).decode("latin-1")
        refused = [part.strip() for part in text.removeprefix("Disallowed CORS ").split(",")]
        name = self._FIELDS.get(refused[0], "Origin")
        err = DiosError(INVALID_FIELD, f"cross-origin request refused: {name} not allowed",
                        field=name)
        headers = {k: v for k, v in response.headers.items()
                   if k.lower().startswith("access-control-") and k.lower() not in
                   ("access-control-allow-origin", "content-length")}
        headers["Vary"] = response.headers.get("vary", "Origin")
        return JSONResponse(failure(err, language_of(request_headers.get("language"))),
                            status_code=400, headers=headers)


class HttpShim:
    """Builds the Starlette app for a set of services and operations.

    ``cors_origins`` are the browser origins allowed to call the API from another origin
    (``*`` for any; none by default: no CORS headers, a preflight gets 405).
    """

    def __init__(self, services: Services, operations: list[Operation], hub: EventHub | None = None, *,
                 max_body: int = 1 << 20, max_upload: int = 32 << 20,
                 title: str = "DIOS console API", version: str = "1",
                 cors_origins: Sequence[str] = ()) -> None:
        self.services = services
        self.operations = operations
        self.hub = hub
        self.max_body = max_body
        self.max_upload = max_upload
        self.title = title
        self.version = version
        self.cors_origins = tuple(cors_origins)
        self.requests_by_source: dict[str, int] = {}
        #: outcomes by (user, operation, Request-Id header): see :mod:`dios.shim.once`
        self.request_ids = Once(keep=lambda outcome: not isinstance(outcome[1], Blob))
        self.app = self.build()

    # --- app -----------------------------------------------------------------------------
    def build(self) -> Starlette:
        from dios.shim.openapi import openapi_document
        from dios.shim.ws import EventSocket

        routes: list[Any] = []
        by_path: dict[str, list[Operation]] = {}
        for op in self.operations:
            by_path.setdefault(op.path, []).append(op)
        def specific_first(path: str) -> list[tuple[bool, str]]:
            return [(seg.startswith("{"), seg) for seg in path.split("/")]

        for path, ops in sorted(by_path.items(), key=lambda kv: specific_first(kv[0])):
            table = {op.method: op for op in ops}
            routes.append(Route(PREFIX + path, self.endpoint(table), methods=list(table)))
        doc = openapi_document(self.operations, PREFIX, self.title, self.version)

        async def openapi(request: Request) -> Response:
            return JSONResponse(doc)

        routes.append(Route(PREFIX + "/openapi.json", openapi, methods=["GET"]))
        if self.hub is not None:
            routes.append(WebSocketRoute(PREFIX + "/events", EventSocket(self.services, self.hub)))

        async def not_found(request: Request, exc: Exception) -> Response:
            lang = language_of(request.headers.get("language"))
            if isinstance(exc, HTTPException) and exc.status_code == 405:
                err = DiosError(METHOD_NOT_FOUND, f"{request.method} not allowed on {request.url.path}")
                return JSONResponse(failure(err, lang), status_code=405)
            return error_response(DiosError(METHOD_NOT_FOUND, request.url.path[:200]), lang)

        async def crashed(request: Request, exc: Exception) -> Response:
            lang = language_of(request.headers.get("language"))
            return error_response(internal_error(exc, f"http {request.url.path}"), lang)

        middleware = []
        if self.cors_origins:
            middleware.append(Middleware(EnvelopeCORS, allow_origins=self.cors_origins,
                                         allow_methods=CORS_METHODS, allow_headers=CORS_HEADERS,
                                         expose_headers=CORS_EXPOSE))
        return Starlette(routes=routes, middleware=middleware, exception_handlers={
            404: not_found, 405: not_found, HTTPException: not_found, Exception: crashed})

    def context(self, request: Request) -> Context:
        h = request.headers
        auth = h.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        product = h.get("product", "")
        if product and product not in PRODUCTS:
            raise DiosError(INVALID_FIELD, f"Product header must be one of {PRODUCTS}",
                            field="Product")
        source = h.get("source", "")[:32]
        self.requests_by_source[source or "-"] = self.requests_by_source.get(source or "-", 0) + 1
        client = request.client
        return Context(services=self.services, token=token,
                       language=language_of(h.get("language")), product=product,
                       source=source, transport="http",
                       peer=f"{client.host}:{client.port}" if client else "")

    async def arguments(self, op: Operation, request: Request) -> dict[str, Any]:
        args: dict[str, Any] = {}
        declared = {p.name: p for p in op.params}
        for key, value in request.query_params.items():
            p = declared.get(key)
            if p is not None and p.where == "query":
                args[key] = value
        if op.method in ("POST", "PUT", "PATCH", "DELETE") and op.body != "none":
            if op.body == "upload":
                args.update(await self.upload(request))
            else:
                body = await read_body(request, self.max_body)
                ctype = request.headers.get("content-type", "application/json")
                if body.strip() and "json" not in ctype and "text/plain" not in ctype:
                    raise DiosError(UNSUPPORTED_MEDIA, f"{ctype}: send application/json")
                if op.body == "json-array":
                    first = next(p for p in op.params if p.where == "body")
                    value = parse_json(body, list, first.name) if body.strip() else None
                    if isinstance(value, list):
                        args[first.name] = value
                    elif value is not None:
                        raise DiosError(MALFORMED_REQUEST, "the body must be an array")
                else:
                    args.update(parse_json(body, dict))
        for key, value in request.path_params.items():
            args[key] = value
        return args

    async def upload(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, self.max_upload)
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return parse_multipart(ctype, body)
        args: dict[str, Any] = {"data": body, "data.content_type": ctype.split(";")[0].strip()}
        for key, value in request.query_params.items():
            args.setdefault(key, value)
        return args

    def endpoint(self, table: dict[str, Operation]) -> Any:
        async def handle(request: Request) -> Response:
            t0 = time.perf_counter()
            lang = language_of(request.headers.get("language"))
            op = table.get(request.method)
            name = op.name if op else request.method
            source = request.headers.get("source", "")
            try:
                if op is None:
                    raise DiosError(METHOD_NOT_FOUND, request.method)
                ctx = self.context(request)
                if op.permission is not None:  # who, before reading what they send
                    await run_in_threadpool(check_access, op, ctx)
                args = await self.arguments(op, request)

                async def run() -> tuple[bool, Any]:
                    try:
                        return True, await run_in_threadpool(
                            partial(dispatch, access_checked=True), op, ctx, args)
                    except DiosError as err:
                        return False, err

                rid = request.headers.get("request-id")
                if rid is not None and ctx.claims is not None:
                    key = (ctx.claims.uid, op.name, check_request_id(rid, "Request-Id"))
                    ok, result = await self.request_ids.run(key, run)
                else:
                    ok, result = await run()
                if not ok:
                    raise result
                if isinstance(result, Blob):
                    headers = {}
                    if result.filename:
                        headers["Content-Disposition"] = f'attachment; filename="{result.filename}"'
                    response: Response = Response(result.content, media_type=result.media_type,
                                                  headers=headers)
                else:
                    response = JSONResponse(success(result, None, lang))
            except DiosError as err:
                response = error_response(err, lang)
            except ClientDisconnect:  # gone (or cut by the listener's body timeout): no one to answer
                response = error_response(DiosError(MALFORMED_REQUEST, "the client went away "
                                                    "before its request body was complete"), lang)
            except Exception as exc:  # noqa: BLE001 - no traceback ever reaches the client
                response = error_response(internal_error(exc, f"http {name}"), lang)
            log.debug("%s %s %s source=%s %d %.1f ms", request.method, request.url.path, name,
                      source or "-", response.status_code, (time.perf_counter() - t0) * 1e3)
            return response

        return handle
