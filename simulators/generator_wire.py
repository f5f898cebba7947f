"""The simulated generator on a wire: serves :mod:`drivers.generator_protocol` over a pty or TCP.

:class:`GeneratorWireServer` puts a :class:`~simulators.generator.GeneratorModel` behind
a real byte stream, so the real driver (:mod:`drivers.generator_serial`) is tested end to
end:

* ``endpoint="pty"``: a pseudo-terminal pair (``os.openpty``); the driver opens the slave
  side, ``server.url`` is ``serial:///dev/pts/N`` (``server.device_path`` the bare path).
* ``endpoint="tcp"``: a socket listening on ``127.0.0.1`` (an ephemeral port unless one
  is given); ``server.url`` is ``socket://127.0.0.1:PORT``. One client at a time; when it
  goes, the next one is accepted.

The server decodes frames on its own thread, answers each request at once and runs
prepare and exposure on a worker thread, reporting their end with ``RDY``/``XD``/``FLT``
events tagged with the operation's ``OP`` number (also in the ``ACK`` of ``PR``/``EX``).
Frames it cannot decode are ignored (and listed in ``errors``), as a generator would.
Link faults from the shared :class:`~simulators.faults.FaultInjector`: ``comm_timeout``
makes it stop answering (requests are read and dropped, nothing is
executed, no events are sent), ``dropped_reply`` executes one request and drops its
reply. :meth:`GeneratorWireServer.send_raw` writes arbitrary bytes (line noise) and
:meth:`GeneratorWireServer.drop_client` cuts a TCP client off, for link tests.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import tty
from collections import deque
from collections.abc import Callable

from dios.codes import BAD_PARAMETER, UNKNOWN_COMMAND, WRONG_STATE, DiosError
from dios.devices.backends import ExposureRecord
from drivers.generator_protocol import (
    EVENT,
    REPLY,
    REQUEST,
    VERSION,
    FrameDecoder,
    Message,
    ProtocolError,
    clean_text,
    encode,
    limits_fields,
    nak_code,
    readback_fields,
    record_fields,
    technique_fields,
    technique_from,
)
from simulators.faults import FaultInjector
from simulators.generator import GeneratorModel, SimGeneratorBackend

log = logging.getLogger(__name__)

MODEL_NAME = "DIOS-SIMGEN"


class GeneratorWireServer:
    """Serve a simulated generator over a pty pair or a TCP socket.

    Parameters
    ----------
    sim : SimGeneratorBackend or GeneratorModel
        The simulated generator; a backend's model and fault injector are used.
    endpoint : str
        ``"pty"`` or ``"tcp"``.
    faults : FaultInjector, optional
        Link faults (defaults to the simulator's injector).
    port : int
        TCP port (0 = ephemeral).
    """

    def __init__(self, sim: SimGeneratorBackend | GeneratorModel, endpoint: str = "pty",
                 faults: FaultInjector | None = None, port: int = 0) -> None:
        model = sim.model if isinstance(sim, SimGeneratorBackend) else sim
        if not isinstance(model, GeneratorModel):
            raise TypeError("sim must be a SimGeneratorBackend or a GeneratorModel")
        if endpoint not in ("pty", "tcp"):
            raise ValueError(f"endpoint must be 'pty' or 'tcp', not {endpoint!r}")
        self.model = model
        self.faults = faults or model.faults
        self.endpoint = endpoint
        self.errors: deque[str] = deque(maxlen=200)
        self.requests = 0
        self.dropped = 0
        self.ignored = 0
        self._port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._op: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._event_seq = itertools.count(1)
        self._op_ids = itertools.count(1)
        self._op_id = 0  # the latest prepare or exposure (events and ACKs carry it as OP)
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self.device_path = ""
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The pyserial URL the driver opens."""
        if self.endpoint == "pty":
            return f"serial://{self.device_path}"
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> GeneratorWireServer:
        if self._thread is not None:
            return self
        self._stop.clear()
        if self.endpoint == "pty":
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.device_path = os.ttyname(self._slave)
            target = self._serve_pty
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", self._port))
            self._listener.listen(1)
            self._listener.settimeout(0.05)
            self.port = self._listener.getsockname()[1]
            target = self._serve_tcp
        self._thread = threading.Thread(target=target, name=f"gen-wire-{self.endpoint}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.model.abort()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if self._op is not None:
            self._op.join(2.0)
        self.drop_client()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> GeneratorWireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- transport -----------------------------------------------------------------------------
    def _serve_pty(self) -> None:
        decoder = FrameDecoder()
        master = self._master
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                # EIO while no process holds the slave open
                self._stop.wait(0.01)
                continue
            self._feed(decoder, data)

    def _serve_tcp(self) -> None:
        listener = self._listener
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()  # type: ignore[union-attr]
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._send_lock:
                self._client = conn
            decoder = FrameDecoder()
            while not self._stop.is_set() and self._client is conn:
                try:
                    ready, _, _ = select.select([conn], [], [], 0.05)
                    if not ready:
                        continue
                    data = conn.recv(4096)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                self._feed(decoder, data)
            with self._send_lock:
                if self._client is conn:
                    self._client = None
            with contextlib.suppress(OSError):
                conn.close()

    def drop_client(self) -> None:
        """Close the TCP client connection (the driver sees the link go)."""
        with self._send_lock:
            conn, self._client = self._client, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the link as it is (noise, broken frames)."""
        with self._send_lock:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.endpoint == "tcp":
            if self._client is not None:
                try:
                    self._client.sendall(data)
                except OSError as exc:
                    log.info("wire server: client gone while sending: %s", exc)
            return
        view = memoryview(data)
        while view and self._master is not None:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                _, ready, _ = select.select([], [self._master], [], 0.2)
                if not ready:
                    log.info("wire server: pty not drained, %d byte(s) dropped", len(view))
                    return
                continue
            except OSError:
                return
            view = view[n:]

    def _send(self, msg: Message) -> None:
        with self._send_lock:
            self._write(encode(msg))

    # --- protocol ---------------------------------------------------------------------------------
    def _feed(self, decoder: FrameDecoder, data: bytes) -> None:
        for item in decoder.feed(data):
            if isinstance(item, ProtocolError):
                self.errors.append(str(item))
                continue
            if item.kind != REQUEST:
                self.errors.append(f"unexpected {item.kind} frame from host")
                continue
            if self.faults.active("comm_timeout"):
                self.ignored += 1
                continue
            self.requests += 1
            reply = self._handle(item)
            if self.faults.consume("dropped_reply"):
                self.dropped += 1
                continue
            self._send(reply)

    def _event(self, name: str, fields: dict[str, str] | None = None) -> None:
        if self.faults.active("comm_timeout"):
            return
        self._send(Message(EVENT, next(self._event_seq) % 256, name, fields or {}))

    def _state(self) -> str:
        m = self.model
        if m.exposing:
            return "EXP"
        if m.preparing:
            return "PREP"
        return "READY" if m.prepared else "IDLE"

    def _handle(self, req: Message) -> Message:
        def ack(fields: dict[str, str] | None = None) -> Message:
            return Message(REPLY, req.seq, "ACK", fields or {})

        try:
            return ack(self._execute(req))
        except ProtocolError as err:
            err = DiosError(BAD_PARAMETER, err.reason)
            return Message(REPLY, req.seq, "NAK", {"CODE": nak_code(err.code),
                                                   "TXT": clean_text(err.detail)})
        except DiosError as err:
            return Message(REPLY, req.seq, "NAK", {"CODE": nak_code(err.code),
                                                   "TXT": clean_text(err.detail or err.code.description)})

    def _execute(self, req: Message) -> dict[str, str] | None:
        m = self.model
        cmd = req.name
        if cmd == "ID":
            return {"MDL": MODEL_NAME, "VER": VERSION}
        if cmd == "LM":
            return limits_fields(m.limits)
        if cmd == "TS":
            return technique_fields(m.apply(technique_from(req)))
        if cmd == "TG":
            return technique_fields(m.technique)
        if cmd == "ST":
            return readback_fields(m.readback(), self._state())
        if cmd == "AB":
            m.abort()
            return None
        if cmd == "RS":
            m.reset()
            return None
        if cmd == "PR":
            if m.preparing:
                return {"OP": str(self._op_id)}
            if m.prepared:
                self._event("RDY", {"OP": str(self._op_id)})
                return {"OP": str(self._op_id)}
            m.check_prepare()
            return {"OP": str(self._start_op(self._run_prepare))}
        if cmd == "EX":
            if not m.prepared or m.exposing:
                raise DiosError(WRONG_STATE, "not prepared")
            return {"OP": str(self._start_op(self._run_expose))}
        raise DiosError(UNKNOWN_COMMAND, f"unknown command {cmd}")

    def _start_op(self, fn: Callable[[str], None]) -> int:
        """Run ``fn(op)`` on the worker thread as a new operation; return its number."""
        if self._op is not None:
            self._op.join(1.0)
        self._op_id = op = next(self._op_ids)
        self._op = threading.Thread(target=fn, args=(str(op),), name="gen-wire-op", daemon=True)
        self._op.start()
        return op

    def _run_prepare(self, op: str) -> None:
        try:
            self.model.prepare()
        except DiosError as err:
            self._event("FLT", {"CODE": nak_code(err.code), "TXT": clean_text(err.detail), "OP": op})
            return
        self._event("RDY", {"OP": op})

    def _run_expose(self, op: str) -> None:
        try:
            record = self.model.expose()
        except DiosError as err:
            fields = {"CODE": nak_code(err.code), "TXT": clean_text(err.detail)}
            partial = err.data.get("record")
            if isinstance(partial, dict):
                fields.update(record_fields(ExposureRecord(**partial)))
            fields["OP"] = op
            self._event("FLT", fields)
            return
        self._event("XD", {**record_fields(record), "OP": op})

