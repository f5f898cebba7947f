"""Guards on the HTTP listener: a cap on open connections and header, body and idle timeouts.

uvicorn reads requests with h11 and has a keep-alive timeout of its own, but nothing that
stops a client sending its request head or body slowly (a byte every few seconds keeps a
connection, a file descriptor and its buffers forever) and no cap on open connections.
:class:`GuardedH11Protocol` is uvicorn's h11 protocol with those guards; uvicorn builds one
per connection from the class :func:`guarded_protocol` returns (``uvicorn.Config(http=...)``).

- **Connection cap**: a connection accepted while ``max_connections`` are open (HTTP and
  upgraded WebSocket ones alike: uvicorn keeps both in one set) is answered at once with a
  429 ``LIMIT_REACHED`` envelope and ``Connection: close``, its sending side shut, what it
  still sends read and dropped for a short grace (so that the client reads the answer
  instead of a reset), then closed. At most as many refused connections linger as the cap;
  beyond that they are reset at once.
- **Header timeout**: the request head must be complete ``header_timeout`` seconds after
  the connection was made (first request) or after the first byte of the next request
  (keep-alive); trickling bytes does not extend it.
- **Body timeout**: a request body may pause at most ``body_timeout`` seconds between
  chunks and must be complete within ``BODY_DEADLINE_FACTOR`` times that after its head.
  A pause while the application is not reading (flow control paused the socket) is not
  the client's and does not count against the pause limit.
- **Idle timeout**: uvicorn's keep-alive timeout (``timeout_keep_alive``), set from the same
  :class:`ListenerLimits` by :meth:`ListenerLimits.uvicorn_options`.

A timed-out connection is answered 408 with a ``TIMEOUT`` envelope (unless its response
had started) and closed; a request the application was still reading sees the client as
gone. :class:`ListenerStats` counts what the guards did.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from dios.codes import LIMIT_REACHED, TIMEOUT, DiosError
from dios.shim.envelope import failure

#: the whole body of a request must arrive within this many ``body_timeout``\\ s
BODY_DEADLINE_FACTOR = 4.0
#: seconds a refused connection is drained before it is closed
REFUSE_LINGER = 2.0


@dataclass(frozen=True)
class ListenerLimits:
    """The listener's limits (the ``[http]`` settings of the same names)."""

    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")

    def uvicorn_options(self, stats: ListenerStats | None = None) -> dict[str, Any]:
        """Keyword arguments of ``uvicorn.Config`` that apply these limits."""
        return {"http": guarded_protocol(self, stats or ListenerStats()),
                "timeout_keep_alive": self.idle_timeout}


@dataclass
class ListenerStats:
    """What the guards did since the listener started (read from any thread)."""

    refused: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    lingering: int = 0
    _refusing: set[Any] = field(default_factory=set, repr=False)

    def snapshot(self) -> dict[str, int]:
        return {"refused": self.refused, "header_timeouts": self.header_timeouts,
                "body_timeouts": self.body_timeouts, "lingering": self.lingering}


def raw_reply(status: int, err: DiosError, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.1 response carrying ``err``'s envelope, closing the connection."""
    body = json.dumps(failure(err), ensure_ascii=False).encode("utf-8")
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             "content-type: application/json", f"content-length: {len(body)}",
             "connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and header and body timeouts.

    Use :func:`guarded_protocol` to get a class bound to one listener's limits.
    """

    limits: ClassVar[ListenerLimits] = ListenerLimits()
    stats: ClassVar[ListenerStats] = ListenerStats()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = False
        self._guard: asyncio.TimerHandle | None = None
        self._phase = ""            # "", "head" or "body": what the guard timer watches
        self._deadline = 0.0        # head: when it must be complete; body: the whole body
        self._last_data = 0.0       # body: when the last chunk arrived

    # --- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_guard()
        if self.refused:
            if self in self.stats._refusing:
                self.stats.lingering -= 1
                self.stats._refusing.discard(self)
            return
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        if self.refused:
            return False  # the transport closes itself
        return super().eof_received()  # type: ignore[func-returns-value]

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self._phase == "" and self.conn.their_state is h11.IDLE:
            self._watch_head()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()
        if self._phase == "" and self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._watch_head()  # part of a pipelined request head is waiting

    def shutdown(self) -> None:
        self._cancel_guard()
        super().shutdown()

    # --- the cap ---------------------------------------------------------------------------
    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused = True
        self.transport = transport
        self.stats.refused += 1
        if self.stats.lingering >= self.limits.max_connections:
            transport.abort()
            return
        self.stats.lingering += 1
        self.stats._refusing.add(self)
        err = DiosError(LIMIT_REACHED, f"more than {self.limits.max_connections} open "
                                       "connections; retry later")
        transport.write(raw_reply(429, err, (("retry-after", "1"),)))
        if transport.can_write_eof():
            transport.write_eof()
        self._guard = self.loop.call_later(REFUSE_LINGER, transport.abort)

    # --- timers ----------------------------------------------------------------------------
    def _cancel_guard(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        self._phase = ""

    def _watch_head(self) -> None:
        self._cancel_guard()
        self._phase = "head"
        self._deadline = self.loop.time() + self.limits.header_timeout
        self._guard = self.loop.call_at(self._deadline, self._expired)

    def _watch_body(self) -> None:
        self._cancel_guard()
        self._phase = "body"
        now = self.loop.time()
        self._last_data = now
        self._deadline = now + self.limits.body_timeout * BODY_DEADLINE_FACTOR
        self._guard = self.loop.call_at(now + self.limits.body_timeout, self._expired)

    def _follow(self) -> None:
        """Move the guard along with what h11 has parsed so far."""
        if self.transport is None or self.transport.is_closing() \
                or self.transport.get_protocol() is not self:  # closed, or now a WebSocket
            self._cancel_guard()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._watch_body()
            else:
                self._last_data = self.loop.time()
        elif state is not h11.IDLE:
            self._cancel_guard()  # head and body are in; the application has the request
        # IDLE: the head is incomplete, its timer (if armed) keeps running

    def _expired(self) -> None:
        self._guard = None
        if self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == "body" and now < self._deadline:
            stalled_since = self._last_data
            cycle = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                stalled_since = now  # the application is behind (or has not asked), not the client
            wake = min(stalled_since + self.limits.body_timeout, self._deadline)
            if wake > now:
                self._guard = self.loop.call_at(wake, self._expired)
                return
        self._time_out()

    def _time_out(self) -> None:
        phase = self._phase
        self._phase = ""
        if phase == "head":
            self.stats.header_timeouts += 1
            err = DiosError(TIMEOUT, f"the request head did not arrive within "
                                     f"{self.limits.header_timeout:g} s")
        else:
            self.stats.body_timeouts += 1
            err = DiosError(TIMEOUT, f"the request body did not arrive in time (pauses up to "
                                     f"{self.limits.body_timeout:g} s)")
        cycle = self.cycle
        # a head that timed out follows a finished exchange (or none); a body's request
        # is answered unless the application already started its response
        answer = phase == "head" or cycle is None or not cycle.response_started
        if phase == "body" and cycle is not None and not cycle.response_complete:
            cycle.disconnected = True   # the application's reads end, its writes are dropped
            cycle.message_event.set()
        if answer:
            self.transport.write(raw_reply(408, err))
        self.transport.close()


def close_refused(stats: ListenerStats) -> None:
    """Reset the refused connections still lingering (when the listener stops)."""
    for protocol in list(stats._refusing):
        if protocol.transport is not None:
            protocol.transport.abort()


def guarded_protocol(limits: ListenerLimits, stats: ListenerStats) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` class bound to ``limits``, counting into ``stats``
    (pass it as ``uvicorn.Config(http=...)``)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "stats": stats})
