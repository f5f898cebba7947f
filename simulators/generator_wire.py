"""The simulated generator on a wire: serves :mod:`drivers.generator_protocol` over a pty or TCP.

:class:`GeneratorWireServer` puts a :class:`~simulators.generator.GeneratorModel` behind
a real byte stream, so the real driver (:mod:`drivers.generator_serial`) is tested end to
end:

* ``endpoint="pty"``: a pseudo-terminal pair (``os.openpty``); the driver opens the slave
  side, ``server.url`` is ``serial:///dev/pts/N`` (``server.device_path`` the bare path,
  which is what pyserial itself takes).
* ``endpoint="tcp"``: a socket listening on ``127.0.0.1`` (an ephemeral port unless one
  is given; ``host`` to bind elsewhere); ``server.url`` is ``socket://127.0.0.1:PORT``.
  Up to ``max_clients`` hosts (default 4) may be connected at once; a connection beyond
  that is closed at once (the driver sees ``COMM_LOST``). A host that sends nothing for
  ``idle_timeout`` seconds is disconnected (default: never), and one that does not take
  its bytes within :data:`SEND_TIMEOUT_S` too. Each reply goes to the host that asked;
  events go to every connected host (they carry their operation's ``OP`` number, and a
  driver keeps only those of the operation it started).

The server decodes frames as they come, answers each request at once (one request at a
time, whichever host sent it) and runs prepare and exposure on a worker thread, reporting
their end with ``RDY``/``XD``/``FLT`` events tagged with the operation's ``OP`` number
(also in the ``ACK`` of ``PR``/``EX``). Frames it cannot decode are ignored (and listed
in ``errors``), as a generator would. Link faults from the shared
:class:`~simulators.faults.FaultInjector`: ``comm_timeout`` makes it stop answering
(requests are read and dropped, nothing is executed, no events are sent; injected with a
count, the next ``count`` requests go unanswered), ``dropped_reply`` executes one request
and drops its reply (injected with a count, that many).
:meth:`GeneratorWireServer.send_raw` writes arbitrary bytes (line noise) and
:meth:`GeneratorWireServer.drop_client` cuts the TCP clients off, for link tests.

Standalone
----------
``python -m simulators.generator_wire`` runs one simulated generator behind a pty and/or
a TCP listener until SIGTERM or SIGINT (exit status 0), with a line-based control socket
for faults. Run it with ``--help`` for the options; on start it prints one line per
endpoint to stdout, then ``DIOS-WIRE ready``, and flushes::

    DIOS-WIRE pty /dev/pts/5                 (the device path a driver opens)
    DIOS-WIRE tcp 127.0.0.1:40123            (socket://127.0.0.1:40123 for pyserial)
    DIOS-WIRE control 127.0.0.1:40124        (the control socket)
    DIOS-WIRE ready

Listeners bind to 127.0.0.1 unless ``HOST`` says otherwise (port 0: a free one). Each
listener (generator TCP and control) takes at most ``--max-clients`` connections at once
(default 4; more are closed at once) and closes a connection that sent nothing for
``--idle-timeout`` seconds (default 600, 0 = never). With both ``--pty`` and ``--tcp`` the
two endpoints front the same generator (one tube, one heat model, one set of faults);
drive it through one of them at a time, as a prepare or exposure is reported only on the
endpoint that started it. ``--clock-scale`` speeds up the simulated physics only (prep,
exposure, cooling); the link answers in real time. Logging goes to stderr.

The control socket (:class:`WireControl`) takes one command a line and answers one line,
``ok ...`` or ``error <reason>``::

    inject NAME [COUNT]   ->  ok inject NAME [COUNT]   (persistent, or for COUNT hits)
    clear [NAME]          ->  ok clear NAME|all
    status                ->  ok state=IDLE|PREP|READY|EXP faults=NAME[:LEFT],...|none
                              exposures=N heat=PCT requests=N ignored=N dropped=N
                              clients=N refused=N evicted=N shots=N
    drop                  ->  ok drop N                (cut the TCP hosts off)
    faults                ->  ok comm_timeout,dropped_reply,interlock_open,tube_overheat
    help                  ->  ok <the commands>
    quit                  ->  ok bye                   (and the connection closes)

The simulated generator emits its X-rays into an :class:`~simulators.room.XrayRoom` with
no detector in it (``shots`` counts them): a simulated panel elsewhere takes its X-rays
from the generator's exposure events instead.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence

from dios.clock import SimClock
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
from simulators.room import XrayRoom

log = logging.getLogger(__name__)

MODEL_NAME = "DIOS-SIMGEN"
#: The faults that act on the generator and its link (the others belong to the detector).
GENERATOR_FAULTS = ("comm_timeout", "dropped_reply", "interlock_open", "tube_overheat")
#: Seconds a TCP host may take to accept the bytes sent to it before it is disconnected.
SEND_TIMEOUT_S = 2.0
#: Default cap on simultaneous TCP hosts (per listener).
MAX_CLIENTS = 4
#: Longest control line accepted (bytes).
MAX_CONTROL_LINE = 256
ENDPOINT_TAG = "DIOS-WIRE"


def wire_state(model: GeneratorModel) -> str:
    """The generator's state as ``ST`` reports it: IDLE, PREP, READY or EXP."""
    if model.exposing:
        return "EXP"
    if model.preparing:
        return "PREP"
    return "READY" if model.prepared else "IDLE"


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
    host : str
        TCP address to bind (default loopback only).
    max_clients : int
        TCP hosts connected at once; more are refused (closed at once).
    idle_timeout : float, optional
        Seconds after which a TCP host that sent nothing is disconnected (None: never).
    """

    def __init__(self, sim: SimGeneratorBackend | GeneratorModel, endpoint: str = "pty",
                 faults: FaultInjector | None = None, port: int = 0, *, host: str = "127.0.0.1",
                 max_clients: int = MAX_CLIENTS, idle_timeout: float | None = None) -> None:
        model = sim.model if isinstance(sim, SimGeneratorBackend) else sim
        if not isinstance(model, GeneratorModel):
            raise TypeError("sim must be a SimGeneratorBackend or a GeneratorModel")
        if endpoint not in ("pty", "tcp"):
            raise ValueError(f"endpoint must be 'pty' or 'tcp', not {endpoint!r}")
        if max_clients < 1:
            raise ValueError("max_clients must be >= 1")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError("idle_timeout must be > 0 seconds (or None: never)")
        self.model = model
        self.faults = faults or model.faults
        self.endpoint = endpoint
        self.host = host
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.errors: deque[str] = deque(maxlen=200)
        self.requests = 0
        self.dropped = 0
        self.ignored = 0
        #: TCP connections refused because ``max_clients`` hosts were connected
        self.refused = 0
        #: TCP hosts disconnected for idling or for not taking their bytes
        self.evicted = 0
        self._port = port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._op: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._exec_lock = threading.Lock()
        self._event_seq = itertools.count(1)
        self._op_ids = itertools.count(1)
        self._op_id = 0  # the latest prepare or exposure (events and ACKs carry it as OP)
        self._master: int | None = None
        self._slave: int | None = None
        self._listener: socket.socket | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._clients_lock = threading.Lock()
        self.device_path = ""
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL the driver opens (``serial://PATH`` for the pty: the driver's spelling)."""
        if self.endpoint == "pty":
            return f"serial://{self.device_path}"
        return f"socket://{self.address}"

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the TCP listener (a loopback host for a wildcard bind)."""
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def clients(self) -> int:
        """TCP hosts connected now."""
        with self._clients_lock:
            return len(self._clients)

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
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._listener = socket.create_server((self.host, self._port), family=family,
                                                  backlog=self.max_clients)
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
        with self._clients_lock:
            readers = list(self._clients.values())
        self.drop_client()
        for reader in readers:
            reader.join(2.0)
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
            self._feed(decoder, data, self._send_pty)

    def _serve_tcp(self) -> None:
        listener = self._listener
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()  # type: ignore[union-attr]
            except (TimeoutError, OSError):
                continue
            with self._clients_lock:
                full = len(self._clients) >= self.max_clients
                if not full:
                    reader = threading.Thread(target=self._serve_client, args=(conn, peer),
                                              name="gen-wire-client", daemon=True)
                    self._clients[conn] = reader
            if full:
                self.refused += 1
                log.warning("wire server: refusing %s, %d host(s) already connected", peer,
                            self.max_clients)
                with contextlib.suppress(OSError):
                    conn.close()
                continue
            reader.start()

    def _serve_client(self, conn: socket.socket, peer: object) -> None:
        log.info("wire server: host %s connected", peer)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.settimeout(SEND_TIMEOUT_S)  # bounds sendall; reads wait in select

        def reply(data: bytes) -> None:
            with self._send_lock:
                self._send_tcp(conn, data)

        decoder = FrameDecoder()
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._clients_lock:
                    if conn not in self._clients:
                        break
                if self.idle_timeout is not None and time.monotonic() - last > self.idle_timeout:
                    self.evicted += 1
                    log.warning("wire server: host %s idle for %g s, disconnected", peer,
                                self.idle_timeout)
                    break
                try:
                    ready, _, _ = select.select([conn], [], [], 0.05)
                    if not ready:
                        continue
                    data = conn.recv(4096)
                except (OSError, ValueError):
                    break
                if not data:
                    break
                last = time.monotonic()
                self._feed(decoder, data, reply)
        finally:
            with self._clients_lock:
                self._clients.pop(conn, None)
            with contextlib.suppress(OSError):
                conn.close()
            log.info("wire server: host %s gone", peer)

    def drop_client(self) -> int:
        """Close every TCP host's connection (the driver sees the link go); how many."""
        with self._clients_lock:
            conns = list(self._clients)
            for conn in conns:  # their readers see the shutdown, close and leave
                self._clients.pop(conn, None)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(conns)

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` to the link as it is (noise, broken frames); every TCP host gets it."""
        self._broadcast(data)

    def _broadcast(self, data: bytes) -> None:
        with self._send_lock:
            if self.endpoint == "pty":
                self._write_pty(data)
                return
            with self._clients_lock:
                conns = list(self._clients)
            for conn in conns:
                self._send_tcp(conn, data)

    def _send_pty(self, data: bytes) -> None:
        with self._send_lock:
            self._write_pty(data)

    def _send_tcp(self, conn: socket.socket, data: bytes) -> None:
        """Send to one host (send lock held); a host that does not take it is cut off."""
        try:
            conn.sendall(data)
        except OSError as exc:
            log.info("wire server: host gone or stuck while sending: %s", exc)
            if isinstance(exc, TimeoutError):
                self.evicted += 1
            with self._clients_lock:
                self._clients.pop(conn, None)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _write_pty(self, data: bytes) -> None:
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

    # --- protocol ---------------------------------------------------------------------------------
    def _feed(self, decoder: FrameDecoder, data: bytes, reply: Callable[[bytes], None]) -> None:
        for item in decoder.feed(data):
            if isinstance(item, ProtocolError):
                self.errors.append(str(item))
                continue
            if item.kind != REQUEST:
                self.errors.append(f"unexpected {item.kind} frame from host")
                continue
            if self.faults.consume("comm_timeout"):
                self.ignored += 1
                continue
            with self._exec_lock:
                self.requests += 1
                answer = self._handle(item)
                if self.faults.consume("dropped_reply"):
                    self.dropped += 1
                    continue
                reply(encode(answer))

    def _event(self, name: str, fields: dict[str, str] | None = None) -> None:
        if self.faults.active("comm_timeout"):
            return
        self._broadcast(encode(Message(EVENT, next(self._event_seq) % 256, name, fields or {})))

    def _state(self) -> str:
        return wire_state(self.model)

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



# --- standalone: control socket and command line ---------------------------------------------------
def parse_fault(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME=COUNT`` -> (name, count or None); ValueError naming the problem."""
    name, sep, count_text = text.partition("=")
    name = name.strip()
    if name not in GENERATOR_FAULTS:
        raise ValueError(f"unknown generator fault {name!r}; known: {', '.join(GENERATOR_FAULTS)}")
    if not sep:
        return name, None
    try:
        count = int(count_text)
    except ValueError:
        raise ValueError(f"fault count must be an integer >= 1, not {count_text!r}") from None
    if count < 1:
        raise ValueError(f"fault count must be an integer >= 1, not {count}")
    return name, count


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or a bare ``PORT`` (on ``default_host``); 0 = a free port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = default_host, text.strip()
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 0..65535, not {text!r}")
    return host, int(port_text)


class WireControl:
    """The standalone simulator's control socket: faults in, status out (one line each).

    Commands and answers are listed in the module docstring. At most ``max_clients``
    connections at a time (more get ``error too many connections`` and are closed), a
    connection idle for ``idle_timeout`` seconds is closed (None: never), lines longer than
    :data:`MAX_CONTROL_LINE` bytes are refused.
    """

    HELP = "inject NAME [COUNT] | clear [NAME] | status | drop | faults | help | quit"

    def __init__(self, model: GeneratorModel, servers: Sequence[GeneratorWireServer],
                 room: XrayRoom | None = None, host: str = "127.0.0.1", port: int = 0, *,
                 max_clients: int = MAX_CLIENTS, idle_timeout: float | None = None) -> None:
        self.model = model
        self.faults = model.faults
        self.servers = list(servers)
        self.room = room
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self._sock: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> WireControl:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family, backlog=self.max_clients)
        sock.settimeout(0.1)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="gen-wire-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._lock:
            conns = list(self._clients)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                full = len(self._clients) >= self.max_clients
                if not full:
                    self._clients.add(conn)
            if full:
                with contextlib.suppress(OSError):
                    conn.settimeout(1.0)
                    conn.sendall(b"error too many connections\n")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="gen-wire-control-client").start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        last = time.monotonic()
        conn.settimeout(SEND_TIMEOUT_S)
        try:
            while not self._stop.is_set():
                if self.idle_timeout is not None and time.monotonic() - last > self.idle_timeout:
                    conn.sendall(b"error idle timeout\n")
                    return
                ready, _, _ = select.select([conn], [], [], 0.1)
                if not ready:
                    continue
                data = conn.recv(1024)
                if not data:
                    return
                last = time.monotonic()
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer, done = self.answer(line.decode("ascii", "replace"))
                    conn.sendall(answer.encode("ascii", "replace") + b"\n")
                    if done:
                        return
                if len(buf) > MAX_CONTROL_LINE:
                    conn.sendall(b"error line too long\n")
                    return
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def status(self) -> str:
        faults = ",".join(name if left is None else f"{name}:{left}"
                          for name, left in sorted(self.faults.snapshot().items())) or "none"
        s = self.servers
        return (f"state={wire_state(self.model)} faults={faults} exposures={self.model.exposures} "
                f"heat={self.model.heat_percent():.1f} requests={sum(x.requests for x in s)} "
                f"ignored={sum(x.ignored for x in s)} dropped={sum(x.dropped for x in s)} "
                f"clients={sum(x.clients for x in s)} refused={sum(x.refused for x in s)} "
                f"evicted={sum(x.evicted for x in s)} shots={self.room.shots if self.room else 0}")

    def answer(self, line: str) -> tuple[str, bool]:
        """The answer to one command line, and whether the connection ends after it."""
        words = line.split()
        cmd, args = (words[0].lower(), words[1:]) if words else ("", [])
        try:
            if cmd == "inject" and len(args) in (1, 2):
                name, count = parse_fault(args[0] if len(args) == 1 else f"{args[0]}={args[1]}")
                self.faults.inject(name, count)
                log.info("control: inject %s%s", name, "" if count is None else f" x{count}")
                return f"ok inject {name}" + ("" if count is None else f" {count}"), False
            if cmd == "clear" and len(args) <= 1:
                if args:
                    parse_fault(args[0])
                self.faults.clear(args[0] if args else None)
                log.info("control: clear %s", args[0] if args else "all")
                return f"ok clear {args[0] if args else 'all'}", False
        except ValueError as exc:
            return f"error {exc}", False
        if cmd == "status" and not args:
            return "ok " + self.status(), False
        if cmd == "drop" and not args:
            return f"ok drop {sum(s.drop_client() for s in self.servers if s.endpoint == 'tcp')}", False
        if cmd == "faults" and not args:
            return "ok " + ",".join(GENERATOR_FAULTS), False
        if cmd == "help" and not args:
            return "ok " + self.HELP, False
        if cmd == "quit" and not args:
            return "ok bye", True
        return f"error expected: {self.HELP}", False


def _address_arg(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault_arg(text: str) -> tuple[str, int | None]:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, not {text!r}")
    return value


def _seconds_or_never(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0 = never), not {text!r}")
    return value or None


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected an integer 1..64, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators.generator_wire",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the simulated X-ray generator's serial protocol on a pty and/or a\n"
                    "TCP port until SIGTERM/SIGINT (exit status 0).",
        epilog=f"""\
stdout, on start (one line per endpoint, then ready; flushed):
  {ENDPOINT_TAG} pty /dev/pts/N          the device path a driver opens
  {ENDPOINT_TAG} tcp HOST:PORT           a driver opens socket://HOST:PORT
  {ENDPOINT_TAG} control HOST:PORT       the control socket
  {ENDPOINT_TAG} ready

control socket, one command a line, answered 'ok ...' or 'error REASON':
  inject NAME [COUNT]   clear [NAME]   status   drop (cut TCP hosts off)
  faults   help   quit

generator faults: {', '.join(GENERATOR_FAULTS)}
""")
    p.add_argument("--tcp", metavar="HOST:PORT", type=_address_arg,
                   help="serve on a TCP port (a driver opens socket://HOST:PORT); port 0 picks a "
                        "free one; HOST defaults to 127.0.0.1")
    p.add_argument("--pty", action="store_true",
                   help="serve on a pty pair; the slave's path is what a driver opens")
    p.add_argument("--control", metavar="HOST:PORT", type=_address_arg,
                   help="line-based control socket for faults and status (port 0: a free one)")
    p.add_argument("--clock-scale", metavar="X", type=_positive, default=1.0,
                   help="simulated generator time runs X times faster than real time "
                        "(prep, exposure, anode cooling; the link itself is real time); default 1")
    p.add_argument("--fault", metavar="NAME[=COUNT]", type=_fault_arg, action="append", default=[],
                   help="inject a fault at start, persistent or for COUNT hits (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the readback deviations (default 0)")
    p.add_argument("--max-clients", metavar="N", type=_count, default=MAX_CLIENTS,
                   help=f"connections each TCP listener takes at once, more are closed at once "
                        f"(default {MAX_CLIENTS})")
    p.add_argument("--idle-timeout", metavar="SECONDS", type=_seconds_or_never, default=600.0,
                   help="close a TCP or control connection that sent nothing for this long "
                        "(default 600; 0 = never)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log to stderr: -v info, -vv debug")
    return p


def _announce(kind: str, address: str) -> None:
    print(f"{ENDPOINT_TAG} {kind} {address}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.tcp and not args.pty:
        parser.error("give --tcp HOST:PORT and/or --pty")
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)])
    faults = FaultInjector()
    for name, count in args.fault:
        faults.inject(name, count)
    room = XrayRoom()  # no detector: X-rays reach a simulated panel through exposure events
    model = GeneratorModel(clock=SimClock(args.clock_scale), faults=faults, room=room, seed=args.seed)
    servers: list[GeneratorWireServer] = []
    control: WireControl | None = None
    try:
        if args.pty:
            servers.append(GeneratorWireServer(model, "pty", faults).start())
            _announce("pty", servers[-1].device_path)
        if args.tcp:
            host, port = args.tcp
            if host not in ("127.0.0.1", "::1", "localhost"):
                log.warning("serving the generator on %s: anyone who reaches it can fire X-rays", host)
            servers.append(GeneratorWireServer(model, "tcp", faults, port, host=host,
                                               max_clients=args.max_clients,
                                               idle_timeout=args.idle_timeout).start())
            _announce("tcp", servers[-1].address)
        if args.control:
            host, port = args.control
            control = WireControl(model, servers, room, host, port, max_clients=args.max_clients,
                                  idle_timeout=args.idle_timeout).start()
            _announce("control", control.address)
        print(f"{ENDPOINT_TAG} ready", flush=True)
        log.info("generator simulator serving (clock scale %g, faults %s)", args.clock_scale,
                 faults.snapshot() or "none")
        while not stop.wait(0.2):
            pass
        log.info("stopping")
    except OSError as exc:
        print(f"generator_wire: {exc}", file=sys.stderr)
        return 1
    finally:
        if control is not None:
            control.close()
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
