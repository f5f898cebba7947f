"""A generator backend over a serial line or TCP socket, speaking :mod:`drivers.generator_protocol`.

The port is opened with pyserial's ``serial_for_url``, so every URL it knows works
unchanged: a device path (``/dev/ttyUSB0``), ``socket://127.0.0.1:4001``, ``loop://``,
``spy:///dev/ttyUSB0?file=trace.txt`` (hex dump of the traffic), ``rfc2217://...``.
``serial:///dev/ttyUSB0`` is not pyserial syntax; the driver takes it as the device path
after ``serial://`` (what :attr:`simulators.generator_wire.GeneratorWireServer.url` gives).

Every wait of this driver runs on the wall clock (``time.monotonic``, queue and pyserial
timeouts): it talks to hardware, whose time is real time whatever a simulation clock
elsewhere in the process says. A generator simulated faster than real time only makes
the driver's waits end earlier; the driver's deadlines are never shortened.

Behaviour on the link:

* every request waits ``timeout`` seconds for its reply; requests that are safe to repeat
  (``ID LM TS TG PR AB RS ST``: they set or read state, and a repeated ``PR`` is answered
  without a second boost) are sent again up to ``retries`` times with a new sequence
  number, so a late reply to an abandoned attempt is recognised and dropped; ``EX`` is
  never repeated (no double exposure). No reply at all: ``TIMEOUT``.
* a ``NAK`` maps to its result code (:data:`~drivers.generator_protocol.NAK_CODES`).
* a port that fails or closes (unplugged adapter, closed socket): ``COMM_LOST``; the port is
  opened again by :meth:`SerialGeneratorBackend.connect` or :meth:`~SerialGeneratorBackend.reset`.
* frames that fail to decode are logged, counted in ``protocol_errors`` and skipped; the
  decoder resynchronises on the next ``STX``.
* a prepare or exposure waits only for the events of its own operation (the ``OP`` number
  of its ``ACK``); events of an earlier one are dropped and counted in ``stale_events``.
* no call blocks without a deadline: replies wait ``timeout``, a write at most
  ``write_timeout`` (the port's write timeout; the driver never waits for the line to
  drain), the ``RDY`` of a prepare ``prep_timeout + timeout``, the ``XD`` of an exposure
  its exposure time ``+ exposure_margin + timeout``, the port's reader ``poll_interval``
  a read, closing the port at most ``write_timeout`` (the rest of the close runs detached).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from typing import Any

import serial

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
#: Default wall-clock seconds a frame may take to be accepted by the port before the link
#: is lost (the ``write_timeout`` keyword).
WRITE_TIMEOUT_S = 1.0
#: Default wall-clock seconds one read of the port waits for bytes (``poll_interval``);
#: raised automatically to three character times on slow lines.
POLL_INTERVAL_S = 0.02
#: Line speeds the driver accepts (pyserial's standard rates span 50..4000000).
BAUDRATE_RANGE = (50, 4_000_000)
BYTESIZES = (5, 6, 7, 8)
PARITIES = ("N", "E", "O", "M", "S")
STOPBITS = (1, 1.5, 2)


def open_url(url: str, baudrate: int = 19200, timeout: float = POLL_INTERVAL_S, *,
             write_timeout: float = WRITE_TIMEOUT_S, **settings: Any) -> serial.SerialBase:
    """Open ``url`` with pyserial (``serial://PATH`` is a local port at ``PATH``).

    ``settings`` go to ``serial_for_url`` as they are (``bytesize``, ``parity``,
    ``stopbits``, ``rtscts``, ``xonxoff``).
    """
    if url.startswith("serial://"):
        url = url[len("serial://"):]
    return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                 write_timeout=write_timeout, **settings)


def _close_quietly(port: serial.SerialBase) -> None:
    try:
        port.close()
    except Exception:  # noqa: BLE001 - closing a dead port may fail; it is gone anyway
        log.debug("closing %s failed", port.port, exc_info=True)


def _seconds(name: str, value: object, *, zero_ok: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (>= 0 with ``zero_ok``), or ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{name} must be a finite number of seconds {'>= 0' if zero_ok else '> 0'}, "
                         f"not {value!r}")
    return v


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


class SerialGeneratorBackend:
    """:class:`~dios.devices.backends.GeneratorBackend` for a generator on a serial link.

    Every argument but ``url`` is a keyword; the defaults are the link settings the driver
    has always used. Seconds are wall-clock seconds. Invalid values raise ``ValueError``
    naming the keyword.

    Parameters
    ----------
    url : str
        pyserial URL of the port: a device path (``/dev/ttyUSB0``; ``serial:///dev/ttyUSB0``
        is taken as that path), ``socket://host:port``, ``loop://``, ``spy://...``,
        ``rfc2217://...``.
    baudrate : int
        Line speed of a real serial port, 50..4000000 (default 19200; ignored by sockets).
    timeout : float
        Seconds to wait for each reply (default 0.5).
    retries : int
        Extra attempts, 0..100, for requests that are safe to repeat, after a reply that was
        lost or arrived corrupt (default 2; ``EX`` is never repeated).
    bytesize : int
        Data bits, 5/6/7/8 (default 8).
    parity : str
        ``"N"``, ``"E"``, ``"O"``, ``"M"`` or ``"S"`` (default ``"N"``).
    stopbits : float
        1, 1.5 or 2 (default 1).
    rtscts : bool
        RTS/CTS hardware flow control (default off).
    xonxoff : bool
        XON/XOFF software flow control (default off).
    write_timeout : float
        Seconds a frame may take to be accepted by the port before the link counts as lost;
        also how long closing the port is waited for (default 1.0).
    poll_interval : float, optional
        Seconds one read of the port waits for bytes; a frame left unfinished that long is
        reported as truncated, and it bounds how fast the reader stops. Default 0.02 s, or
        three character times if the line is so slow that this is longer.
    prep_timeout : float
        Seconds to wait, beyond ``timeout``, for the ``RDY`` event after a prepare
        (the generator's rotor boost; default 5.0).
    exposure_margin : float
        Seconds added, with ``timeout``, to the exposure time when waiting for ``XD``
        (default 2.0; may be 0).

    The URL-to-backend registry (``dios.backends.serial``) maps its query keys to these
    keywords: ``baud`` -> ``baudrate``, ``timeout``, ``retries``.
    """

    name = "SerialGenerator"

    def __init__(self, url: str, *, baudrate: int = 19200, timeout: float = 0.5,
                 retries: int = 2, bytesize: int = 8, parity: str = "N", stopbits: float = 1,
                 rtscts: bool = False, xonxoff: bool = False,
                 write_timeout: float = WRITE_TIMEOUT_S, poll_interval: float | None = None,
                 prep_timeout: float = 5.0, exposure_margin: float = 2.0) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"url must be a pyserial URL or device path, not {url!r}")
        self.url = url
        self.baudrate = _integer("baudrate", baudrate, *BAUDRATE_RANGE)
        self.timeout = _seconds("timeout", timeout)
        self.retries = _integer("retries", retries, 0, 100)
        if isinstance(bytesize, bool) or bytesize not in BYTESIZES:
            raise ValueError(f"bytesize must be one of {BYTESIZES}, not {bytesize!r}")
        self.bytesize = int(bytesize)
        if not isinstance(parity, str) or parity.upper() not in PARITIES:
            raise ValueError(f"parity must be one of {', '.join(PARITIES)}, not {parity!r}")
        self.parity = parity.upper()
        if isinstance(stopbits, bool) or stopbits not in STOPBITS:
            raise ValueError(f"stopbits must be one of {STOPBITS}, not {stopbits!r}")
        self.stopbits = stopbits
        for flag, value in (("rtscts", rtscts), ("xonxoff", xonxoff)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be True or False, not {value!r}")
        self.rtscts = rtscts
        self.xonxoff = xonxoff
        self.write_timeout = _seconds("write_timeout", write_timeout)
        char_s = (1 + self.bytesize + (self.parity != "N") + stopbits) / self.baudrate
        self.poll_interval = (max(POLL_INTERVAL_S, 3 * char_s) if poll_interval is None
                              else _seconds("poll_interval", poll_interval))
        self.prep_timeout = _seconds("prep_timeout", prep_timeout)
        self.exposure_margin = _seconds("exposure_margin", exposure_margin, zero_ok=True)
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
            port = open_url(self.url, self.baudrate, self.poll_interval,
                            write_timeout=self.write_timeout, bytesize=self.bytesize,
                            parity=self.parity, stopbits=self.stopbits, rtscts=self.rtscts,
                            xonxoff=self.xonxoff)
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
                closer.join(self.write_timeout)  # a device path is reopened only once it closed
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
        if not self._write_lock.acquire(timeout=self.write_timeout + self.timeout):
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

    def _wait_event(self, names: tuple[str, ...], seconds: float,
                    cancel: threading.Event | None, op: str = "") -> Message:
        """The next event among ``names`` or ``FLT`` of operation ``op``.

        Events of another operation (a late ``FLT`` of an aborted prepare) are dropped; with
        ``op`` empty (a generator that does not number its operations) every event counts.
        ABORTED on cancel, TIMEOUT if none arrives within ``seconds + timeout`` (wall clock).
        """
        deadline = time.monotonic() + seconds + self.timeout
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
