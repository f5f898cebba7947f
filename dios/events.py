"""Event publication with per-subscriber queues, so no subscriber can stall the bus.

Each subscription owns a bounded queue and a delivery thread (a *tap*, for bridges that
fan out themselves, runs a non-blocking callback on the publishing thread instead).
``publish`` never blocks: when a slow subscriber's queue is full the oldest event is
dropped and counted (``Subscription.dropped``). A subscriber that raises is logged and counted
(``Subscription.errors``) and keeps receiving.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

from dios.messages import Event
from dios.uri import matches

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]
_STOP = object()


class Subscription:
    """A live subscription; ``close()`` it when done."""

    def __init__(self, hub: EventHub, pattern: str, kinds: Iterable[str] | None,
                 handler: Handler | None, maxsize: int, direct: bool = False) -> None:
        self.hub = hub
        self.pattern = pattern
        self.kinds = frozenset(kinds) if kinds else None
        self.handler = handler
        self.direct = direct
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.errors = 0
        self.closed = False
        self._thread: threading.Thread | None = None
        if handler is not None and not direct:
            self._thread = threading.Thread(target=self._deliver, daemon=True,
                                            name=f"dios-sub-{pattern}")
            self._thread.start()

    def wants(self, event: Event) -> bool:
        return (self.kinds is None or event.kind in self.kinds) and matches(self.pattern, event.deviceUri)

    def offer(self, event: Event) -> None:
        """Queue ``event`` without blocking, dropping the oldest if full (a tap: hand it to
        the callback at once)."""
        if self.direct:
            if event is not _STOP:
                try:
                    self.handler(event)  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - a tap's bug must not reach the publisher
                    self.errors += 1
                    log.exception("event tap %s raised", self.pattern)
            return
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> Event | None:
        """For pull subscriptions (no handler): the next event, or None on timeout."""
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if item is _STOP else item

    def _deliver(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            try:
                self.handler(item)  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop delivery
                self.errors += 1
                log.exception("event subscriber %s raised", self.pattern)

    def close(self, drain: float = 0.0) -> None:
        """Stop receiving; with ``drain`` > 0, wait up to that many seconds for the events
        already queued to be delivered."""
        if not self.closed:
            self.closed = True
            self.hub._remove(self)
            self.offer(_STOP)  # type: ignore[arg-type]
        t = self._thread
        if drain > 0 and t is not None and t is not threading.current_thread():
            t.join(drain)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of device events to subscriptions filtered by URI pattern and kind."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0

    def subscribe(self, pattern: str = "DIOS/DEVICE/*", handler: Handler | None = None,
                  kinds: Iterable[str] | None = None, maxsize: int = 4096) -> Subscription:
        """Subscribe to events whose URI matches ``pattern``.

        With a ``handler``, events are delivered on the subscription's own thread; without,
        the caller pulls them with :meth:`Subscription.get`.
        """
        sub = Subscription(self, pattern, kinds, handler, maxsize)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def tap(self, pattern: str, callback: Handler,
            kinds: Iterable[str] | None = None) -> Subscription:
        """A subscription whose ``callback`` runs on the publishing thread, at once, with
        no thread or queue of its own. The callback must never block: it hands the event
        on (for example to an event loop with ``call_soon_threadsafe``). For bridges that
        fan out to many clients themselves; everything else uses :meth:`subscribe`."""
        sub = Subscription(self, pattern, kinds, callback, 1, direct=True)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every interested subscription; never blocks."""
        self.published += 1
        for sub in self._subs:  # copy-on-write list: safe without the lock
            if sub.wants(event):
                sub.offer(event)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()
