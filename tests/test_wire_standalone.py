"""The standalone wire simulator (``python -m simulators.generator_wire``) as a real process.

The real driver (:class:`drivers.generator_serial.SerialGeneratorBackend`) drives it through
the pty it announces and through ``socket://``; faults go in through its control socket;
SIGTERM/SIGINT end it with status 0. The driver's waits are checked against the wall clock
with silent and half-silent peers in process.

Every wait here has a generous deadline and polls: these tests must hold on a machine whose
cores are busy with other work. Elapsed-time checks assert lower bounds only.
"""

from __future__ import annotations

import ast
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dios.codes import COMM_LOST, INTERLOCK_OPEN, TIMEOUT, DiosError
from dios.devices.backends import Technique
from drivers.generator_protocol import REPLY, FrameDecoder, Message, encode
from drivers.generator_serial import SerialGeneratorBackend
from simulators.generator_wire import MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
#: Seconds to wait for anything a subprocess does (start, answer, exit) on a loaded machine.
DEADLINE = 120.0
LINE = re.compile(r"^DIOS-WIRE (pty|tcp|control) (\S+)$")
TECHNIQUE = Technique(kv=81, ma=200, ms=20, mas=4)


class Wire:
    """A running ``python -m simulators.generator_wire`` and its announced endpoints."""

    def __init__(self, *args: str, tmp: Path) -> None:
        self.stderr_path = tmp / "wire.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "simulators.generator_wire", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr)
        self.lines: list[str] = []
        self.endpoints: dict[str, str] = {}
        self._control: socket.socket | None = None
        self._control_file = None

    def read_endpoints(self) -> dict[str, str]:
        """Read stdout up to ``DIOS-WIRE ready``; every line before it names an endpoint."""
        deadline = time.monotonic() + DEADLINE
        buf = b""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while "DIOS-WIRE ready" not in self.lines:
            left = deadline - time.monotonic()
            assert left > 0, f"no ready line in {DEADLINE} s: {self.lines} {self.stderr()}"
            if not select.select([fd], [], [], min(left, 1.0))[0]:
                assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.stderr()}"
                continue
            chunk = os.read(fd, 4096)
            assert chunk, f"stdout closed, exit {self.proc.poll()}: {self.stderr()}"
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.append(line.decode())
        for line in self.lines[:-1]:
            m = LINE.match(line)
            assert m, f"not an endpoint line: {line!r}"
            self.endpoints[m.group(1)] = m.group(2)
        return self.endpoints

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def control(self, command: str) -> str:
        """Send one control line, return the answer line."""
        if self._control is None:
            host, port = self.endpoints["control"].rsplit(":", 1)
            self._control = socket.create_connection((host, int(port)), timeout=DEADLINE)
            self._control_file = self._control.makefile("rwb")
        f = self._control_file
        f.write(command.encode() + b"\n")  # type: ignore[union-attr]
        f.flush()  # type: ignore[union-attr]
        answer = f.readline().decode().strip()  # type: ignore[union-attr]
        assert answer, f"control socket closed after {command!r}"
        return answer

    def status(self) -> dict[str, str]:
        answer = self.control("status")
        assert answer.startswith("ok "), answer
        return dict(word.split("=", 1) for word in answer[3:].split())

    def tcp_url(self) -> str:
        return f"socket://{self.endpoints['tcp']}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process, wait for its exit status, close what the test held."""
        if self._control is not None:
            self._control_file.close()  # type: ignore[union-attr]
            self._control.close()
            self._control = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"no exit {DEADLINE} s after signal {sig}: {self.stderr()}") from None
        finally:
            self.proc.stdout.close()  # type: ignore[union-attr]
            self._stderr.close()
        return rc


ARGS = ("--pty", "--tcp", "127.0.0.1:0", "--control", "127.0.0.1:0", "--clock-scale", "50")


@pytest.fixture()
def wire(tmp_path: Path) -> Iterator[Wire]:
    w = Wire(*ARGS, tmp=tmp_path)
    try:
        w.read_endpoints()
        yield w
    finally:
        w.stop()


def _driver(wire: Wire, transport: str, **settings: float) -> SerialGeneratorBackend:
    url = wire.endpoints["pty"] if transport == "pty" else wire.tcp_url()
    # generous reply timeout: only a failing test ever waits for it
    settings = {"timeout": 2.0, "retries": 2, **settings}
    drv = SerialGeneratorBackend(url, **settings)  # type: ignore[arg-type]
    drv.connect()
    return drv


def _code(fn: object, *args: object) -> str:
    with pytest.raises(DiosError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.code.name


# --- the process and its endpoints ----------------------------------------------------------------
def test_endpoint_lines_name_a_pty_a_loopback_port_and_the_control_socket(wire: Wire) -> None:
    assert [line.split()[1] for line in wire.lines] == ["pty", "tcp", "control", "ready"]
    assert stat.S_ISCHR(os.stat(wire.endpoints["pty"]).st_mode)
    for kind in ("tcp", "control"):
        host, port = wire.endpoints[kind].rsplit(":", 1)
        assert host == "127.0.0.1" and 0 < int(port) < 65536
    assert wire.status() == {"state": "IDLE", "faults": "none", "exposures": "0", "heat": "0.0",
                             "requests": "0", "ignored": "0", "dropped": "0", "clients": "0",
                             "refused": "0", "evicted": "0", "shots": "0"}
    assert wire.control("faults") == "ok comm_timeout,dropped_reply,interlock_open,tube_overheat"
    assert wire.control("help").startswith("ok inject NAME [COUNT]")
    assert wire.control("inject lost_frame").startswith("error unknown generator fault 'lost_frame'")
    assert wire.control("inject dropped_reply 0") == "error fault count must be an integer >= 1, not 0"
    assert wire.control("fire").startswith("error expected: inject NAME [COUNT]")


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_driver_runs_an_exposure_through_the_standalone_simulator(wire: Wire, transport: str) -> None:
    drv = _driver(wire, transport)
    try:
        assert drv.model == MODEL_NAME
        assert drv.limits().kv_max == 150
        assert drv.apply(TECHNIQUE) == TECHNIQUE
        assert drv.technique() == TECHNIQUE
        drv.prepare(threading.Event())
        rec = drv.expose(threading.Event())
        assert rec.kv == pytest.approx(81, rel=0.03) and rec.mas == pytest.approx(4, rel=0.05)
        assert rec.ms == pytest.approx(20, abs=1) and rec.dap_dgycm2 > 0 and rec.heat_hu > 0
        rb = drv.readback()
        assert rb.interlock_closed and rb.heat_hu > 0 and rb.fault == ""
        st = wire.status()
        assert st["exposures"] == "1" and st["shots"] == "1" and st["state"] == "IDLE"
        assert st["clients"] == ("1" if transport == "tcp" else "0")
        assert drv.protocol_error_count == 0
    finally:
        drv.close()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_faults_injected_and_cleared_through_the_control_socket(wire: Wire, transport: str) -> None:
    drv = _driver(wire, transport, timeout=0.5, retries=1)
    try:
        drv.apply(TECHNIQUE)
        assert wire.control("inject interlock_open") == "ok inject interlock_open"
        assert wire.status()["faults"] == "interlock_open"
        assert _code(drv.prepare, threading.Event()) == INTERLOCK_OPEN.name
        assert drv.readback().interlock_closed is False
        assert _code(drv.reset) == INTERLOCK_OPEN.name  # the door is still open
        assert wire.control("clear interlock_open") == "ok clear interlock_open"
        drv.reset()
        assert drv.readback().interlock_closed is True

        assert wire.control("inject comm_timeout") == "ok inject comm_timeout"
        assert _code(drv.readback) in (TIMEOUT.name, COMM_LOST.name)
        assert _code(drv.apply, TECHNIQUE) in (TIMEOUT.name, COMM_LOST.name)
        assert int(wire.status()["ignored"]) >= 4  # two requests, two attempts each
        assert wire.control("clear") == "ok clear all"
        assert wire.status()["faults"] == "none"
        if not drv.connected:
            drv.connect()
        assert drv.readback().interlock_closed

        # counted: the next request goes unanswered once, the retry gets through
        assert wire.control("inject comm_timeout 1") == "ok inject comm_timeout 1"
        before = drv.attempts
        assert drv.apply(TECHNIQUE) == TECHNIQUE
        assert drv.attempts == before + 2 and wire.status()["faults"] == "none"
        assert wire.control("inject dropped_reply 1") == "ok inject dropped_reply 1"
        before = drv.attempts
        assert drv.readback().interlock_closed
        assert drv.attempts == before + 2 and wire.status()["dropped"] == "1"

        drv.prepare(threading.Event())
        assert drv.expose(threading.Event()).kv == pytest.approx(81, rel=0.03)
    finally:
        drv.close()


def test_faults_given_at_start_and_a_dropped_tcp_host_is_comm_lost(tmp_path: Path) -> None:
    w = Wire("--tcp", "127.0.0.1:0", "--control", "0", "--clock-scale", "50",
             "--fault", "interlock_open", "--fault", "dropped_reply=2", tmp=tmp_path)
    try:
        w.read_endpoints()
        assert set(w.endpoints) == {"tcp", "control"}
        assert w.status()["faults"] == "dropped_reply:2,interlock_open"
        drv = _driver(w, "tcp", timeout=0.5, retries=2)  # ID: two replies dropped, third taken
        try:
            assert w.status()["dropped"] == "2" and drv.attempts == 3
            assert _code(drv.prepare, threading.Event()) == INTERLOCK_OPEN.name
            w.control("clear interlock_open")
            assert w.control("drop") == "ok drop 1"
            deadline = time.monotonic() + DEADLINE
            while drv.connected:
                assert time.monotonic() < deadline, "driver never saw the connection close"
                time.sleep(0.01)
            assert _code(drv.readback) == COMM_LOST.name
            drv.reset()  # reopens the port, then clears the latched interlock
            assert drv.connected and drv.readback().interlock_closed
        finally:
            drv.close()
    finally:
        assert w.stop() == 0


def test_tcp_connection_cap(tmp_path: Path) -> None:
    w = Wire("--tcp", "127.0.0.1:0", "--control", "0", "--max-clients", "1", tmp=tmp_path)
    try:
        w.read_endpoints()
        first = _driver(w, "tcp")
        try:
            host, port = w.endpoints["tcp"].rsplit(":", 1)
            # a second host is closed at once while the first holds the only slot
            with socket.create_connection((host, int(port)), timeout=DEADLINE) as second:
                assert second.recv(4096) == b""
            st = w.status()
            assert st["refused"] == "1" and st["clients"] == "1"
            assert first.readback().interlock_closed  # the first is served as before
        finally:
            first.close()
        deadline = time.monotonic() + DEADLINE
        while w.status()["clients"] != "0":  # the slot is free again
            assert time.monotonic() < deadline
            time.sleep(0.01)
        again = _driver(w, "tcp")
        assert again.readback().interlock_closed
        again.close()
    finally:
        assert w.stop() == 0


def test_tcp_idle_timeout(tmp_path: Path) -> None:
    w = Wire("--tcp", "127.0.0.1:0", "--control", "0", "--idle-timeout", "0.5", tmp=tmp_path)
    try:
        host, port = w.read_endpoints()["tcp"].rsplit(":", 1)
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=DEADLINE) as idle:
            assert idle.recv(4096) == b""  # closed after half a second of silence
        assert time.monotonic() - started >= 0.5 * 0.98
        assert w.status()["evicted"] == "1"
    finally:
        assert w.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_zero_and_leaves_no_process(tmp_path: Path, sig: int) -> None:
    w = Wire(*ARGS, tmp=tmp_path)
    eps = w.read_endpoints()
    drivers = [_driver(w, "pty"), _driver(w, "tcp")]
    try:
        w.control("status")
        pid = w.proc.pid
        assert w.stop(sig) == 0, w.stderr()
    finally:
        for drv in drivers:
            drv.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped: nothing left running under that id
    assert "Traceback" not in w.stderr()
    host, port = eps["control"].rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


@pytest.mark.parametrize(("args", "message"), [
    ((), "give --tcp HOST:PORT and/or --pty"),
    (("--pty", "--fault", "lost_frame"), "unknown generator fault 'lost_frame'"),
    (("--pty", "--fault", "dropped_reply=0"), "fault count must be an integer >= 1"),
    (("--tcp", "127.0.0.1:99999"), "port 0..65535"),
    (("--pty", "--clock-scale", "0"), "expected a number > 0"),
])
def test_command_line_errors_exit_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "simulators.generator_wire", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=DEADLINE)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert run.stdout == ""


# --- the driver runs on the wall clock ---------------------------------------------------------------
class Peer:
    """A TCP peer that reads requests and answers only the ones named in ``answers``."""

    def __init__(self, answers: dict[str, dict[str, str]] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"socket://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conns: list[socket.socket] = []
        decoders: dict[socket.socket, FrameDecoder] = {}
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                conns.append(conn)
                decoders[conn] = FrameDecoder()
            except (TimeoutError, OSError):
                pass
            for conn in [c for c in conns if select.select([c], [], [], 0)[0]]:
                data = conn.recv(4096)
                for msg in decoders[conn].feed(data):
                    if isinstance(msg, Message):
                        self.requests.append(msg.name)
                        if msg.name in self.answers:
                            conn.sendall(encode(Message(REPLY, msg.seq, "ACK", self.answers[msg.name])))
        for conn in conns:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        self._sock.close()


def test_reply_timeout_runs_on_the_wall_clock_whatever_the_simulation_clock() -> None:
    peer = Peer()  # hears everything, answers nothing
    try:
        drv = SerialGeneratorBackend(peer.url, timeout=0.4, retries=1)
        started = time.monotonic()
        with pytest.raises(DiosError) as exc:
            drv.connect()
        elapsed = time.monotonic() - started
        assert exc.value.code is TIMEOUT
        assert elapsed >= 2 * 0.4 * 0.98, elapsed  # two attempts of 0.4 s; never early
        assert peer.requests == ["ID", "ID"]
    finally:
        peer.close()


def test_prepare_waits_its_event_on_the_wall_clock() -> None:
    # the peer accepts the prepare but never reports RDY
    peer = Peer({"ID": {"MDL": "SILENT", "VER": "1"}, "PR": {"OP": "1"}, "AB": {}})
    try:
        drv = SerialGeneratorBackend(peer.url, timeout=0.3, retries=0, prep_timeout=0.6)
        drv.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DiosError) as exc:
                drv.prepare(threading.Event())
            elapsed = time.monotonic() - started
            assert exc.value.code is TIMEOUT and "RDY" in exc.value.detail
            assert elapsed >= (0.6 + 0.3) * 0.98, elapsed  # prep_timeout + timeout, never early
        finally:
            drv.close()
    finally:
        peer.close()


ALLOWED_IN_DRIVERS = ("dios.codes", "dios.devices.backends", "drivers", "serial", "usb")


def test_drivers_import_no_simulation_clock() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in sorted((ROOT / "drivers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                ok = top in stdlib or any(name == a or name.startswith(a + ".")
                                          for a in ALLOWED_IN_DRIVERS)
                assert ok, f"{path.name} imports {name}"
    assert not hasattr(SerialGeneratorBackend("loop://"), "clock")
