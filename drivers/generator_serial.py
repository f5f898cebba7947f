"""A generator backend over a serial line or TCP socket, speaking :mod:`drivers.generator_protocol`.

The port is opened with pyserial's ``serial_for_url``, so every URL it knows works
unchanged: ``socket://127.0.0.1:4001``, ``loop://``, ``spy:///dev/ttyUSB0?file=trace.txt``
(hex dump of the traffic), ``rfc2217://...``; a plain device path or ``serial:///dev/ttyUSB0``
opens a local serial port.

Behaviour on the link:

* every request waits ``timeout`` wall-clock seconds for its reply; requests that are safe
  to repeat (``ID LM TS TG PR AB RS ST``: they set or read state, and a repeated ``PR``
  is answered without a second boost) are sent again up to ``retries`` times with a new
  sequence number, so a late reply to an abandoned attempt is recognised and dropped;
  ``EX`` is never repeated (no double exposure). No reply at all: ``TIMEOUT``.
* a ``NAK`` maps to its result code (:data:`~drivers.generator_protocol.NAK_CODES`).
* a port that fails or closes (unplugged adapter, closed socket): ``COMM_LOST``; the port is
  opened again by :meth:`SerialGeneratorBackend.connect` or :meth:`~SerialGeneratorBackend.reset`.
* frames that fail to decode are logged, counted in ``protocol_errors`` and skipped; the
  decoder resynchronises on the next ``STX``.
* a prepare or exposure waits only for the events of its own operation (the ``OP`` number
  of its ``ACK``); events of an earlier one are dropped and counted in ``stale_events``.
* no call blocks without a deadline: replies wait ``timeout``, a write at most
  :data:`WRITE_TIMEOUT_S` (the port's write timeout; the driver never waits for the line
  to drain), events the device time plus ``timeout``, the port's reader ``0.02`` s a read,
  closing the port at most :data:`WRITE_TIMEOUT_S` (the rest of the close runs detached).
* waits for device time (rotor boost, exposure) are measured on ``clock``, so a generator
  simulated ``N`` times faster than real time is waited for ``N`` times less.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import Any

import serial

from dios.clock import REAL_TIME, SimClock
from dios.codes import ABORTED, COMM_LOST, DEVICE_FAULT, TIMEOUT, DiosError
from dios.devices.backends import ExposureRecord, GeneratorLimits, GeneratorReadback, Technique
from drivers.generator_protocol import (
    EVENT,
    REPLY,
    REQUEST,
    FrameDecoder,
    Message,
    ProtocolError,
    encode,
    limits_from,
    readback_from,
    record_from,
    result_code,
    technique_fields,
    technique_from,
)

log = logging.getLogger(__name__)

_LOST = object()
#: Wall-clock seconds a frame may take to be accepted by the port before the link is lost.
WRITE_TIMEOUT_S = 1.0


def open_url(url: str, baudrate: int, timeout: float) -> serial.SerialBase:
    """Open ``url`` with pyserial (``serial://PATH`` is a local port at ``PATH``)."""
    if url.startswith("serial://"):
        url = url[len("serial://"):]
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                 write_timeout=WRITE_TIMEOUT_S)


def _close_quietly(port: serial.SerialBase) -> None:
    try:
        port.close()
    except Exception:  # noqa: BLE001 - closing a dead port may fail; it is gone anyway
        log.debug("closing %s failed", port.port, exc_info=True)


class SerialGeneratorBackend:
    """:class:`~dios.devices.backends.GeneratorBackend` for a generator on a serial link.

    Parameters
    ----------
    url : str
        pyserial URL of the port.
    timeout : float
        Wall-clock seconds to wait for each reply.
    clock : SimClock
        Clock of the generator's device time (prep and exposure waits).
    retries : int
        Extra attempts for requests that are safe to repeat.
    baudrate : int
        Line speed for real serial ports.
    prep_timeout : float
        Device seconds to wait for the ``RDY`` event after a prepare.
    exposure_margin : float
        Device seconds added to the exposure time when waiting for ``XD``.
    """

    name = "SerialGenerator"

    def __init__(self, url: str, timeout: float = 0.5, clock: SimClock = REAL_TIME,
                 retries: int = 2, baudrate: int = 19200, prep_timeout: float = 5.0,
                 exposure_margin: float = 2.0) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.url = url
        self.timeout = timeout
        self.clock = clock
        self.retries = retries
        self.baudrate = baudrate
        self.prep_timeout = prep_timeout
        self.exposure_margin = exposure_margin
        self.model = ""
        self.protocol_errors: deque[str] = deque(maxlen=200)
        self.protocol_error_count = 0
        self.requests = 0
        self.attempts = 0
        #: events dropped because they ended an earlier operation
        self.stale_events = 0
        self._port: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._pending: dict[int, queue.Queue] = {}
        self._pending_lock = threading.Lock()
        self._events: queue.Queue[Any] = queue.Queue()
        self._seq = itertools.count(1)
        self._lost: str = ""
        self._technique = Technique()

    # --- link ------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._port is not None and not self._lost

    def _open(self) -> None:
        self._close_port()
        try:
            port = open_url(self.url, self.baudrate, 0.02)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DiosError(COMM_LOST, f"cannot open {self.url}: {exc}") from None
        self._port = port
        self._lost = ""
        self._stop = threading.Event()
        self._events = queue.Queue()
        self._reader = threading.Thread(target=self._read_loop, args=(port, self._stop),
                                        name="dios-gen-serial", daemon=True)
        self._reader.start()

    def _close_port(self) -> None:
        self._stop.set()
        port, self._port = self._port, None
        if port is not None:
            # closing may wait: pyserial's socket close() sleeps 0.3 s, and a tty's close
            # waits for unsent output to drain (up to the driver's closing_wait, 30 s)
            closer = threading.Thread(target=_close_quietly, args=(port,), daemon=True)
            closer.start()
            if not self.url.startswith("socket://"):
                closer.join(WRITE_TIMEOUT_S)  # a device path is reopened only once it closed
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(1.0)
        self._reader = None

    def _read_loop(self, port: serial.SerialBase, stop: threading.Event) -> None:
        decoder = FrameDecoder()
        while not stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:  # noqa: BLE001 - any port failure is a lost link
                if not stop.is_set():
                    self._link_lost(f"{type(exc).__name__}: {exc}")
                return
            if not data:
                if decoder.partial:
                    for err in decoder.flush():
                        self._protocol_error(err)
                continue
            for item in decoder.feed(data):
                if isinstance(item, ProtocolError):
                    self._protocol_error(item)
                elif item.kind == REPLY:
                    with self._pending_lock:
                        slot = self._pending.get(item.seq)
                    if slot is None:
                        log.debug("dropping stale reply seq %02X %s", item.seq, item.name)
                    else:
                        slot.put(item)
                elif item.kind == EVENT:
                    self._events.put(item)
                else:
                    self._protocol_error(ProtocolError(f"unexpected {item.kind} frame from generator"))

    def _protocol_error(self, err: ProtocolError) -> None:
        self.protocol_error_count += 1
        self.protocol_errors.append(str(err))
        log.warning("generator link %s: %s", self.url, err)

    def _link_lost(self, why: str) -> None:
        self._lost = why or "link lost"
        log.error("generator link %s lost: %s", self.url, why)
        with self._pending_lock:
            slots = list(self._pending.values())
        for slot in slots:
            slot.put(_LOST)
        self._events.put(_LOST)

    def _check_link(self) -> None:
        if self._port is None:
            raise DiosError(COMM_LOST, f"{self.url} not open")
        if self._lost:
            raise DiosError(COMM_LOST, self._lost)

    def _write(self, frame: bytes) -> None:
        """Hand ``frame`` to the port; bounded by the port's write timeout (no drain wait)."""
        self._check_link()
        if not self._write_lock.acquire(timeout=WRITE_TIMEOUT_S + self.timeout):
            raise DiosError(TIMEOUT, f"{self.url}: port busy writing")
        try:
            self._port.write(frame)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - any port failure is a lost link
            self._link_lost(f"write failed: {exc}")
            raise DiosError(COMM_LOST, f"write failed: {exc}") from None
        finally:
            self._write_lock.release()

    def transact(self, name: str, fields: dict[str, str] | None = None, retry: bool = True) -> Message:
        """Send request ``name``; return the ``ACK`` or raise the mapped error."""
        self.requests += 1
        attempts = 1 + (self.retries if retry else 0)
        for _ in range(attempts):
            self._check_link()
            seq = next(self._seq) % 256
            slot: queue.Queue = queue.Queue()
            with self._pending_lock:
                self._pending[seq] = slot
            try:
                self.attempts += 1
                self._write(encode(Message(REQUEST, seq, name, dict(fields or {}))))
                try:
                    reply = slot.get(timeout=self.timeout)
                except queue.Empty:
                    log.info("generator %s: no reply to %s (seq %02X)", self.url, name, seq)
                    continue
            finally:
                with self._pending_lock:
                    self._pending.pop(seq, None)
            if reply is _LOST:
                raise DiosError(COMM_LOST, self._lost)
            if reply.name == "ACK":
                return reply
            if reply.name == "NAK":
                code = result_code(reply.get("CODE"))
                raise DiosError(code, reply.get("TXT") or f"{name} refused", nak=reply.get("CODE"))
            raise DiosError(DEVICE_FAULT, f"unexpected reply {reply.name!r} to {name}")
        raise DiosError(TIMEOUT, f"no reply to {name} from {self.url} after {attempts} attempt(s)")

    def _decode(self, fn: Any, msg: Message) -> Any:
        try:
            return fn(msg)
        except ProtocolError as err:
            self._protocol_error(err)
            raise DiosError(DEVICE_FAULT, f"malformed {msg.name}: {err.reason}") from None

    def _drain_events(self) -> None:
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return
            if item is _LOST:
                raise DiosError(COMM_LOST, self._lost)

    def _wait_event(self, names: tuple[str, ...], device_seconds: float,
                    cancel: threading.Event | None, op: str = "") -> Message:
        """The next event among ``names`` or ``FLT`` of operation ``op``.

        Events of another operation (a late ``FLT`` of an aborted prepare) are dropped; with
        ``op`` empty (a generator that does not number its operations) every event counts.
        ABORTED on cancel, TIMEOUT if none arrives in time.
        """
        deadline = time.monotonic() + self.clock.real(device_seconds) + self.timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise DiosError(ABORTED, "cancelled")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DiosError(TIMEOUT, f"no {'/'.join(names)} event from {self.url}")
            try:
                item = self._events.get(timeout=min(left, 0.005 if cancel is not None else left))
            except queue.Empty:
                continue
            if item is _LOST:
                raise DiosError(COMM_LOST, self._lost)
            if op and item.get("OP") != op:
                self.stale_events += 1
                log.info("generator %s: dropping %s of operation %r while waiting for %r",
                         self.url, item.name, item.get("OP"), op)
                continue
            if item.name in names or item.name == "FLT":
                return item
            log.debug("ignoring event %s while waiting for %s", item.name, names)

    @staticmethod
    def _fault(msg: Message) -> DiosError:
        return DiosError(result_code(msg.get("CODE")), msg.get("TXT") or "generator fault",
                         nak=msg.get("CODE"))

    # --- GeneratorBackend --------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the port and identify the generator."""
        self._open()
        try:
            ident = self.transact("ID")
        except DiosError:
            self._close_port()
            raise
        self.model = ident.get("MDL")

    def close(self) -> None:
        self._close_port()

    def limits(self) -> GeneratorLimits:
        return self._decode(limits_from, self.transact("LM"))

    def apply(self, technique: Technique) -> Technique:
        accepted = self._decode(technique_from, self.transact("TS", technique_fields(technique)))
        self._technique = accepted
        return accepted

    def prepare(self, cancel: threading.Event) -> None:
        self._drain_events()
        op = self.transact("PR").get("OP")
        try:
            event = self._wait_event(("RDY",), self.prep_timeout, cancel, op)
        except DiosError as err:
            if err.code is ABORTED:
                self._abort_quietly()
            raise
        if event.name == "FLT":
            raise self._fault(event)

    def expose(self, cancel: threading.Event) -> ExposureRecord:
        self._drain_events()
        op = self.transact("EX", retry=False).get("OP")
        seconds = self._technique.ms / 1000.0 + self.exposure_margin
        try:
            event = self._wait_event(("XD",), seconds, cancel, op)
        except DiosError as err:
            if err.code is not ABORTED:
                raise
            self._abort_quietly()
            try:  # the generator reports what it delivered before the abort
                event = self._wait_event(("XD",), 0.5, None, op)
            except DiosError:
                raise err from None
        if event.name == "FLT":
            fault = self._fault(event)
            if "KV" in event.fields:
                try:
                    fault.data["record"] = dataclasses.asdict(record_from(event))
                except ProtocolError:
                    pass
            raise fault
        return self._decode(record_from, event)

    def _abort_quietly(self) -> None:
        try:
            self.transact("AB")
        except DiosError as err:
            log.warning("abort after cancel failed: %s", err)

    def abort(self) -> None:
        self.transact("AB")

    def reset(self) -> None:
        """Reset latched faults; reopen the port first if the link was lost."""
        if not self.connected:
            self.connect()
        self.transact("RS")

    def readback(self) -> GeneratorReadback:
        return self._decode(readback_from, self.transact("ST"))

    def technique(self) -> Technique:
        """The technique the generator holds (``TG``)."""
        return self._decode(technique_from, self.transact("TG"))
