"""Load tools for the MessagePack-RPC bench (``test_bench_rpc.py``).

* :func:`start_echo_server`: the floor, a bare asyncio MessagePack-RPC echo server on
  loopback, on its own event loop in a thread, answering ``[0, id, m, p]`` with
  ``[1, id, nil, p]``. ``python bench/rpc_load.py echo`` runs it in a process of its own
  (prints ``ECHO <port>``, stops at end of input), the way ``dios serve`` runs its loop.
* :class:`RawClient`: a sequential client over a raw socket (msgpack Packer/Unpacker).
* :class:`LoadPool`: N client processes, one connection each, that run calls back to back
  for a time window on command and report their count and latencies; calls/s is the sum
  of the processes' own rates. Separate processes, not threads: a client in the bench's
  process would share one GIL among all connections and measure the client, not the server.
* :class:`ServeProcess`: ``dios serve`` as a subprocess on free loopback ports, with the
  admin's one-time password changed, for a bench against the real console.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack

PASSWORD = "Bench-Passw0rd-1"


# --- the floor --------------------------------------------------------------------------------
class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.unpacker = msgpack.Unpacker(raw=False)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        out = [msgpack.packb([1, msg[1], None, msg[3]], use_bin_type=True)
               for msg in self.unpacker
               if isinstance(msg, list) and len(msg) == 4 and msg[0] == 0]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]


def start_echo_server(host: str = "127.0.0.1", port: int = 0) -> tuple[int, Any]:
    """Start the echo server on its own loop in a daemon thread.

    Returns
    -------
    (port, stop)
        The port it listens on and a function that stops it.
    """
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(_Echo, host, port))
        box["port"] = server.sockets[0].getsockname()[1]
        box["loop"] = loop
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, name="rpc-echo", daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("the echo server did not start within 60 s")

    def stop() -> None:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(30)

    return box["port"], stop


class EchoProcess:
    """The echo server in a process of its own (``python bench/rpc_load.py echo``)."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "echo"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = ""
        deadline = time.monotonic() + timeout
        while not line.startswith("ECHO ") and time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line and self.proc.poll() is not None:
                break
        if not line.startswith("ECHO "):
            self.close()
            raise RuntimeError("the echo process did not report its port")
        self.port = int(line.split()[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


# --- clients ----------------------------------------------------------------------------------
class RawClient:
    """A sequential MessagePack-RPC client over a raw socket."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 120.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=64 << 20)
        self.ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> tuple[Any, Any]:
        """(error, result) of one call; notifications in between are skipped."""
        msgid = next(self.ids)
        self.sock.sendall(msgpack.packb([0, msgid, method, list(params)], use_bin_type=True))
        while True:
            for msg in self.unpacker:
                if msg[0] == 1 and msg[1] == msgid:
                    return msg[2], msg[3]
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.unpacker.feed(chunk)

    def ok(self, method: str, *params: Any) -> Any:
        err, result = self.call(method, *params)
        if err is not None:
            raise RuntimeError(f"{method}: {err}")
        return result

    def close(self) -> None:
        self.sock.close()


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def _worker(conn: Connection, port: int, token: str) -> None:
    """One load process: one connection; on ("run", seconds, method, params) it calls back
    to back for that long and sends (calls, elapsed s, latencies in us); "stop" ends it."""
    client = RawClient(port)
    if token:
        client.ok("session.authenticate", {"token": token})
    conn.send("ready")
    clock = time.perf_counter
    while True:
        cmd = conn.recv()
        if cmd[0] != "run":
            break
        _, seconds, method, params = cmd
        lat: list[float] = []
        start = clock()
        end = start + seconds
        now = start
        while now < end:
            err, _ = client.call(method, *params)
            t = clock()
            if err is not None:
                conn.send(("error", f"{method}: {err}"))
                break
            lat.append((t - now) * 1e6)
            now = t
        else:
            conn.send((len(lat), now - start, lat))
    client.close()


class LoadPool:
    """``n`` client processes, one connection each (spawned: the parent runs threads)."""

    def __init__(self, n: int, port: int, token: str = "", timeout: float = 300.0) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, port, token), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                self.close()
                raise RuntimeError(f"a load process did not connect within {timeout:g} s")
            pipe.recv()

    def run(self, method: str, params: list[Any], seconds: float) -> dict[str, float]:
        """All processes call ``method`` for ``seconds``; their summed rate and latencies."""
        for pipe in self.pipes:
            pipe.send(("run", seconds, method, params))
        calls = 0
        rate = 0.0
        lat: list[float] = []
        for pipe in self.pipes:
            if not pipe.poll(seconds + 300):
                raise RuntimeError("a load process did not report")
            out = pipe.recv()
            if out[0] == "error":
                raise RuntimeError(out[1])
            n, elapsed, samples = out
            calls += n
            rate += n / elapsed
            lat.extend(samples)
        lat.sort()
        return {"calls": calls, "calls_per_s": rate, "p50_us": percentile(lat, 0.5),
                "p99_us": percentile(lat, 0.99), "connections": len(self.pipes)}

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(30)


# --- the real console -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServeProcess:
    """``dios serve`` in ``root`` (simulators, FLUORO_1024 panel, fast simulated clock)."""

    root: Path
    start_timeout: float = 300.0

    def __post_init__(self) -> None:
        import httpx

        self.data_dir = self.root / "data"
        self.http_port, self.rpc_port = _free_port(), _free_port()
        cfg = self.root / "dios.toml"
        cfg.write_text(
            f'data_dir = "{self.data_dir}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            f'[rpc]\nhost = "127.0.0.1"\nport = {self.rpc_port}\n'
            '[devices]\npanel = "FLUORO_1024"\nclock_scale = 200.0\n')
        exe = Path(sys.executable).with_name("dios")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dios.cli"]
        self.log = self.root / "serve.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*cmd, "serve", "--config", str(cfg)], stdout=out,
                                         stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.http_port}/api/v1"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dios serve exited with {self.proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(f"{base}/resource/software-info", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"dios serve did not answer within {self.start_timeout:g} s")
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=120) as http:
            initial = (self.data_dir / "initial-admin-password").read_text().strip()
            tok = http.post("/auth/login", json={"username": "admin", "password": initial})
            auth = {"Authorization": f"Bearer {tok.json()['data']['token']}"}
            r = http.post("/auth/password", headers=auth,
                          json={"old_password": initial, "new_password": PASSWORD,
                                "confirm_new_password": PASSWORD})
            if r.json()["code"] != "0x000000":
                raise RuntimeError(f"password change refused: {r.text}")
            r = http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
            self.token: str = r.json()["data"]["token"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(60)


def _echo_main() -> int:
    port, stop = start_echo_server()
    print(f"ECHO {port}", flush=True)
    sys.stdin.read()  # until the parent closes our input
    stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["echo"]:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        sys.exit(_echo_main())
    print("usage: python bench/rpc_load.py echo", file=sys.stderr)
    sys.exit(64)
