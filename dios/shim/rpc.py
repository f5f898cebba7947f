"""MessagePack-RPC over TCP, following the public MessagePack-RPC specification.

Messages (each a MessagePack array, back to back on the stream):

* request ``[0, msgid, method, params]`` -> response ``[1, msgid, error, result]``
* notification ``[2, method, params]`` (server -> client: events; client -> server: a call
  whose reply is not wanted)

Methods are the HTTP operations under dotted names (``study.register``,
``task.device_command`` ...). ``params`` is ``[args]`` or ``[args, meta]``: ``args`` is the
same object the HTTP body carries; ``meta`` may carry ``token``, ``language``,
``product`` and ``source`` (the HTTP headers). A successful ``auth.login`` (or
``session.authenticate [{"token": ...}]``) makes the connection remember the token.
``error`` is ``nil`` on success, else ``{code, description, solution}`` with the same
result codes as HTTP, plus ``data`` (e.g. ``{"field": ...}``) when the error has details; ``result`` is the reply message with its ``@type``. Files and
frames are MessagePack ``bin``, never base64.

Connection-level methods: ``session.authenticate``, ``events.subscribe [{"pattern":
"DIOS/DEVICE/*", "kinds": [...], "reqClientID": "...", "frames": false}]`` ->
``{"subscription": n}`` (``kinds`` and ``reqClientID`` optional filters),
``events.unsubscribe [{"subscription": n}]``, ``rpc.methods`` (``[{"describe": true}]``
adds each method's summary, permission, parameters and result type, and the schemas of
the results documented in full). Events arrive as ``[2, "event", [message]]``.

Device commands: ``task.device_command [{deviceUri, reqName, reqParam, reqTransaction,
reqClientID}]`` returns the device's reply, ``dr.task.DeviceReply``: ``{"@type",
deviceUri, reqName, reqTransaction, reqClientID, code, description, solution, result,
data}`` (``result`` is the value the device accepted: ``SetParam_MA 130`` -> ``"125"``);
a refusal is an RPC error ``{code, description, solution, data}`` whose ``data`` is the
reply's detail (``OUT_OF_RANGE``: ``{min, max}``). Every device reply is also an event of
kind ``reply`` (see :mod:`dios.shim.ws`), so ``events.subscribe [{"pattern": "device",
"kinds": ["reply"]}]`` mirrors the replies of every client.

Robustness: bytes that are not MessagePack, or a message larger than
``max_message`` bytes, get an ``[2, "error", [{code, description, solution}]]``
notification and the connection is closed; a well-formed message that is not a valid RPC
message gets an error (a response when it has a msgid). At most ``max_inflight`` requests
run per connection (reading pauses beyond that); events for a client that does not read
are dropped oldest-first, and a client that blocks a write for ``write_timeout`` seconds
is disconnected.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgpack

from dios.codes import (
    INVALID_FIELD,
    MALFORMED_REQUEST,
    METHOD_NOT_FOUND,
    NOT_AUTHENTICATED,
    PAYLOAD_TOO_LARGE,
    DiosError,
)
from dios.shim.api import MESSAGE_SCHEMAS
from dios.shim.dispatch import REPLY_FLAG, Context, Operation, authenticate, dispatch
from dios.shim.envelope import Blob, error_data, internal_error, language_of, type_url
from dios.shim.events import AsyncSubscription, check_client, check_subscription, event_message

if TYPE_CHECKING:
    from dios.events import EventHub
    from dios.shim.api import Services


log = logging.getLogger("dios.shim.rpc")

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MSGID = 2**32 - 1


#: The solution of ``MALFORMED_REQUEST`` on this transport (the code's own text speaks of
#: JSON bodies), per language.
_FRAMING_SOLUTION = {
    "en": "Send MessagePack arrays: [0, msgid, method, [args]] or [2, method, [args]]",
    "zh": "请发送MessagePack数组：[0, msgid, method, [args]] 或 [2, method, [args]]",
}


def error_object(err: DiosError, language: str) -> dict[str, Any]:
    """The MessagePack-RPC ``error`` member: ``{code, description, solution}``, plus
    ``data`` (the error's simple detail fields, as in the HTTP envelope) when it has any."""
    solution = (_FRAMING_SOLUTION.get(language, _FRAMING_SOLUTION["en"])
                if err.code == MALFORMED_REQUEST else err.solution(language))
    out: dict[str, Any] = {"code": err.code.hex, "description": err.description(language),
                           "solution": solution}
    data = error_data(err)
    if data:
        out["data"] = data
    return out


def describe(op: Operation) -> dict[str, Any]:
    """What ``rpc.methods [{"describe": true}]`` says of one method: summary, permission,
    its arguments (the HTTP query flag of a full reply is left out: RPC always gets it)
    and the ``@type`` of its result (``schemas`` has those documented in full)."""
    params = [{"name": p.name, "type": p.type, "required": p.required,
               **({"description": p.description} if p.description else {})}
              for p in op.params if not (op.full_reply and p.name == REPLY_FLAG)]
    result = op.result_type("rpc")
    return {"summary": op.summary, "permission": op.permission or "public",
            "params": params,
            "result": type_url("dios.File") if op.binary_reply else (
                type_url(result) if result else None)}


def blob_message(blob: Blob) -> dict[str, Any]:
    """A file reply: the bytes as MessagePack bin."""
    return {"@type": "type.googleapis.com/dios.File", "media_type": blob.media_type,
            "filename": blob.filename, "content": bytes(blob.content)}


class _Connection:
    def __init__(self, server: RpcServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.token = ""
        self.language = "en"
        self.product = ""
        self.source = ""
        self.packer = msgpack.Packer(use_bin_type=True)
        self.responses: collections.deque[bytes] = collections.deque()
        self.notes: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.inflight = asyncio.Semaphore(server.max_inflight)
        self.tasks: set[asyncio.Task] = set()
        self.subs: dict[int, tuple[AsyncSubscription, asyncio.Task]] = {}
        self.sub_ids = itertools.count(1)
        self.closed = False
        self.dropped = 0

    # --- output ------------------------------------------------------------------------
    def pack(self, obj: Any) -> bytes:
        return self.packer.pack(obj)

    def respond(self, obj: Any) -> None:
        self.responses.append(self.pack(obj))
        self.wake.set()

    def notify(self, method: str, params: list[Any]) -> None:
        if len(self.notes) >= self.server.max_pending_events:
            self.notes.popleft()
            self.dropped += 1
        self.notes.append(self.pack([NOTIFICATION, method, params]))
        self.wake.set()

    async def write_loop(self) -> None:
        timeout = self.server.write_timeout
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.responses or self.notes:
                is_response = bool(self.responses)
                data = self.responses.popleft() if is_response else self.notes.popleft()
                self.writer.write(data)
                try:
                    await asyncio.wait_for(self.writer.drain(), timeout)
                except (TimeoutError, ConnectionError, OSError):
                    log.warning("rpc client %s too slow or gone; disconnecting", self.peer)
                    self.close()
                    return
                if is_response:
                    self.inflight.release()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake.set()
        for sub, task in self.subs.values():
            sub.close()
            task.cancel()
        self.subs.clear()
        for t in list(self.tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()

    # --- input ---------------------------------------------------------------------------
    async def fatal(self, err: DiosError) -> None:
        """Tell the client why, then close (framing can no longer be trusted)."""
        self.notes.append(self.pack([NOTIFICATION, "error", [error_object(err, self.language)]]))
        self.wake.set()
        for _ in range(200):  # what is queued goes out first, in order (at most 2 s)
            if self.closed or not (self.notes or self.responses):
                break
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(), 1.0)
        self.close()

    async def read_loop(self) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=self.server.max_message,
                                    strict_map_key=True)
        while not self.closed:
            try:
                chunk = await self.reader.read(65536)
            except (ConnectionError, OSError):
                break
            if not chunk:
                break
            try:
                unpacker.feed(chunk)
            except msgpack.BufferFull:
                await self.fatal(DiosError(PAYLOAD_TOO_LARGE,
                                           f"message over {self.server.max_message} bytes"))
                return
            try:
                for msg in unpacker:
                    await self.on_message(msg)
                    if self.closed:
                        return
            except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as exc:
                await self.fatal(DiosError(MALFORMED_REQUEST,
                                           f"not MessagePack: {type(exc).__name__}"))
                return

    async def on_message(self, msg: Any) -> None:
        if not isinstance(msg, list) or not msg or msg[0] not in (REQUEST, NOTIFICATION):
            self.notify("error", [error_object(DiosError(
                MALFORMED_REQUEST, "expected [0, msgid, method, params] or [2, method, params]"),
                self.language)])
            return
        if msg[0] == REQUEST:
            msgid = msg[1] if len(msg) > 1 else None
            if not isinstance(msgid, int) or isinstance(msgid, bool) or not 0 <= msgid <= MAX_MSGID:
                self.notify("error", [error_object(DiosError(
                    MALFORMED_REQUEST, "msgid must be a 32-bit unsigned integer"), self.language)])
                return
            await self.inflight.acquire()
            if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], list):
                self.respond([RESPONSE, msgid, error_object(DiosError(
                    MALFORMED_REQUEST, "request must be [0, msgid, method, params-array]"),
                    self.language), None])
                return
            self.spawn(self.call(msgid, msg[2], msg[3]))
        else:
            if len(msg) != 3 or not isinstance(msg[1], str) or not isinstance(msg[2], list):
                self.notify("error", [error_object(DiosError(
                    MALFORMED_REQUEST, "notification must be [2, method, params-array]"),
                    self.language)])
                return
            await self.inflight.acquire()
            self.spawn(self.call(None, msg[1], msg[2]))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def call(self, msgid: int | None, method: str, params: list[Any]) -> None:
        language = self.language
        try:
            args, meta = self.split(params)
            language = language_of(meta.get("language", self.language))
            result = await self.invoke(method, args, meta, language)
            reply = [RESPONSE, msgid, None, result]
        except DiosError as err:
            reply = [RESPONSE, msgid, error_object(err, language), None]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no traceback ever reaches the client
            reply = [RESPONSE, msgid, error_object(internal_error(exc, f"rpc {method}"), language),
                     None]
        if msgid is None:
            self.inflight.release()
            return
        try:
            self.respond(reply)
        except (TypeError, ValueError, OverflowError) as exc:
            self.respond([RESPONSE, msgid, error_object(
                internal_error(exc, f"rpc {method} encode"), language), None])

    @staticmethod
    def split(params: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(params) > 2:
            raise DiosError(INVALID_FIELD, "params must be [args] or [args, meta]")
        args = params[0] if params else {}
        meta = params[1] if len(params) > 1 else {}
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise DiosError(INVALID_FIELD, "params[0] must be a map of named arguments")
        if not isinstance(meta, dict):
            raise DiosError(INVALID_FIELD, "params[1] must be a map (token, language, ...)")
        return args, meta

    def context(self, meta: dict[str, Any], language: str) -> Context:
        token = meta.get("token") or self.token
        if not isinstance(token, str):
            raise DiosError(INVALID_FIELD, "token must be a string")
        return Context(services=self.server.services, token=token, language=language,
                       product=str(meta.get("product") or self.product or ""),
                       source=str(meta.get("source") or self.source or "RPC"),
                       transport="rpc", peer=self.peer)

    async def invoke(self, method: str, args: dict[str, Any], meta: dict[str, Any],
                     language: str) -> Any:
        server = self.server
        loop = asyncio.get_running_loop()
        ctx = self.context(meta, language)
        if method == "session.authenticate":
            token = args.get("token")
            if not isinstance(token, str) or not token:
                raise DiosError(NOT_AUTHENTICATED)
            ctx.token = token
            claims = await loop.run_in_executor(server.executor, authenticate, ctx)
            self.token = token
            for key in ("language", "product", "source"):
                if isinstance(args.get(key), str):
                    setattr(self, key, language_of(args[key]) if key == "language" else args[key])
            return {"uid": claims.get("uid", claims.get("id")), "name": claims.get("name", "")}
        if method == "events.subscribe":
            claims = await loop.run_in_executor(server.executor, authenticate, ctx)
            server.services.auth.authorize(claims, "task.read")
            pattern, kinds = check_subscription(args.get("pattern"), args.get("kinds"))
            client = check_client(args.get("reqClientID"))
            frames = bool(args.get("frames", False))
            sub = AsyncSubscription(server.hub, loop, pattern, kinds,
                                    server.max_pending_events, client)
            sid = next(self.sub_ids)
            self.subs[sid] = (sub, loop.create_task(self.pump(sid, sub, frames)))
            return {"subscription": sid, "pattern": pattern}
        if method == "events.unsubscribe":
            sid = args.get("subscription")
            entry = self.subs.pop(sid, None) if isinstance(sid, int) else None
            if entry is None:
                raise DiosError(INVALID_FIELD, "no such subscription", field="subscription")
            entry[0].close()
            entry[1].cancel()
            return {}
        if method == "rpc.methods":
            out: dict[str, Any] = {
                "methods": sorted(server.operations) + list(server.CONNECTION_METHODS)}
            if args.get("describe") is True:
                out["descriptions"] = {name: describe(op)
                                       for name, op in sorted(server.operations.items())}
                out["schemas"] = dict(MESSAGE_SCHEMAS)
            return out
        op = server.operations.get(method)
        if op is None:
            raise DiosError(METHOD_NOT_FOUND, method[:100])
        result = await loop.run_in_executor(server.executor, dispatch, op, ctx, args)
        if method == "auth.login" and isinstance(result, dict) and result.get("token"):
            self.token = result["token"]
        if isinstance(result, Blob):
            return blob_message(result)
        return result

    async def pump(self, sid: int, sub: AsyncSubscription, frames: bool) -> None:
        while not self.closed:
            ev = await sub.get()
            msg = event_message(ev, binary=True, frames=frames)
            msg["subscription"] = sid
            self.notify("event", [msg])


class RpcServer:
    """The MessagePack-RPC listener. ``await start()``, then ``await stop()``."""

    CONNECTION_METHODS = ("session.authenticate", "events.subscribe", "events.unsubscribe",
                          "rpc.methods")

    def __init__(self, services: Services, operations: list[Operation] | dict[str, Operation],
                 hub: EventHub, host: str = "127.0.0.1", port: int = 0, *,
                 max_message: int = 64 * 1024 * 1024, max_inflight: int = 32,
                 max_pending_events: int = 1024, write_timeout: float = 10.0,
                 workers: int = 16) -> None:
        self.services = services
        ops = operations.values() if isinstance(operations, dict) else operations
        self.operations = {op.name: op for op in ops}
        self.hub = hub
        self.host = host
        self.port = port
        self.max_message = max_message
        self.max_inflight = max_inflight
        self.max_pending_events = max_pending_events
        self.write_timeout = write_timeout
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="dios-rpc")
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=1 << 20)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        log.info("MessagePack-RPC listening on %s:%d", self.host, self.port)
        return self.host, self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._conns.add(conn)
        writer_task = asyncio.get_running_loop().create_task(conn.write_loop())
        try:
            await conn.read_loop()
            # let responses to requests already received go out before closing
            while conn.tasks and not conn.closed:
                await asyncio.wait(set(conn.tasks), timeout=self.write_timeout)
                if conn.tasks:
                    break
            for _ in range(100):
                if conn.closed or not (conn.responses or conn.notes):
                    break
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass
        finally:
            conn.close()
            writer_task.cancel()
            self._conns.discard(conn)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; let running requests finish (at most ``grace`` s); close."""
        if self._server is not None:
            self._server.close()
            deadline = asyncio.get_running_loop().time() + grace
            while any(c.tasks or c.responses for c in self._conns if not c.closed):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.02)
            for conn in list(self._conns):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        self.executor.shutdown(wait=False, cancel_futures=True)
