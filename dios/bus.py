"""The DIOS device bus: URI dispatch, per-device ordering, timeouts and global status.

Every registered device gets its own worker thread and FIFO queue, so commands to one
device run in the order they arrived while devices never wait for each other. Every
request gets exactly one :class:`~dios.messages.Reply` carrying its transaction and client
id: a result, or an error code (bad URI, unknown device or command, bad parameter, wrong
state, busy, timeout, ...). A failing command leaves the device state unchanged and the
bus serving.

Every reply is also published on the event hub as a ``reply`` event (:func:`reply_event`):
URI and name of the request, value = the result code, data = :meth:`Reply.to_dict`, and
the request's transaction and client id, so a remote client sees the value a device
accepted (``SetParam_MA 130`` -> ``125``) on its event stream as well. Publication is the
hub's non-blocking fan-out; a reply event is in the subscribers' queues before the
requester gets the reply.

>>> from dios.engine import build_simulated_engine
>>> with build_simulated_engine(clock_scale=100) as eng:
...     eng.bus.request(Request("DIOS/DEVICE/Generator", "SetParam_KV", "70", "t1", "doc")).result
'70'
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
from concurrent.futures import Future
from typing import Any

from dios.codes import (
    BUS_STOPPED,
    BUSY,
    INTERNAL,
    TIMEOUT,
    UNKNOWN_DEVICE,
    DiosError,
)
from dios.devices.base import Device
from dios.events import EventHub
from dios.messages import Event, EventKind, Reply, Request
from dios.uri import DETECTOR, GENERATOR, parse

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_STOP = object()


def reply_event(req: Request, reply: Reply, late: bool = False) -> Event:
    """The ``reply`` event of ``reply`` to ``req``: name = reqName, value = the result
    code, data = ``reply.to_dict()`` (plus ``late: True`` for the outcome of a command
    whose requester already got ``TIMEOUT``), with the request's transaction and client id."""
    data = reply.to_dict()
    if late:
        data["late"] = True
    return Event(req.deviceUri, EventKind.REPLY, req.reqName, reply.code, data,
                 req.reqTransaction, req.reqClientID)


class _Pending(Future):
    """A request's future. ``settle`` orders the worker's delivery against the
    requester giving up, so that a reply is published late exactly when its requester
    got ``TIMEOUT`` instead."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = False
        self.settle = threading.Lock()


class _Worker:
    """The queue and thread serving one device."""

    def __init__(self, device: Device, maxsize: int, hub: EventHub) -> None:
        self.device = device
        self.hub = hub
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        #: requests queued or running (under ``gate``); a query runs inline only at 0
        self.pending = 0
        self.gate = threading.Lock()
        #: held while a request executes, by the worker or by an inline query
        self.executing = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name=f"dios-dev-{device.uri.rsplit('/', 1)[-1]}")
        self.served = 0

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            req, fut = item
            try:
                if not fut.set_running_or_notify_cancel():
                    continue
                with self.executing:
                    reply = self.execute(req)
                with fut.settle:
                    late = fut.abandoned
                    if not late:
                        self.hub.publish(reply_event(req, reply))
                    fut.set_result(reply)
                if late:
                    # the client already got TIMEOUT: publish the late outcome so nothing
                    # that changed the device goes unreported
                    self.hub.publish(reply_event(req, reply, late=True))
            finally:
                with self.gate:
                    self.pending -= 1

    def enqueue(self, req: Request, fut: _Pending) -> None:
        """Queue ``req`` (``queue.Full`` when the device's queue is full)."""
        with self.gate:
            self.queue.put_nowait((req, fut))
            self.pending += 1

    def run_inline(self, req: Request, fut: _Pending) -> bool:
        """Run a query on the caller's thread if nothing is queued or running; True if it
        ran (``fut`` then holds its reply)."""
        with self.gate:
            if self.pending or not self.executing.acquire(blocking=False):
                return False
            self.pending += 1
        try:
            fut.set_running_or_notify_cancel()
            try:
                reply = self.execute(req)
            finally:
                self.executing.release()
            self.hub.publish(reply_event(req, reply))
            fut.set_result(reply)
        finally:
            with self.gate:
                self.pending -= 1
        return True

    def execute(self, req: Request) -> Reply:
        self.served += 1
        try:
            result, data = self.device.handle(req)
            return Reply.success(req, result, data)
        except DiosError as err:
            return Reply.failure(req, err)
        except Exception:  # noqa: BLE001 - never let a handler bug kill the worker
            incident = secrets.token_hex(4)
            log.exception("incident %s: handler %s on %s crashed", incident, req.reqName,
                          req.deviceUri)
            return Reply.failure(req, DiosError(INTERNAL, f"incident {incident}"))


class DeviceBus:
    """Routes requests to devices by URI. Use as a context manager or call start/stop."""

    def __init__(self, hub: EventHub | None = None, timeout: float = DEFAULT_TIMEOUT,
                 queue_size: int = 10_000) -> None:
        self.hub = hub or EventHub()
        self.timeout = timeout
        self.queue_size = queue_size
        self._workers: dict[str, _Worker] = {}
        self._running = False
        self.insp_status = "TASK_Ready"
        self.insp_ready = True

    # --- registry ------------------------------------------------------------------------
    def register(self, device: Device) -> Device:
        parse(device.uri)
        if device.uri in self._workers:
            raise ValueError(f"device {device.uri} already registered")
        worker = _Worker(device, self.queue_size, self.hub)
        self._workers[device.uri] = worker
        if self._running:
            worker.thread.start()
        return device

    def device(self, uri: str) -> Device:
        parse(uri)
        try:
            return self._workers[uri].device
        except KeyError:
            raise DiosError(UNKNOWN_DEVICE, uri) from None

    @property
    def devices(self) -> dict[str, Device]:
        return {uri: w.device for uri, w in self._workers.items()}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> DeviceBus:
        if not self._running:
            self._running = True
            for w in self._workers.values():
                if not w.thread.is_alive():
                    w.thread.start()
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for w in self._workers.values():
            w.device.close()
            w.queue.put(_STOP)
        for w in self._workers.values():
            w.thread.join(5)
        self.hub.close()

    def __enter__(self) -> DeviceBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- requests ------------------------------------------------------------------------
    def submit(self, req: Request, inline: bool = False) -> Future[Reply]:
        """Queue ``req`` for its device; the future always resolves to a Reply, which is
        published as a ``reply`` event too (a refusal at once, a device's reply when its
        command finishes).

        ``inline``: a query (a command that only reads the device's state, see
        :func:`dios.devices.base.command`) runs at once on the caller's thread when the
        device has nothing queued or running, in the same order it would have had in the
        queue; the future is then already done. For callers on an event loop that should
        not wait for a thread to answer a read."""
        return self._submit(req, inline)

    def _submit(self, req: Request, inline: bool = False) -> _Pending:
        fut = _Pending()
        try:
            if not self._running:
                raise DiosError(BUS_STOPPED)
            parse(req.deviceUri)
            worker = self._workers.get(req.deviceUri)
            if worker is None:
                raise DiosError(UNKNOWN_DEVICE, req.deviceUri)
            if inline and req.reqName in worker.device.queries and worker.run_inline(req, fut):
                return fut
            try:
                worker.enqueue(req, fut)
            except queue.Full:
                raise DiosError(BUSY, f"{req.deviceUri} queue full") from None
        except DiosError as err:
            reply = Reply.failure(req, err)
            self.hub.publish(reply_event(req, reply))
            fut.set_result(reply)
        return fut

    def request(self, req: Request, timeout: float | None = None) -> Reply:
        """Send ``req`` and wait for its reply, at most ``timeout`` seconds (default: bus timeout).

        On timeout the reply carries ``TIMEOUT`` (published as a ``reply`` event like any
        other); if the command has not started yet it is withdrawn, otherwise its late reply
        is published as a ``reply`` event with ``data["late"] = True`` (same transaction
        id) when it finishes.
        """
        wait = self.timeout if timeout is None else timeout
        fut = self._submit(req)
        try:
            return fut.result(wait)
        except TimeoutError:
            return self.give_up(req, fut, wait)

    def give_up(self, req: Request, fut: Future[Reply], waited: float) -> Reply:
        """The reply of a request from :meth:`submit` whose requester stops waiting after
        ``waited`` seconds: the reply if it arrived meanwhile, else ``TIMEOUT`` (the
        command withdrawn if it has not started, its late outcome published as in
        :meth:`request`). For callers that wait on the future themselves (an event loop)."""
        settle = getattr(fut, "settle", None)
        if settle is None:  # not one of ours: nothing to withdraw
            return fut.result(0) if fut.done() else Reply.failure(
                req, DiosError(TIMEOUT, f"no reply within {waited:g} s"))
        with settle:  # the worker delivers before or after this, never during
            if fut.done() and not fut.cancelled():
                return fut.result()  # it arrived while we gave up: it is the reply
            if not fut.cancel():
                fut.abandoned = True  # type: ignore[attr-defined]
            reply = Reply.failure(req, DiosError(TIMEOUT, f"no reply within {waited:g} s"))
            self.hub.publish(reply_event(req, reply))  # before any late outcome
        return reply

    def call(self, uri: str, name: str, param: object = "", transaction: str = "",
             client: str = "dios", timeout: float | None = None) -> Reply:
        """Convenience wrapper: build the Request and wait for the Reply."""
        return self.request(Request(uri, name, str(param), transaction, client), timeout)

    # --- global status ---------------------------------------------------------------------
    def global_status(self) -> dict[str, Any]:
        """The reference console's ``TaskGlobalStatus``."""
        gen = self._workers.get(GENERATOR)
        fpd = self._workers.get(DETECTOR)
        gen_status = gen.device.status_string if gen else "GENERATOR_STATUS_NONE"
        fpd_status = fpd.device.status_string if fpd else "DETECTOR_STATUS_NONE"
        gen_ready = bool(gen and gen.device.ready)
        fpd_ready = bool(fpd and fpd.device.ready)
        return {
            "@type": "type.googleapis.com/dr.task.TaskGlobalStatus",
            "gen_status": gen_status,
            "gen_ready": gen_ready,
            "fpd_status": fpd_status,
            "fpd_ready": fpd_ready,
            "insp_status": self.insp_status,
            "insp_ready": self.insp_ready,
            "all_ready": gen_ready and fpd_ready and self.insp_ready,
        }
