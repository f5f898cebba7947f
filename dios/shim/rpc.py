"""MessagePack-RPC over TCP, following the public MessagePack-RPC specification.

Messages (each a MessagePack array, back to back on the stream):

* request ``[0, msgid, method, params]`` -> response ``[1, msgid, error, result]``
* notification ``[2, method, params]`` (server -> client: events and notices; client ->
  server: a call whose reply is not wanted)

Methods are the HTTP operations under dotted names (``study.register``,
``task.device_command`` ...). ``params`` is ``[args]`` or ``[args, meta]``: ``args`` is the
same object the HTTP body carries; ``meta`` may carry ``token``, ``language``, ``product``,
``source`` (the HTTP headers) and ``requestId``. ``error`` is ``nil`` on success, else
``{code, description, solution}`` with the same result codes as HTTP, plus ``data`` (e.g.
``{"field": ...}``) when the error has details; ``result`` is the reply message with its
``@type``. Files and frames are MessagePack ``bin``, never base64.

Sessions: a successful ``auth.login`` (or ``session.authenticate [{"token": ...}]``)
authenticates the connection once; later calls are not re-verified one by one. The
session ends when the token expires (``[2, "session.expired", [{code, description}]]``)
or when the user's password, role or account changes: the auth service tells the server
at once; a password change, a disabled or deleted user end the session
(``session.revoked``), a role change re-applies the new role to the session and its
subscriptions. A call may still carry its own ``meta.token`` (verified for that call).

Connection methods: ``session.authenticate``, ``rpc.hello [{"client", "protocol"}]``
(server and protocol versions, compatibility), ``rpc.methods`` / ``rpc.describe`` (the
method catalogue with request and result schemas), ``events.subscribe [{"pattern":
"DIOS/DEVICE/*", "kinds": [...], "reqClientID": "...", "frames": false, "resume_from":
seq}]`` -> ``{subscription, pattern, replayed, complete, oldest}`` and
``events.unsubscribe [{"subscription": n}]``.

Events arrive as ``[2, "event", [message]]`` (see :data:`dios.shim.events.EVENT_SCHEMA`)
with ``subscription`` and ``sseq``: the subscription's own sequence (1, 2, 3 ... over every
event that matched it), so a gap means events were dropped; when that happens the client
also gets ``[2, "events.dropped", [{subscription, dropped, total_dropped, last_seq}]]``
before the next event. ``resume_from`` (the last global ``seq`` seen, e.g. before a
reconnect) replays the retained events after it first (see :mod:`dios.shim.feed`).
Raw frame pixels (``frames: true``) and patient-bearing events need the ``event.images``
permission (never the guest token).

Request ids: a request whose ``meta.requestId`` (a string of at most 128 characters) was
already seen from the same user for the same method gets the first call's outcome again
(also while it is still running), for ``retention`` seconds: a client that lost the
connection during ``task.expose`` retries with the same id and gets the stored image
instead of a second exposure.

Isolation: calls that block run on lanes, bounded thread pools per kind: one per device
(device commands and actions, by ``deviceUri``), one for exposures, one for logins, one
for everything else; device commands other than the generator's ``Expose`` take no thread
at all (the device's own queue serves them). A connection runs at most
``max_blocking`` blocking calls at once (the rest of its calls wait behind them), and at
most ``max_inflight`` calls in all (reading pauses beyond that). A hung device delays only
the calls to that device; a greedy connection only itself.

Limits: ``max_connections`` in all and ``max_connections_per_address``; a connection
that has not authenticated within ``auth_timeout`` seconds, or that sends nothing for
``idle_timeout`` seconds while it has no subscription, is closed with an ``error``
notice; subscriptions are capped per connection (``max_subscriptions``) and per user
(``max_subscriptions_per_user``). Events queued for a client are bounded by count
(``max_pending_events``) and bytes (``max_pending_bytes``): the oldest are dropped and
counted. A client that does not take what is written for ``write_timeout`` seconds is
cut off at once (the transport is aborted, its queues freed), never waited for.

Robustness: bytes that are not MessagePack, or a message larger than ``max_message``
bytes, get an ``[2, "error", [{code, description, solution}]]`` notification and the
connection is closed; a well-formed message that is not a valid RPC message gets an error
(a response when it has a msgid).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack

from dios.codes import (
    BUSY,
    FORBIDDEN,
    INVALID_FIELD,
    LIMIT_REACHED,
    MALFORMED_REQUEST,
    METHOD_NOT_FOUND,
    NOT_AUTHENTICATED,
    PAYLOAD_TOO_LARGE,
    TOKEN_EXPIRED,
    DiosError,
)
from dios.shim.api import REQUEST_FIELDS, device_reply, refused_reply
from dios.shim.contract import CONNECTION_METHODS as CONTRACT_METHODS
from dios.shim.contract import catalogue, handshake
from dios.shim.dispatch import (
    REPLY_FLAG,
    Context,
    Operation,
    check_values,
    dispatch,
    validate,
)
from dios.shim.envelope import (
    Blob,
    ReplyFailure,
    error_data,
    internal_error,
    language_of,
    type_url,
    typed,
)
from dios.shim.events import check_client, check_subscription
from dios.shim.feed import EventFeed, FeedSubscription, Rendered, images_allowed
from dios.shim.once import Once, check_request_id

if TYPE_CHECKING:
    from dios.auth.roles import Principal
    from dios.events import EventHub
    from dios.shim.api import Services


log = logging.getLogger("dios.shim.rpc")

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MSGID = 2**32 - 1
#: Calls that change the connection's session: the calls received after one wait for it.
SESSION_METHODS = frozenset({"auth.login", "session.authenticate"})


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


def _not_a_file(outcome: tuple[Any, Any]) -> bool:
    """Files are not kept for retries (reading twice is harmless; they are large)."""
    result = outcome[1]
    return not (isinstance(result, dict) and str(result.get("@type", "")).endswith("dios.File"))


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: give freed heap pages back to the system (a no-op
    where the C library has none)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


#: Frames queued for clients that were cut off are large and freed all at once; the C
#: heap keeps such memory unless told to give it back.
release_memory = _malloc_trim()


class Lane:
    """A bounded pool of threads for one kind of blocking call, with a bounded queue."""

    def __init__(self, name: str, workers: int, max_queue: int) -> None:
        self.name = name
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"dios-rpc-{name[:24]}")
        self.max_queue = max_queue
        self.queued = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.queued >= self.max_queue:
            raise DiosError(BUSY, f"{self.queued} calls already waiting for {self.name}")
        self.queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.queued -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class _Outbox:
    """What a connection has to send: responses (never dropped; bounded by the in-flight
    limit) and events (bounded by count and bytes, oldest dropped and counted)."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.responses: collections.deque[bytes] = collections.deque()
        self.notes: collections.deque[tuple[int, bytes]] = collections.deque()  # (sid, bytes)
        self.note_bytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.drops: dict[int, int] = {}  # subscription -> events dropped, not told yet

    def add_note(self, sid: int, data: bytes) -> list[int]:
        """Queue an event for subscription ``sid`` (0: a notice never dropped); returns
        the subscriptions of the events dropped to make room."""
        dropped: list[int] = []
        size = len(data)
        if sid and size > self.max_bytes:
            return [sid]
        while self.notes and (len(self.notes) >= self.max_events
                              or self.note_bytes + size > self.max_bytes):
            victim = next((i for i, (s, _) in enumerate(self.notes) if s), None)
            if victim is None:
                break
            old_sid, old = self.notes[victim]
            del self.notes[victim]
            self.note_bytes -= len(old)
            dropped.append(old_sid)
        self.notes.append((sid, data))
        self.note_bytes += size
        return dropped

    def pop_note(self) -> bytes:
        _, data = self.notes.popleft()
        self.note_bytes -= len(data)
        return data

    def clear(self) -> None:
        self.responses.clear()
        self.notes.clear()
        self.note_bytes = 0
        self.drops.clear()


class _Connection:
    def __init__(self, server: RpcServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.token = ""
        self.principal: Principal | None = None
        self.revision = 0
        self.ever_authenticated = False
        self.language = "en"
        self.product = ""
        self.source = ""
        self.packer = msgpack.Packer(use_bin_type=True)
        self.out = _Outbox(server.max_pending_events, server.max_pending_bytes)
        self.wake = asyncio.Event()
        #: the write loop is between writing a message and its drain
        self.writing = False
        self.inflight = asyncio.Semaphore(server.max_inflight)
        self.blocking = asyncio.Semaphore(server.max_blocking)
        self.tasks: set[asyncio.Task] = set()
        #: clear while a login or session.authenticate runs: calls received after it wait
        #: for it, so a client may pipeline its login and its first calls
        self.session_ready = asyncio.Event()
        self.session_ready.set()
        self.subs: dict[int, FeedSubscription] = {}
        self.closed = False
        self.closing = False
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.dropped = 0

    # --- output ------------------------------------------------------------------------
    def pack(self, obj: Any) -> bytes:
        return self.packer.pack(obj)

    def respond(self, obj: Any) -> None:
        if self.closed:
            return
        data = self.pack(obj)
        out = self.out
        transport = self.writer.transport
        if (not out.responses and not out.notes and not out.drops and not self.writing
                and transport.get_write_buffer_size() == 0):
            transport.write(data)  # nothing ahead of it: straight out, no task switch
            self.inflight.release()
            return
        out.responses.append(data)
        self.wake.set()

    def notify(self, method: str, params: list[Any]) -> None:
        """A notice (never dropped for room; notices are small and rare)."""
        if self.closed:
            return
        self.out.add_note(0, self.pack([NOTIFICATION, method, params]))
        self.wake.set()

    def deliver(self, sub: FeedSubscription, rendered: Rendered) -> None:
        """The feed's sink: queue one event for subscription ``sub``."""
        if self.closed:
            return
        msg = dict(rendered.message(binary=True, frames=sub.frames))
        msg["subscription"] = sub.sid
        msg["sseq"] = sub.sseq
        try:
            data = self.pack([NOTIFICATION, "event", [msg]])
        except (TypeError, ValueError, OverflowError):
            log.warning("event %s %s could not be encoded", rendered.event.deviceUri,
                        rendered.event.name)
            return
        for sid in self.out.add_note(sub.sid, data):
            self.count_drop(sid)
        self.wake.set()

    def count_drop(self, sid: int) -> None:
        self.dropped += 1
        self.out.drops[sid] = self.out.drops.get(sid, 0) + 1
        sub = self.subs.get(sid)
        if sub is not None:
            sub.dropped += 1

    def drop_notices(self) -> list[bytes]:
        notices = []
        for sid, n in self.out.drops.items():
            sub = self.subs.get(sid)
            if sub is None:
                continue
            notices.append(self.pack([NOTIFICATION, "events.dropped", [{
                "subscription": sid, "dropped": n, "total_dropped": sub.dropped,
                "last_seq": sub.sseq}]]))
        self.out.drops.clear()
        return notices

    async def write_loop(self) -> None:
        timeout = self.server.write_timeout
        out = self.out
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while not self.closed and (out.responses or out.notes or out.drops):
                self.writing = True
                is_response = bool(out.responses)
                if is_response:
                    data = out.responses.popleft()
                elif out.drops:
                    data = b"".join(self.drop_notices())
                else:
                    data = out.pop_note()
                self.writer.write(data)
                if is_response:
                    self.inflight.release()
                try:
                    await asyncio.wait_for(self.writer.drain(), timeout)
                except (TimeoutError, ConnectionError, OSError):
                    log.warning("rpc client %s takes nothing for %g s (or is gone); cut off",
                                self.peer, timeout)
                    self.abort()
                    return
                finally:
                    self.writing = False

    def abort(self) -> None:
        """Cut the connection at once: nothing more is written, its queues are freed."""
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            if self.out.note_bytes + transport.get_write_buffer_size() > 1 << 20:
                self.server.freed_large = True
        self.close()
        with contextlib.suppress(Exception):
            transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.wake.set()
        for _ in range(self.server.max_inflight):  # a reader waiting for room wakes and ends
            self.inflight.release()
        for sub in self.subs.values():
            sub.close()
        self.subs.clear()
        self.out.clear()
        for t in list(self.tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()

    # --- input ---------------------------------------------------------------------------
    async def fatal(self, err: DiosError) -> None:
        """Tell the client why, then close (framing can no longer be trusted)."""
        self.closing = True
        self.notify("error", [error_object(err, self.language)])
        deadline = time.monotonic() + 2.0
        while not self.closed and (self.out.notes or self.out.responses):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.drain(), 1.0)
        self.abort()

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
            self.last_activity = time.monotonic()
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
            except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData):
                await self.fatal(DiosError(MALFORMED_REQUEST, "the bytes are not MessagePack"))
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
            if msg[2] in SESSION_METHODS:
                self.session_ready.clear()
            self.spawn(self.call(msgid, msg[2], msg[3]))
        else:
            if len(msg) != 3 or not isinstance(msg[1], str) or not isinstance(msg[2], list):
                self.notify("error", [error_object(DiosError(
                    MALFORMED_REQUEST, "notification must be [2, method, params-array]"),
                    self.language)])
                return
            await self.inflight.acquire()
            if msg[1] in SESSION_METHODS:
                self.session_ready.clear()
            self.spawn(self.call(None, msg[1], msg[2]))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def call(self, msgid: int | None, method: str, params: list[Any]) -> None:
        language = self.language
        if method in SESSION_METHODS:
            try:
                await self._call(msgid, method, params, language)
            finally:
                self.session_ready.set()
        else:
            await self.session_ready.wait()
            await self._call(msgid, method, params, language)

    async def _call(self, msgid: int | None, method: str, params: list[Any],
                    language: str) -> None:
        try:
            args, meta = self.split(params)
            language = language_of(meta.get("language", self.language))
            request_id = meta.get("requestId")
            # kept for the session's user; a call made with another token is not keyed
            if (request_id is not None and self.principal is not None
                    and meta.get("token") in (None, "", self.token)):
                key = (self.principal.uid, method, request_id)
                reply = await self.server.request_ids.run(
                    key, lambda: self.outcome(method, args, meta, language))
            else:
                reply = await self.outcome(method, args, meta, language)
        except DiosError as err:
            reply = (error_object(err, language), None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no traceback ever reaches the client
            reply = (error_object(internal_error(exc, f"rpc {method}"), language), None)
        if msgid is None:
            self.inflight.release()
            return
        try:
            self.respond([RESPONSE, msgid, reply[0], reply[1]])
        except (TypeError, ValueError, OverflowError) as exc:
            self.respond([RESPONSE, msgid, error_object(
                internal_error(exc, f"rpc {method} encode"), language), None])

    async def outcome(self, method: str, args: dict[str, Any], meta: dict[str, Any],
                      language: str) -> tuple[Any, Any]:
        """``(error, result)`` of one call (the response's two last members)."""
        try:
            return None, await self.invoke(method, args, meta, language)
        except DiosError as err:
            return error_object(err, language), None

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
        check_values(args)  # no unpaired surrogates, NUL, huge integers, NaN, deep nesting
        check_values(meta, "meta")
        if meta.get("requestId") is not None:
            check_request_id(meta["requestId"])
        return args, meta

    # --- sessions ------------------------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        """Verify ``token`` (on the login lane: it reads the user's record)."""
        auth = self.server.services.auth
        return await self.server.lane("auth").run(auth.verify, token)

    async def become(self, token: str) -> Principal:
        """Authenticate the connection as ``token``'s principal."""
        principal = await self.verify(token)
        self.token = token
        self.set_principal(principal)
        return principal

    def set_principal(self, principal: Principal) -> None:
        self.principal = principal
        self.revision = self.server.services.auth.revision(principal.uid)
        self.ever_authenticated = True
        images = images_allowed(principal)
        for sid, sub in list(self.subs.items()):
            sub.images = images
            if sub.frames and not images:
                sub.close()
                del self.subs[sid]
                err = DiosError(FORBIDDEN, "this role may no longer receive frames")
                self.notify("events.closed", [{"subscription": sid,
                                               **error_object(err, self.language)}])

    def end_session(self, notice: str, err: DiosError) -> None:
        """Forget the session's principal; its subscriptions end; tell the client."""
        self.token = ""
        self.principal = None
        for sub in self.subs.values():
            sub.close()
        self.subs.clear()
        self.notify(notice, [error_object(err, self.language)])

    async def who(self, meta: dict[str, Any]) -> Principal:
        """The caller of one request: ``meta.token`` verified for it, else the session."""
        token = meta.get("token")
        if token is not None and not isinstance(token, str):
            raise DiosError(INVALID_FIELD, "token must be a string", field="token")
        if token and token != self.token:
            return await self.verify(token)
        principal = self.principal
        if principal is None:
            raise DiosError(NOT_AUTHENTICATED)
        if principal.expires and time.time() >= principal.expires:
            self.end_session("session.expired", DiosError(TOKEN_EXPIRED))
            raise DiosError(TOKEN_EXPIRED)
        if self.server.services.auth.revision(principal.uid) != self.revision:
            # changed since the session began and the notice has not arrived yet
            try:
                principal = await self.become(self.token)
            except DiosError as err:
                self.end_session("session.revoked", err)
                raise
        return principal

    async def on_auth_change(self, uid: int, reason: str) -> None:
        if self.principal is None or self.principal.uid != uid or self.closed:
            return
        try:
            await self.become(self.token)
        except DiosError as err:
            self.end_session("session.revoked", err)
            log.info("rpc session of %s ended (%s)", self.peer, reason)

    def context(self, meta: dict[str, Any], language: str,
                principal: Principal | None) -> Context:
        return Context(services=self.server.services, token=str(meta.get("token") or self.token),
                       language=language,
                       product=str(meta.get("product") or self.product or ""),
                       source=str(meta.get("source") or self.source or "RPC"),
                       transport="rpc", peer=self.peer, claims=principal)

    # --- calls ---------------------------------------------------------------------------
    async def invoke(self, method: str, args: dict[str, Any], meta: dict[str, Any],
                     language: str) -> Any:
        server = self.server
        handler = server.connection_methods.get(method)
        if handler is not None:
            return await handler(self, args, meta, language)
        op = server.operations.get(method)
        if op is None:
            raise DiosError(METHOD_NOT_FOUND, method[:100])
        principal = None
        if op.permission is not None:
            principal = await self.who(meta)
            server.services.auth.authorize(principal, op.permission)
        ctx = self.context(meta, language, principal)
        if op.name == "task.device_command":
            fast = await self.device_command(op, ctx, args)
            if fast is not None:
                return fast
        lane = server.lane_for(op, args)
        async with self.blocking:
            result = await lane.run(partial(dispatch, access_checked=True), op, ctx, args)
        if method == "auth.login" and isinstance(result, dict) and result.get("token"):
            await self.become(result["token"])
        if isinstance(result, Blob):
            return blob_message(result)
        return result

    async def device_command(self, op: Operation, ctx: Context, args: dict[str, Any]) -> Any:
        """A device command without a thread: queued on its device, awaited on the loop.
        ``None`` when it must take the blocking path (the generator's Expose)."""
        from dios.task.service import command_permission

        task = self.server.services.task
        clean = validate(op, args)
        clean.pop(REPLY_FLAG, None)
        needed = command_permission(clean["reqName"])
        if needed != "device.action":
            self.server.services.auth.authorize(ctx.claims, needed)
        req = {k: clean[k] for k in REQUEST_FIELDS if k in clean}
        try:
            queued = task.submit_device_command(req)
            if queued is None:
                return None
            request, fut = queued
            if fut.done():  # a query the idle device answered at once
                reply = fut.result()
            else:
                reply = await self.device_reply_of(request, fut, task.command_timeout)
            reply.raise_for_error()
        except DiosError as err:
            raise ReplyFailure(err, refused_reply(ctx, req, err)) from err
        return typed(op.full_reply, device_reply(ctx, reply))


    async def device_reply_of(self, request: Any, fut: Any, wait: float) -> Any:
        """The reply in ``fut`` (a device's future), or the bus's TIMEOUT after ``wait`` s."""
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future = loop.create_future()

        def settled(_: Any) -> None:
            if not arrived.done():
                arrived.set_result(True)

        def from_device(f: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settled, f)

        fut.add_done_callback(from_device)
        timer = loop.call_later(wait, settled, None)
        try:
            await arrived
        finally:
            timer.cancel()
        if fut.done() and not fut.cancelled():
            return fut.result()
        return self.server.services.task.give_up_command(request, fut, wait)


# --- connection-level methods ------------------------------------------------------------------
async def _authenticate(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                        language: str) -> Any:
    token = args.get("token")
    if not isinstance(token, str) or not token:
        raise DiosError(NOT_AUTHENTICATED)
    principal = await conn.become(token)
    for key in ("language", "product", "source"):
        if isinstance(args.get(key), str):
            setattr(conn, key, language_of(args[key]) if key == "language" else args[key][:64])
    return {"uid": principal.uid, "name": principal.name, "role": principal.role,
            "expires": int(principal.expires)}


async def _subscribe(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                     language: str) -> Any:
    server = conn.server
    principal = await conn.who(meta)
    server.services.auth.authorize(principal, "task.read")
    pattern, kinds = check_subscription(args.get("pattern"), args.get("kinds"))
    client = check_client(args.get("reqClientID"))
    frames = args.get("frames", False)
    if not isinstance(frames, bool):
        raise DiosError(INVALID_FIELD, "frames must be a boolean", field="frames")
    resume = args.get("resume_from")
    if resume is not None and (not isinstance(resume, int) or isinstance(resume, bool)
                               or resume < 0):
        raise DiosError(INVALID_FIELD, "resume_from must be a seq (integer >= 0)",
                        field="resume_from")
    images = images_allowed(principal)
    if frames and not images:
        raise DiosError(FORBIDDEN, "raw frames need the event.images permission")
    if len(conn.subs) >= server.max_subscriptions:
        raise DiosError(LIMIT_REACHED, f"at most {server.max_subscriptions} subscriptions "
                        "per connection")
    if server.feed.owned_by(principal.uid) >= server.max_subscriptions_per_user:
        raise DiosError(LIMIT_REACHED, f"at most {server.max_subscriptions_per_user} "
                        "subscriptions per user")
    sub, report = server.feed.subscribe(pattern, kinds, client, frames=frames, images=images,
                                        owner=principal.uid, sink=conn.deliver,
                                        resume_from=resume)
    conn.subs[sub.sid] = sub
    return {"subscription": sub.sid, "pattern": pattern, **report}


async def _unsubscribe(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                       language: str) -> Any:
    sid = args.get("subscription")
    sub = conn.subs.pop(sid, None) if isinstance(sid, int) else None
    if sub is None:
        raise DiosError(INVALID_FIELD, "no such subscription", field="subscription")
    sub.close()
    return {}


async def _methods(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                   language: str) -> Any:
    server = conn.server
    if args.get("describe") is True:
        return server.methods_described
    return server.methods_list


async def _hello(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                 language: str) -> Any:
    return handshake(args)


async def _describe(conn: _Connection, args: dict[str, Any], meta: dict[str, Any],
                    language: str) -> Any:
    return conn.server.catalogue


class RpcServer:
    """The MessagePack-RPC listener. ``await start()``, then ``await stop()``."""

    CONNECTION_METHODS: dict[str, Callable[..., Any]] = {
        "session.authenticate": _authenticate,
        "events.subscribe": _subscribe,
        "events.unsubscribe": _unsubscribe,
        "rpc.methods": _methods,
        "rpc.describe": _describe,
        "rpc.hello": _hello,
    }

    def __init__(self, services: Services, operations: list[Operation] | dict[str, Operation],
                 hub: EventHub, host: str = "127.0.0.1", port: int = 0, *,
                 max_message: int = 64 * 1024 * 1024, max_inflight: int = 32,
                 max_blocking: int = 4, max_pending_events: int = 1024,
                 max_pending_bytes: int = 64 << 20, write_timeout: float = 10.0,
                 workers: int = 16, device_workers: int = 4, lane_queue: int = 256,
                 max_connections: int = 256, max_connections_per_address: int = 64,
                 idle_timeout: float = 300.0, auth_timeout: float = 30.0,
                 max_subscriptions: int = 32, max_subscriptions_per_user: int = 128,
                 retention: float = 300.0, max_request_ids: int = 4096) -> None:
        self.services = services
        ops = operations.values() if isinstance(operations, dict) else operations
        self.operations = {op.name: op for op in ops}
        self.connection_methods = dict(self.CONNECTION_METHODS)
        self.hub = hub
        self.host = host
        self.port = port
        self.max_message = max_message
        self.max_inflight = max_inflight
        self.max_blocking = max_blocking
        self.max_pending_events = max_pending_events
        self.max_pending_bytes = max_pending_bytes
        self.write_timeout = write_timeout
        self.workers = workers
        self.device_workers = device_workers
        self.lane_queue = lane_queue
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.max_subscriptions = max_subscriptions
        self.max_subscriptions_per_user = max_subscriptions_per_user
        self.retention = retention
        self.max_request_ids = max_request_ids
        self.lanes: dict[str, Lane] = {}
        self.freed_large = False
        self.feed: EventFeed = None  # type: ignore[assignment]  # made in start()
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Connection] = set()
        self._by_address: collections.Counter[str] = collections.Counter()
        self.request_ids = Once(retention, max_request_ids, keep=_not_a_file)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task | None = None
        self.catalogue = catalogue(self.operations.values(), CONTRACT_METHODS)
        names = sorted(self.operations) + list(self.connection_methods)
        self.methods_list = {"methods": names}
        self.methods_described = {
            "methods": names,
            "descriptions": {name: describe(op) for name, op in sorted(self.operations.items())},
            "schemas": self.catalogue["schemas"]}

    # --- lanes ------------------------------------------------------------------------------
    def lane(self, name: str) -> Lane:
        lane = self.lanes.get(name)
        if lane is None:
            workers = (self.device_workers if name.startswith("device:")
                       else self.workers if name == "general" else 4)
            lane = self.lanes[name] = Lane(name, workers, self.lane_queue)
        return lane

    def lane_for(self, op: Operation, args: dict[str, Any]) -> Lane:
        """Where a blocking call runs: its device's lane, exposures, logins, or the rest."""
        if op.name in ("task.device_command", "task.device_action"):
            uri = args.get("deviceUri")
            engine = self.services.engine
            known = engine.bus.devices if engine is not None else {}
            if isinstance(uri, str) and uri in known:
                return self.lane(f"device:{uri}")
        if op.name in ("task.expose", "task.select_image", "task.deselect_image",
                       "task.upload_png"):
            return self.lane("exposure")
        if op.tag == "auth":
            return self.lane("auth")
        return self.lane("general")

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self.feed = EventFeed.for_loop(self.hub, self._loop, retention=self.retention)
        self.services.auth.add_listener(self._auth_changed)
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=1 << 20)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self._housekeeping = self._loop.create_task(self._sweep())
        log.info("MessagePack-RPC listening on %s:%d", self.host, self.port)
        return self.host, self.port

    def _auth_changed(self, uid: int, reason: str) -> None:
        """From the auth service (any thread): a user's password, role or account changed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def apply() -> None:
            for conn in list(self._conns):
                if conn.principal is not None and conn.principal.uid == uid:
                    conn.spawn(conn.on_auth_change(uid, reason))

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(apply)

    async def _sweep(self) -> None:
        """Close connections that never authenticated or sit idle (every second)."""
        while True:
            await asyncio.sleep(min(1.0, self.auth_timeout / 4, self.idle_timeout / 4))
            if self.freed_large:
                self.freed_large = False
                release_memory()
            now = time.monotonic()
            for conn in list(self._conns):
                if conn.closed or conn.closing:
                    continue
                if not conn.ever_authenticated and now - conn.opened > self.auth_timeout:
                    conn.spawn(conn.fatal(DiosError(
                        NOT_AUTHENTICATED, f"no login within {self.auth_timeout:g} s")))
                elif (not conn.subs and not conn.tasks
                      and now - conn.last_activity > self.idle_timeout):
                    conn.spawn(conn.fatal(DiosError(
                        LIMIT_REACHED, f"idle for {self.idle_timeout:g} s")))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(Exception):
            writer.transport.set_write_buffer_limits(high=1 << 20)
        if len(self._conns) >= self.max_connections:
            await self._refuse(conn, f"at most {self.max_connections} connections")
            return
        if self._by_address[conn.address] >= self.max_connections_per_address:
            await self._refuse(conn, f"at most {self.max_connections_per_address} connections "
                               "per address")
            return
        self._conns.add(conn)
        self._by_address[conn.address] += 1
        writer_task = asyncio.get_running_loop().create_task(conn.write_loop())
        try:
            await conn.read_loop()
            # let responses to requests already received go out before closing
            while conn.tasks and not conn.closed:
                await asyncio.wait(set(conn.tasks), timeout=self.write_timeout)
                if conn.tasks:
                    break
            deadline = time.monotonic() + 1.0
            while not conn.closed and (conn.out.responses or conn.out.notes):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass
        finally:
            conn.close()
            writer_task.cancel()
            self._conns.discard(conn)
            self._by_address[conn.address] -= 1
            if self._by_address[conn.address] <= 0:
                del self._by_address[conn.address]

    @staticmethod
    async def _refuse(conn: _Connection, why: str) -> None:
        err = error_object(DiosError(LIMIT_REACHED, why), "en")
        with contextlib.suppress(Exception):
            conn.writer.write(conn.pack([NOTIFICATION, "error", [err]]))
            await asyncio.wait_for(conn.writer.drain(), 1.0)
        conn.abort()

    @property
    def connections(self) -> int:
        """Open connections."""
        return len(self._conns)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; let running requests finish (at most ``grace`` s); close."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        with contextlib.suppress(Exception):
            self.services.auth.remove_listener(self._auth_changed)
        if self._server is not None:
            self._server.close()
            deadline = asyncio.get_running_loop().time() + grace
            while any(c.tasks or c.out.responses for c in self._conns if not c.closed):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.02)
            for conn in list(self._conns):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        if self.feed is not None:
            self.feed.release()
        for lane in self.lanes.values():
            lane.close()
