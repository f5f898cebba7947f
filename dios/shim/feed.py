"""The event feed of the listeners: one hub subscription per event loop, fanned out to
every client subscription on that loop, with a retention ring for resuming.

Why: a hub subscription owns a delivery thread, and the hub offers each event to every
subscription on the publishing thread (often a device worker). Client subscriptions are
therefore never hub subscriptions: the HTTP/WebSocket and MessagePack-RPC listeners of a
console share one :class:`EventFeed` per event loop, which takes every event from the hub
on a single delivery thread, hands it to the loop in batches and fans it out there. A
thousand client subscriptions cost the devices nothing and no thread.

Per subscription (:class:`FeedSubscription`):

* filters: URI ``pattern``, ``kinds``, ``reqClientID``, and the images policy: events that
  carry patient data or pixels (:func:`needs_images`) reach only subscriptions whose
  principal has the ``event.images`` permission (re-evaluated when a role changes);
* ``sseq``: a per-subscription sequence, 1, 2, 3 ... over every event that matched, so a
  gap means events were dropped (the listener also tells the client how many);
* the listener's sink receives the matched events; it bounds what it queues by count and
  by bytes and counts what it drops.

Retention and resume: every event (pixels stripped) is kept in a ring per topic
(``DIOS/DEVICE``, ``DIOS/TASK``, ``DIOS/STUDY`` ...) bounded by count, bytes and age. A
subscription made with ``resume_from=<seq>`` (the last ``seq`` the client saw) first gets
the retained events that came after that one, in delivery order, then live events, with
no gap and no duplicate between the two; the reply says whether the replay is
``complete`` (nothing after ``resume_from`` was evicted) and the ``oldest`` seq retained.

Everything here runs on the loop's thread except :meth:`EventFeed._from_hub`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dios.auth.roles import allowed
from dios.messages import Event, EventKind
from dios.shim.events import event_message
from dios.uri import matches

if TYPE_CHECKING:
    from dios.events import EventHub, Subscription

log = logging.getLogger("dios.shim.feed")

#: Event data keys that name a patient (study events and stored images carry them).
PATIENT_KEYS = frozenset({
    "patient_id", "patient_name", "patient_birth_date", "patient_sex", "patient_age",
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "other_patient_ids",
    "owner_name", "ResponsiblePerson"})
#: URIs whose events are about studies and images (patient-bearing by nature; the DICOM
#: network's send events name studies and images).
PATIENT_URIS = ("DIOS/STUDY/", "DIOS/TASK/Image", "DIOS/EXCHANGE/")


#: The permission that raw frames and patient-bearing events need.
IMAGES_PERMISSION = "event.images"


def images_allowed(principal: Any) -> bool:
    """Whether ``principal`` (a :class:`dios.auth.roles.Principal`) may receive frames and
    patient-bearing events (the roles' table; allowed before a first password change)."""
    return principal is not None and allowed(principal.role, IMAGES_PERMISSION)


def needs_images(ev: Event) -> bool:
    """Whether ``ev`` may only reach principals with the ``event.images`` permission:
    frames and image events, study events, stored images, anything naming a patient."""
    if ev.kind == EventKind.IMAGE or ev.deviceUri.startswith(PATIENT_URIS):
        return True
    data = ev.data
    return bool(data) and (any(k in PATIENT_KEYS for k in data)
                           or any(hasattr(v, "pixels") for v in data.values()))


def strip_pixels(ev: Event) -> Event:
    """``ev`` without frame pixels (what the retention ring keeps)."""
    if not any(hasattr(v, "pixels") for v in ev.data.values()):
        return ev
    data = {k: ({kk: vv for kk, vv in vars(v).items() if kk != "pixels"}
                | {"shape": list(v.pixels.shape), "pixels_retained": False})
            if hasattr(v, "pixels") else v for k, v in ev.data.items()}
    return dataclasses.replace(ev, data=data)


def approx_size(ev: Event) -> int:
    """About how many bytes ``ev`` takes on the wire, cheaply (for the ring's byte bound):
    the strings and byte strings of its top level counted, anything nested as 256 bytes."""
    size = 192 + len(ev.deviceUri) + len(ev.name) + len(ev.value)
    for key, value in ev.data.items():
        size += len(key) + (len(value) if isinstance(value, (str, bytes, bytearray)) else 256)
    return size


def topic_of(uri: str) -> str:
    """The retention topic of an event URI: its first two segments."""
    parts = uri.split("/", 2)
    return "/".join(parts[:2])


class Rendered:
    """One event and its wire forms, computed once for every subscription."""

    __slots__ = ("event", "_json", "_binary", "_frames")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._json: dict[str, Any] | None = None
        self._binary: dict[str, Any] | None = None
        self._frames: dict[str, Any] | None = None

    def message(self, binary: bool, frames: bool = False) -> dict[str, Any]:
        """The wire message (JSON-safe, MessagePack-safe, or MessagePack with pixels)."""
        if not binary:
            if self._json is None:
                self._json = event_message(self.event)
            return self._json
        if frames:
            if self._frames is None:
                self._frames = event_message(self.event, binary=True, frames=True)
            return self._frames
        if self._binary is None:
            self._binary = event_message(self.event, binary=True)
        return self._binary


Sink = Callable[["FeedSubscription", Rendered], None]


class FeedSubscription:
    """One client subscription on a feed (see the module docstring)."""

    def __init__(self, feed: EventFeed, sid: int, pattern: str, kinds: list[str] | None,
                 client: str | None, frames: bool, images: bool, owner: int,
                 sink: Sink) -> None:
        self.feed = feed
        self.sid = sid
        self.pattern = pattern
        self.kinds = frozenset(kinds) if kinds else None
        self.client = client
        self.frames = frames
        self.images = images
        self.owner = owner
        self.sink = sink
        self.sseq = 0
        self.dropped = 0
        self.closed = False

    def wants(self, ev: Event) -> bool:
        if self.kinds is not None and ev.kind not in self.kinds:
            return False
        if self.client is not None and ev.reqClientID != self.client:
            return False
        if not matches(self.pattern, ev.deviceUri):
            return False
        return self.images or not needs_images(ev)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.feed._remove(self)


@dataclasses.dataclass
class _Ring:
    """Retained events of one topic: (index, event, size, time), oldest first."""

    entries: collections.deque = dataclasses.field(default_factory=collections.deque)
    bytes: int = 0
    evicted_upto: int = 0  # the largest feed index evicted so far


class EventFeed:
    """Fan-out of the hub's events to client subscriptions on one event loop.

    Parameters
    ----------
    hub : EventHub
        The engine's hub.
    loop : asyncio.AbstractEventLoop
        The loop the listeners run on.
    retention : float
        Seconds an event stays in the retention ring (resume window).
    ring_events, ring_bytes : int
        Bounds of each topic's ring (count and bytes, pixels not counted: never kept).
    """

    _feeds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _feeds_lock = threading.Lock()

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop, *,
                 retention: float = 300.0, ring_events: int = 4096,
                 ring_bytes: int = 8 << 20) -> None:
        self.hub = hub
        self.loop = loop
        self.retention = retention
        self.ring_events = ring_events
        self.ring_bytes = ring_bytes
        self.subs: dict[int, FeedSubscription] = {}
        self.by_owner: collections.Counter[int] = collections.Counter()
        self.rings: dict[str, _Ring] = {}
        self.by_seq: dict[int, int] = {}
        self.index = 0
        self.lost = 0
        self._next_sid = 0
        self._inbox: collections.deque[Event] = collections.deque()
        self._scheduled = False
        self._users = 0
        self._thread = threading.get_ident()  # made on the loop's thread (for_loop)
        self._hub_sub: Subscription | None = hub.tap("DIOS/*", self._from_hub)

    @classmethod
    def for_loop(cls, hub: EventHub, loop: asyncio.AbstractEventLoop,
                 **options: Any) -> EventFeed:
        """The feed of ``hub`` on ``loop`` (made on first use; ``release`` it when done)."""
        with cls._feeds_lock:
            per_loop = cls._feeds.setdefault(loop, {})
            feed = per_loop.get(id(hub))
            if feed is None or feed._hub_sub is None:
                feed = per_loop[id(hub)] = cls(hub, loop, **options)
            feed._users += 1
            return feed

    def release(self) -> None:
        """One user fewer; the last one closes the feed's hub subscription."""
        with self._feeds_lock:
            self._users -= 1
            if self._users > 0:
                return
            per_loop = self._feeds.get(self.loop, {})
            if per_loop.get(id(self.hub)) is self:
                del per_loop[id(self.hub)]
        self.close()

    def close(self) -> None:
        if self._hub_sub is not None:
            self._hub_sub.close()
            self._hub_sub = None
        for sub in list(self.subs.values()):
            sub.close()

    # --- from the hub (the publishing thread: a tap) ------------------------------------------
    def _from_hub(self, ev: Event) -> None:
        self._inbox.append(ev)
        if not self._scheduled:
            self._scheduled = True
            try:
                if threading.get_ident() == self._thread:
                    self.loop.call_soon(self._drain)  # published on the loop itself
                else:
                    self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed
                self._inbox.clear()

    # --- on the loop -------------------------------------------------------------------------
    def _drain(self) -> None:
        self._scheduled = False
        inbox = self._inbox
        while inbox:
            self.ingest(inbox.popleft())

    def ingest(self, ev: Event) -> None:
        """Retain ``ev`` and hand it to every subscription that wants it."""
        self.index += 1
        self._retain(self.index, ev)
        rendered = Rendered(ev)
        for sub in list(self.subs.values()):
            if sub.wants(ev):
                sub.sseq += 1
                try:
                    sub.sink(sub, rendered)
                except Exception:  # noqa: BLE001 - one client's sink never stops the feed
                    log.exception("event sink of subscription %d failed", sub.sid)

    def _retain(self, index: int, ev: Event) -> None:
        kept = strip_pixels(ev)
        size = approx_size(kept)
        ring = self.rings.setdefault(topic_of(ev.deviceUri), _Ring())
        now = time.monotonic()
        ring.entries.append((index, kept, size, now))
        ring.bytes += size
        self.by_seq[ev.seq] = index
        horizon = now - self.retention
        entries = ring.entries
        while entries and (len(entries) > self.ring_events or ring.bytes > self.ring_bytes
                           or entries[0][3] < horizon):
            old_index, old, old_size, _ = entries.popleft()
            ring.bytes -= old_size
            ring.evicted_upto = max(ring.evicted_upto, old_index)
            if self.by_seq.get(old.seq) == old_index:
                del self.by_seq[old.seq]

    def oldest(self) -> int:
        """The oldest ``seq`` still retained (0 when nothing is)."""
        firsts = [r.entries[0][1].seq for r in self.rings.values() if r.entries]
        return min(firsts) if firsts else 0

    def subscribe(self, pattern: str, kinds: list[str] | None, client: str | None, *,
                  frames: bool, images: bool, owner: int, sink: Sink,
                  resume_from: int | None = None) -> tuple[FeedSubscription, dict[str, Any]]:
        """A new subscription; with ``resume_from``, the retained events after that seq
        are handed to ``sink`` first. Returns the subscription and the replay report
        ``{replayed, complete, oldest}``."""
        self._next_sid += 1
        sub = FeedSubscription(self, self._next_sid, pattern, kinds, client, frames, images,
                               owner, sink)
        report: dict[str, Any] = {"replayed": 0, "complete": True, "oldest": self.oldest()}
        if resume_from is not None:
            # events still in the loop's inbox are not retained yet: take them in first
            self._drain()
            start = self.by_seq.get(resume_from)
            if start is None:
                # unknown or evicted: everything retained after it by seq, not complete
                # unless nothing was ever evicted and the seq is older than all we keep
                later = [e for r in self.rings.values() for e in r.entries
                         if e[1].seq > resume_from]
                start = min((e[0] for e in later), default=self.index + 1) - 1
                evicted = max((r.evicted_upto for r in self.rings.values()), default=0)
                report["complete"] = evicted == 0 and resume_from <= self.oldest()
            else:
                report["complete"] = all(r.evicted_upto <= start for r in self.rings.values())
            replay = sorted((e for r in self.rings.values() for e in r.entries if e[0] > start),
                            key=lambda e: e[0])
            for _, ev, _, _ in replay:
                if sub.wants(ev):
                    sub.sseq += 1
                    report["replayed"] += 1
                    sink(sub, Rendered(ev))
        self.subs[sub.sid] = sub
        self.by_owner[owner] += 1
        return sub, report

    def _remove(self, sub: FeedSubscription) -> None:
        if self.subs.pop(sub.sid, None) is not None:
            self.by_owner[sub.owner] -= 1
            if self.by_owner[sub.owner] <= 0:
                del self.by_owner[sub.owner]

    def owned_by(self, owner: int) -> int:
        """How many live subscriptions ``owner`` (a user id) has on this feed."""
        return self.by_owner.get(owner, 0)
