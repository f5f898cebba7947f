"""The WebSocket event stream at ``/api/v1/events``.

Authentication: ``?token=<jwt>``, an ``Authorization: Bearer`` header, or a first message
``{"type": "auth", "token": "..."}``. A bad token gets an error message and close code
4401; a principal without the ``task.read`` permission gets ``FORBIDDEN`` and close code
4403. Then the client sends::

    {"type": "subscribe", "pattern": "DIOS/DEVICE/*", "kinds": ["state", "param"]}

(``pattern`` is a URI pattern with shell wildcards, or a topic: ``device``, ``task``,
``study``, ``all``; ``kinds`` is optional; ``reqClientID``, optional, keeps only the events
of that client's commands) and receives ``{"type": "subscribed", "subscription": n,
"pattern": ...}``, then ``{"type": "event", "subscription": n, "uri", "kind", "name",
"value", "data", "reqTransaction", "reqClientID", "timestamp", "seq"}`` for every matching
event: device state and parameter changes, device replies, exposure progress
(``DIOS/TASK/Exposure``), image ready (``DIOS/TASK/Image``), study changes
(``DIOS/STUDY/<study_id>``). ``{"type": "unsubscribe", "subscription": n}`` stops one.

Device replies: every reply of a device to a command (from any client, over any channel,
or from the engine itself) is an event of kind ``reply`` on the device's URI: ``name`` =
reqName, ``value`` = the result code, ``data`` = ``{deviceUri, reqName, reqTransaction,
reqClientID, code, description, solution, result, data}`` (``result``: the value the device
accepted, e.g. ``"125"`` for ``SetParam_MA 130``; ``late: true`` for the outcome of a
command whose requester was already answered ``TIMEOUT``), with the request's
``reqTransaction`` and ``reqClientID``. They are device data, readable with ``task.read``
like every event here. To get only the replies to one's own commands::

    {"type": "subscribe", "pattern": "device", "kinds": ["reply"], "reqClientID": "console-1"}

Events carry ``sseq``, the subscription's own sequence (1, 2, 3 ... over every event that
matched it): a gap means events were dropped, and before the next event the client gets
``{"type": "dropped", "subscription": n, "dropped": k, "total_dropped": t, "last_seq": s}``.
A subscribe message may carry ``resume_from`` (the last global ``seq`` seen, e.g. before a
reconnect): the retained events after it are sent first, and ``subscribed`` reports
``replayed``, ``complete`` (false when some were no longer retained) and ``oldest`` (see
:mod:`dios.shim.feed`).

Patient-bearing events (studies, stored images, frames) reach only principals with the
``event.images`` permission (never the guest token); pixels never travel on this stream.
Limits: ``max_subscriptions`` per connection and ``max_subscriptions_per_user`` over all
of a user's connections (``LIMIT_REACHED``); a connection must authenticate within
``auth_timeout`` seconds; events queued for a client are bounded by count and bytes
(oldest dropped and counted) and a client that takes nothing for ``write_timeout`` seconds
is closed (code 1008). When the user's password changes or the account is disabled or
deleted, the stream gets ``{"type": "error", ...}`` with the token's code and closes (4401);
a role change re-applies the new role to the subscriptions.

Errors come as ``{"type": "error", "code", "description", "solution"}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from dios.codes import (
    FORBIDDEN,
    INVALID_FIELD,
    LIMIT_REACHED,
    MALFORMED_REQUEST,
    NOT_AUTHENTICATED,
    DiosError,
)
from dios.shim.dispatch import Context, authenticate
from dios.shim.envelope import internal_error, language_of
from dios.shim.events import check_client, check_subscription
from dios.shim.feed import EventFeed, FeedSubscription, Rendered, images_allowed

if TYPE_CHECKING:
    from dios.auth.roles import Principal
    from dios.events import EventHub
    from dios.shim.api import Services


log = logging.getLogger("dios.shim.ws")

MAX_MESSAGE = 64 * 1024
MAX_SUBSCRIPTIONS = 32


class _Stream:
    """One WebSocket client: its session, subscriptions and bounded outgoing queue."""

    def __init__(self, socket: EventSocket, ws: WebSocket, language: str) -> None:
        self.socket = socket
        self.ws = ws
        self.language = language
        self.principal: Principal | None = None
        self.token = ""
        self.subs: dict[int, FeedSubscription] = {}
        self.queue: collections.deque[tuple[int, str]] = collections.deque()
        self.queued_bytes = 0
        self.drops: dict[int, int] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self.close_code = 1000

    def error(self, err: DiosError) -> dict[str, Any]:
        return {"type": "error", "code": err.code.hex,
                "description": err.description(self.language),
                "solution": err.solution(self.language)}

    # --- outgoing ---------------------------------------------------------------------------
    def put(self, sid: int, text: str) -> None:
        """Queue one message (sid 0: a reply or notice, never dropped for room)."""
        if self.closed:
            return
        sock = self.socket
        while self.queue and (len(self.queue) >= sock.max_pending
                              or self.queued_bytes + len(text) > sock.max_pending_bytes):
            victim = next((i for i, (s, _) in enumerate(self.queue) if s), None)
            if victim is None:
                break
            old_sid, old = self.queue[victim]
            del self.queue[victim]
            self.queued_bytes -= len(old)
            self.count_drop(old_sid)
        self.queue.append((sid, text))
        self.queued_bytes += len(text)
        self.wake.set()

    def send_json(self, msg: dict[str, Any]) -> None:
        self.put(0, json.dumps(msg, default=str))

    def count_drop(self, sid: int) -> None:
        self.drops[sid] = self.drops.get(sid, 0) + 1
        sub = self.subs.get(sid)
        if sub is not None:
            sub.dropped += 1

    def deliver(self, sub: FeedSubscription, rendered: Rendered) -> None:
        """The feed's sink."""
        msg = {"type": "event", "subscription": sub.sid, "sseq": sub.sseq,
               **rendered.message(binary=False)}
        self.put(sub.sid, json.dumps(msg, default=str))

    async def sender(self) -> None:
        timeout = self.socket.write_timeout
        while not self.closed:
            await self.wake.wait()
            self.wake.clear()
            while self.queue or self.drops:
                if self.drops:
                    drops, self.drops = self.drops, {}
                    for sid, n in drops.items():
                        sub = self.subs.get(sid)
                        if sub is not None:
                            await self._send(json.dumps({
                                "type": "dropped", "subscription": sid, "dropped": n,
                                "total_dropped": sub.dropped, "last_seq": sub.sseq}), timeout)
                    continue
                _, text = self.queue.popleft()
                self.queued_bytes -= len(text)
                await self._send(text, timeout)

    async def _send(self, text: str, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.ws.send_text(text), timeout)
        except TimeoutError:
            log.warning("websocket client takes nothing for %g s; closed", timeout)
            self.shut(1008)
            raise asyncio.CancelledError from None

    def shut(self, code: int) -> None:
        """End the stream: subscriptions closed, queue freed."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        for sub in self.subs.values():
            sub.close()
        self.subs.clear()
        self.queue.clear()
        self.queued_bytes = 0
        self.wake.set()

    # --- session ----------------------------------------------------------------------------
    async def authorize(self, token: str) -> None:
        ctx = Context(self.socket.services, token=token, language=self.language, transport="ws")
        loop = asyncio.get_running_loop()
        principal = await loop.run_in_executor(None, authenticate, ctx)
        self.socket.services.auth.authorize(principal, "task.read")
        self.principal = principal
        self.token = token
        images = images_allowed(self.principal)
        for sub in self.subs.values():
            sub.images = images

    async def on_auth_change(self) -> None:
        try:
            await self.authorize(self.token)
        except DiosError as err:
            self.send_json(self.error(err))
            self.shut(4403 if err.code == FORBIDDEN else 4401)

    def subscribe(self, msg: dict[str, Any]) -> None:
        sock = self.socket
        if len(self.subs) >= sock.max_subscriptions:
            raise DiosError(LIMIT_REACHED, f"at most {sock.max_subscriptions} subscriptions "
                            "per connection")
        assert self.principal is not None
        if sock.feed.owned_by(self.principal.uid) >= sock.max_subscriptions_per_user:
            raise DiosError(LIMIT_REACHED, f"at most {sock.max_subscriptions_per_user} "
                            "subscriptions per user")
        pattern, kinds = check_subscription(msg.get("pattern"), msg.get("kinds"))
        client = check_client(msg.get("reqClientID"))
        resume = msg.get("resume_from")
        if resume is not None and (not isinstance(resume, int) or isinstance(resume, bool)
                                   or resume < 0):
            raise DiosError(INVALID_FIELD, "resume_from must be a seq (integer >= 0)",
                            field="resume_from")
        if msg.get("frames"):
            raise DiosError(INVALID_FIELD, "frames travel over MessagePack-RPC only",
                            field="frames")
        # the reply goes out before the replayed events
        reply_at = len(self.queue)
        sub, report = sock.feed.subscribe(pattern, kinds, client, frames=False,
                                          images=images_allowed(self.principal), owner=self.principal.uid,
                                          sink=self.deliver, resume_from=resume)
        self.subs[sub.sid] = sub
        text = json.dumps({"type": "subscribed", "subscription": sub.sid, "pattern": pattern,
                           **report})
        self.queue.insert(reply_at, (0, text))
        self.queued_bytes += len(text)
        self.wake.set()


class EventSocket:
    """ASGI endpoint for the event stream."""

    def __init__(self, services: Services, hub: EventHub, max_pending: int = 1024, *,
                 max_pending_bytes: int = 16 << 20, write_timeout: float = 10.0,
                 auth_timeout: float = 30.0, max_subscriptions: int = MAX_SUBSCRIPTIONS,
                 max_subscriptions_per_user: int = 128) -> None:
        self.services = services
        self.hub = hub
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.write_timeout = write_timeout
        self.auth_timeout = auth_timeout
        self.max_subscriptions = max_subscriptions
        self.max_subscriptions_per_user = max_subscriptions_per_user
        self.feed: EventFeed | None = None
        self.streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ws = WebSocket(scope, receive, send)
        await self.serve(ws)

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self.feed is None or self._loop is not loop:
            self._loop = loop
            self.feed = EventFeed.for_loop(self.hub, loop)
        if not self._listening:
            self._listening = True
            self.services.auth.add_listener(self._auth_changed)

    def _auth_changed(self, uid: int, reason: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def apply() -> None:
            for stream in list(self.streams):
                if stream.principal is not None and stream.principal.uid == uid:
                    loop.create_task(stream.on_auth_change())

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(apply)

    async def serve(self, ws: WebSocket) -> None:
        self._attach()
        await ws.accept()
        language = language_of(ws.headers.get("language") or ws.query_params.get("language"))
        stream = _Stream(self, ws, language)
        self.streams.add(stream)
        auth = ws.headers.get("authorization", "")
        token = ws.query_params.get("token") or (auth[7:].strip()
                                                 if auth[:7].lower() == "bearer " else "")
        sender = asyncio.get_running_loop().create_task(stream.sender())
        opened = time.monotonic()
        try:
            if token:
                await stream.authorize(token)
            while not stream.closed:
                wait = None
                if stream.principal is None:
                    wait = max(0.0, self.auth_timeout - (time.monotonic() - opened))
                try:
                    text = await asyncio.wait_for(ws.receive_text(), wait)
                except TimeoutError:
                    raise DiosError(NOT_AUTHENTICATED,
                                    f"no token within {self.auth_timeout:g} s") from None
                try:
                    await self.handle(stream, text)
                except DiosError as err:
                    if stream.principal is None and err.code.value >> 16 == 0x02:
                        raise  # authentication failed: the stream closes
                    stream.send_json(stream.error(err))
        except DiosError as err:  # authentication: tell, then close
            stream.send_json(stream.error(err))
            await self._flush(stream)
            stream.shut(4403 if err.code == FORBIDDEN else 4401)
        except (WebSocketDisconnect, asyncio.CancelledError):
            stream.shut(1000)
        except Exception as exc:  # noqa: BLE001 - logged; the client only sees INTERNAL
            stream.send_json(stream.error(internal_error(exc, "ws")))
            await self._flush(stream)
            stream.shut(1011)
        finally:
            stream.shut(stream.close_code)
            sender.cancel()
            self.streams.discard(stream)
            with contextlib.suppress(Exception):
                await ws.close(code=stream.close_code)

    @staticmethod
    async def _flush(stream: _Stream) -> None:
        deadline = time.monotonic() + 2.0
        while stream.queue and time.monotonic() < deadline and not stream.closed:
            await asyncio.sleep(0.01)

    async def handle(self, stream: _Stream, text: str) -> None:
        if len(text) > MAX_MESSAGE:
            raise DiosError(MALFORMED_REQUEST, "message too long")
        try:
            msg = json.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError):
            raise DiosError(MALFORMED_REQUEST, "invalid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise DiosError(MALFORMED_REQUEST, 'messages are {"type": ...} objects')
        kind = msg["type"]
        if kind == "auth":
            tok = msg.get("token")
            if not isinstance(tok, str) or not tok:
                raise DiosError(NOT_AUTHENTICATED)
            try:
                await stream.authorize(tok)
            except DiosError:
                stream.principal = None
                raise
            stream.send_json({"type": "authenticated"})
            return
        if stream.principal is None:
            raise DiosError(NOT_AUTHENTICATED)
        if kind == "subscribe":
            stream.subscribe(msg)
        elif kind == "unsubscribe":
            sid = msg.get("subscription")
            sub = stream.subs.pop(sid, None) if isinstance(sid, int) else None
            if sub is None:
                raise DiosError(INVALID_FIELD, "no such subscription", field="subscription")
            sub.close()
            stream.send_json({"type": "unsubscribed", "subscription": sid})
        elif kind == "ping":
            stream.send_json({"type": "pong"})
        else:
            raise DiosError(MALFORMED_REQUEST, f"unknown message type {kind[:40]!r}")
