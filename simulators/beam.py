"""A beam trigger for benches: X-rays into the simulated room from outside the engine.

A bench whose generator is not driven by the engine (fired by hand, or by its own
console) still wants the simulated panel to integrate each exposure. :class:`BeamTrigger`
listens on a loopback TCP port for one line per shot::

    shot KV MAS [MS]      ->  ok 1          (the shot count)
    status                ->  ok shots=N armed=0|1
    anything else         ->  error <reason>

and emits each shot into the :class:`~simulators.room.XrayRoom`, where an armed simulated
panel takes it like any other X-rays. It accepts at most ``max_clients`` connections at a
time, closes a connection idle for ``idle_timeout`` seconds, refuses lines longer than
256 bytes, and binds to 127.0.0.1 unless told otherwise.

>>> from simulators.room import XrayRoom
>>> trig = BeamTrigger(XrayRoom()).start()
>>> trig.port > 0
True
>>> trig.close()
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable

from simulators.room import XrayRoom, XrayShot

log = logging.getLogger(__name__)

MAX_LINE = 256


class BeamTrigger:
    """A line-based TCP trigger that fires shots into ``room`` (see the module docstring)."""

    def __init__(self, room: XrayRoom, host: str = "127.0.0.1", port: int = 0, *,
                 max_clients: int = 4, idle_timeout: float = 60.0,
                 armed: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.room = room
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.armed = armed or (lambda: False)
        self.clock = clock
        self.shots = 0
        self._sock: socket.socket | None = None
        self._clients = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> BeamTrigger:
        sock = socket.create_server((self.host, self.port))
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="dios-beam-trigger").start()
        log.info("beam trigger on %s:%d", self.host, self.port)
        return self

    def fire(self, kv: float, mas: float, ms: float | None = None) -> int:
        """Emit one shot (in process); returns the shot count."""
        if not (20.0 <= kv <= 200.0 and 0.0 < mas <= 2000.0):
            raise ValueError(f"shot outside 20-200 kV / 0-2000 mAs: {kv:g} kV {mas:g} mAs")
        ms = float(ms) if ms else 100.0
        if not (math.isfinite(ms) and 0.0 < ms <= 20000.0):
            raise ValueError(f"exposure time {ms:g} ms outside 0-20000 ms")
        self.room.emit(XrayShot(kv, mas * 1000.0 / ms, ms, mas, 1, self.clock()))
        with self._lock:
            self.shots += 1
            return self.shots

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                full = self._clients >= self.max_clients
                if not full:
                    self._clients += 1
            if full:
                conn.sendall(b"error too many connections\n")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(self.idle_timeout)
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1024)
                except TimeoutError:
                    conn.sendall(b"error idle timeout\n")
                    return
                if not data:
                    return
                buf += data
                if len(buf) > MAX_LINE and b"\n" not in buf:
                    conn.sendall(b"error line too long\n")
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(self._answer(line.decode("ascii", "replace").split()) + b"\n")
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self._clients -= 1

    def _answer(self, words: list[str]) -> bytes:
        if words[:1] == ["status"]:
            return f"ok shots={self.shots} armed={int(bool(self.armed()))}".encode()
        if words[:1] == ["shot"] and len(words) in (3, 4):
            try:
                n = self.fire(*(float(w) for w in words[1:]))
            except ValueError as exc:
                return f"error {exc}".encode()
            return f"ok {n}".encode()
        return b"error expected: shot KV MAS [MS] | status"

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
