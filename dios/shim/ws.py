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

Errors come as ``{"type": "error", "code", "description", "solution"}``. A client that
does not read loses the oldest events first; the server never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from dios.codes import FORBIDDEN, INVALID_FIELD, MALFORMED_REQUEST, NOT_AUTHENTICATED, DiosError
from dios.shim.dispatch import Context, authenticate
from dios.shim.envelope import internal_error, language_of
from dios.shim.events import AsyncSubscription, check_client, check_subscription, event_message

if TYPE_CHECKING:
    from dios.events import EventHub
    from dios.shim.api import Services


log = logging.getLogger("dios.shim.ws")

MAX_MESSAGE = 64 * 1024
MAX_SUBSCRIPTIONS = 32


class EventSocket:
    """ASGI endpoint for the event stream."""

    def __init__(self, services: Services, hub: EventHub, max_pending: int = 1024) -> None:
        self.services = services
        self.hub = hub
        self.max_pending = max_pending

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ws = WebSocket(scope, receive, send)
        await self.serve(ws)

    @staticmethod
    def _error(err: DiosError, language: str) -> dict[str, Any]:
        return {"type": "error", "code": err.code.hex, "description": err.description(language),
                "solution": err.solution(language)}

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        language = language_of(ws.headers.get("language") or ws.query_params.get("language"))
        auth = ws.headers.get("authorization", "")
        token = ws.query_params.get("token") or (auth[7:].strip() if auth[:7].lower() == "bearer " else "")
        loop = asyncio.get_running_loop()
        subs: dict[int, tuple[AsyncSubscription, asyncio.Task]] = {}
        next_id = 1
        authed = False

        async def authorize(tok: str) -> bool:
            ctx = Context(self.services, token=tok, language=language, transport="ws")
            try:
                claims = await loop.run_in_executor(None, authenticate, ctx)
                self.services.auth.authorize(claims, "task.read")
                return True
            except DiosError as err:
                await ws.send_json(self._error(err, language))
                await ws.close(code=4403 if err.code == FORBIDDEN else 4401)
                return False

        async def pump(sid: int, sub: AsyncSubscription) -> None:
            while True:
                ev = await sub.get()
                await ws.send_text(json.dumps({"type": "event", "subscription": sid,
                                               **event_message(ev)}, default=str))

        try:
            if token:
                if not await authorize(token):
                    return
                authed = True
            while True:
                text = await ws.receive_text()
                try:
                    if len(text) > MAX_MESSAGE:
                        raise DiosError(MALFORMED_REQUEST, "message too long")
                    try:
                        msg = json.loads(text)
                    except json.JSONDecodeError:
                        raise DiosError(MALFORMED_REQUEST, "invalid JSON") from None
                    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                        raise DiosError(MALFORMED_REQUEST, 'messages are {"type": ...} objects')
                    kind = msg["type"]
                    if kind == "auth":
                        tok = msg.get("token")
                        if not isinstance(tok, str) or not tok:
                            raise DiosError(NOT_AUTHENTICATED)
                        if not await authorize(tok):
                            return
                        authed = True
                        await ws.send_json({"type": "authenticated"})
                        continue
                    if not authed:
                        await ws.send_json(self._error(DiosError(NOT_AUTHENTICATED), language))
                        await ws.close(code=4401)
                        return
                    if kind == "subscribe":
                        if len(subs) >= MAX_SUBSCRIPTIONS:
                            raise DiosError(INVALID_FIELD, "too many subscriptions")
                        pattern, kinds = check_subscription(msg.get("pattern"), msg.get("kinds"))
                        client = check_client(msg.get("reqClientID"))
                        sub = AsyncSubscription(self.hub, loop, pattern, kinds, self.max_pending,
                                                client)
                        sid = next_id
                        next_id += 1
                        subs[sid] = (sub, loop.create_task(pump(sid, sub)))
                        await ws.send_json({"type": "subscribed", "subscription": sid,
                                            "pattern": pattern})
                    elif kind == "unsubscribe":
                        entry = subs.pop(msg.get("subscription"), None)
                        if entry is None:
                            raise DiosError(INVALID_FIELD, "no such subscription")
                        entry[0].close()
                        entry[1].cancel()
                        await ws.send_json({"type": "unsubscribed",
                                            "subscription": msg.get("subscription")})
                    elif kind == "ping":
                        await ws.send_json({"type": "pong"})
                    else:
                        raise DiosError(MALFORMED_REQUEST, f"unknown message type {kind[:40]!r}")
                except DiosError as err:
                    await ws.send_json(self._error(err, language))
        except WebSocketDisconnect:
            pass
        except Exception as exc:  # noqa: BLE001 - logged; the client only sees INTERNAL
            err = internal_error(exc, "ws")
            with contextlib.suppress(Exception):
                await ws.send_json(self._error(err, language))
                await ws.close(code=1011)
        finally:
            for sub, task in subs.values():
                sub.close()
                task.cancel()
