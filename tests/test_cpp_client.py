"""A foreign client in C++: ``clients/cpp/dios_client.cpp`` against ``dios serve``.

The client is built with g++ and Debian's msgpack-c (``libmsgpack-cxx-dev``, installed
here when missing; the test fails loudly if that is impossible, it is never skipped) and
runs against ``dios serve`` started as a subprocess on loopback (TOML configuration, fast
simulated clock, the small FLUORO_1024 panel). Over MessagePack-RPC it logs in as a
technician, reads and sets kV, receives the param events of its subscription interleaved
with its responses, registers a study, exposes one image and writes the DICOM file it
received as a ``bin`` payload. The test checks the client's output against the DICOM file
(read with pydicom) and against what the server says over HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.console_helpers import PASSWORD, PREFIX, wait_until
from tests.peers import ensure_debian_packages

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "clients" / "cpp" / "dios_client.cpp"
MSGPACK_HEADER = "/usr/include/msgpack.hpp"
#: Generous deadlines: a loaded 2-core machine with a cold numba cache needs tens of
#: seconds for a server start or a first exposure that takes a second when idle.
START_DEADLINE = 300.0
CLIENT_DEADLINE = 600.0
HTTP_TIMEOUT = 120.0
TECH = "cpptech"
GENERATOR = "DIOS/DEVICE/Generator"
OUT_OF_RANGE = "0x010005"

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cpp_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client, compiled into a temporary directory (g++ and msgpack-c installed first
    when missing)."""
    tools = ensure_debian_packages(["g++", "libmsgpack-cxx-dev"], ["g++", MSGPACK_HEADER])
    exe = tmp_path_factory.mktemp("cpp") / "dios_client"
    cmd = [tools["g++"], "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror",
           "-DMSGPACK_NO_BOOST", "-o", str(exe), str(SOURCE)]
    try:
        build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"compiling {SOURCE.name} took more than 600 s")
    if build.returncode != 0:
        pytest.fail(f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n{build.stderr[-4000:]}")
    return exe


@dataclass
class Server:
    """``dios serve`` as a subprocess, with a technician account."""

    proc: subprocess.Popen
    data_dir: Path
    log: Path
    http_port: int
    rpc_port: int
    token: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}{PREFIX}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=HTTP_TIMEOUT)

    def generator_kv(self) -> str:
        """The generator's kV, read over HTTP (the device's reply)."""
        with self.http() as h:
            r = h.post("/task/device/command", params={"reply": "true"},
                       json={"deviceUri": GENERATOR, "reqName": "GetParam_KV"})
        assert r.status_code == 200, r.text[:500]
        return r.json()["data"]["result"]


def _ok(r: httpx.Response) -> dict:
    assert r.status_code == 200 and r.json()["code"] == "0x000000", (r.status_code, r.text[:500])
    return r.json()["data"]


def _make_tech(base: str, data_dir: Path) -> str:
    """Change the admin's one-time password, create a technician, change its first
    password; return the technician's token."""
    with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT) as http:
        initial = (data_dir / "initial-admin-password").read_text().strip()
        token = _ok(http.post("/auth/login", json={"username": "admin",
                                                    "password": initial}))["token"]
        auth = {"Authorization": f"Bearer {token}"}
        _ok(http.post("/auth/password", headers=auth,
                      json={"old_password": initial, "new_password": PASSWORD,
                            "confirm_new_password": PASSWORD}))
        token = _ok(http.post("/auth/login", json={"username": "admin",
                                                    "password": PASSWORD}))["token"]
        auth = {"Authorization": f"Bearer {token}"}
        _ok(http.post("/auth/users", headers=auth,
                      json={"username": TECH, "password": "Temp-Pass-123", "role": "tech"}))
        first = _ok(http.post("/auth/login", json={"username": TECH,
                                                   "password": "Temp-Pass-123"}))["token"]
        _ok(http.post("/auth/password", headers={"Authorization": f"Bearer {first}"},
                      json={"old_password": "Temp-Pass-123", "new_password": PASSWORD,
                            "confirm_new_password": PASSWORD}))
        return _ok(http.post("/auth/login", json={"username": TECH,
                                                  "password": PASSWORD}))["token"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cppserve")
    data_dir = root / "data"
    http_port, rpc_port = _free_port(), _free_port()
    cfg = root / "dios.toml"
    cfg.write_text(
        f'data_dir = "{data_dir}"\n'
        'uid_root = "1.2.826.0.1.3680043.10.1443"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f'[rpc]\nhost = "127.0.0.1"\nport = {rpc_port}\n'
        '[devices]\npanel = "FLUORO_1024"\nclock_scale = 200.0\n')
    exe = Path(sys.executable).with_name("dios")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dios.cli"]
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*cmd, "serve", "--config", str(cfg)], stdout=out,
                                stderr=subprocess.STDOUT)
    srv = Server(proc, data_dir, log, http_port, rpc_port)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"dios serve exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            return httpx.get(f"{srv.base}/resource/software-info", timeout=10.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, START_DEADLINE, lambda: f"dios serve to answer:\n{srv.log_tail()}",
                   interval=0.1)
        srv.token = _make_tech(srv.base, data_dir)
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(60)


def _run(exe: Path, server: Server, out: Path, *args: str, user: str = TECH,
         password: str = PASSWORD) -> subprocess.CompletedProcess:
    env = dict(os.environ, DIOS_USER=user, DIOS_PASSWORD=password)
    try:
        return subprocess.run([str(exe), "127.0.0.1", str(server.rpc_port), str(out), *args,
                               "--timeout", str(CLIENT_DEADLINE)],
                              env=env, capture_output=True, text=True,
                              timeout=CLIENT_DEADLINE + 60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the C++ client did not finish in {CLIENT_DEADLINE + 60:g} s; output so "
                    f"far:\n{exc.stdout}\n{exc.stderr}\nserver log:\n{server.log_tail()}")


def _explain(p: subprocess.CompletedProcess, server: Server) -> str:
    return (f"exit {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}\n"
            f"--- server log\n{server.log_tail()}")


@pytest.mark.timeout(START_DEADLINE + CLIENT_DEADLINE + 300)
def test_cpp_client_sets_kv_gets_events_exposes_and_downloads_the_dicom_file(
        cpp_client: Path, server: Server, tmp_path: Path) -> None:
    out = tmp_path / "image.dcm"
    before = server.generator_kv()
    kv = "77" if before != "77" else "78"  # a change, so the device publishes a KV event
    p = _run(cpp_client, server, out, "--kv", kv)
    assert p.returncode == 0, _explain(p, server)
    text = p.stdout
    print(text)  # the client's account of the session, shown with -rP

    # the handshake answered, or the server has none (accepted, and said)
    assert re.search(r"^hello: (server .* compatible true|not available)", text, re.M), text
    assert re.search(rf"^kv\.read: {before}$", text, re.M), text
    # the kV it asked for and the value the generator accepted (the device's reply)
    assert re.search(rf"^kv\.set: requested {kv} accepted {kv} \(0x000000 ", text, re.M), text
    # the param events of its subscription, interleaved with its responses
    kv_events = re.findall(r"^event: DIOS/DEVICE/Generator param KV=(\S+) seq=\d+", text, re.M)
    assert kv_events and kv_events[0] == kv, text

    m = re.search(r"^study: (\d+) image (\S+) view (\S+)$", text, re.M)
    assert m, text
    uid = m.group(2)
    m = re.search(rf"^expose: {re.escape(uid)} Exposed Saved kv (\S+) ", text, re.M)
    assert m, text
    exposed_kv = float(m.group(1))
    # the kV the generator held for the exposure: the view's technique (announced by a KV
    # event when it differs from the value set before)
    held_kv = float(re.findall(r"^event: DIOS/DEVICE/Generator param KV=(\S+) ",
                               text[: text.index("expose: ")], re.M)[-1])
    m = re.search(rf"^file: {re.escape(str(out))} (\d+) bytes application/dicom ", text, re.M)
    assert m, text

    data = out.read_bytes()
    assert len(data) == int(m.group(1))
    ds = pydicom.dcmread(out)
    assert ds.SOPInstanceUID == uid
    assert ds.PatientID == "CPP-PAT-001"
    assert float(ds.KVP) == pytest.approx(exposed_kv, abs=0.01)
    assert float(ds.KVP) == pytest.approx(held_kv, abs=1.0)
    # byte for byte the file the server serves over HTTP
    with server.http() as h:
        r = h.get(f"/task/image/{uid}/file")
    assert r.status_code == 200 and r.content == data


@pytest.mark.timeout(START_DEADLINE + CLIENT_DEADLINE + 300)
def test_cpp_client_stops_with_the_error_reply_and_the_device_is_unchanged(
        cpp_client: Path, server: Server, tmp_path: Path) -> None:
    out = tmp_path / "never.dcm"
    before = server.generator_kv()
    p = _run(cpp_client, server, out, "--kv", "200")
    assert p.returncode == 2, _explain(p, server)
    assert f"error: task.device_command failed: {OUT_OF_RANGE} " in p.stderr, _explain(p, server)
    assert "kv.set" not in p.stdout and not out.exists()
    assert server.generator_kv() == before

    # a refused login: the code and the server's description, nothing else done
    p = _run(cpp_client, server, out, user="no-such-user", password="Wrong-Pass-123")
    assert p.returncode == 2, _explain(p, server)
    assert re.search(r"^error: auth\.login failed: 0x020002 \S", p.stderr, re.M), \
        _explain(p, server)
    assert "kv.read" not in p.stdout and not out.exists()


def test_cpp_client_usage_errors(cpp_client: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DIOS_USER", "DIOS_PASSWORD")}
    p = subprocess.run([str(cpp_client), "127.0.0.1"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 64 and "usage: dios_client HOST PORT OUTPUT.dcm" in p.stderr
    p = subprocess.run([str(cpp_client), "127.0.0.1", "1", "x.dcm"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 64 and "user and password are required" in p.stderr
    # nothing listens on the port: a clear connection error
    port = _free_port()
    env.update(DIOS_USER=TECH, DIOS_PASSWORD=PASSWORD)
    p = subprocess.run([str(cpp_client), "127.0.0.1", str(port), "x.dcm"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"error: cannot connect to 127.0.0.1:{port}: " in p.stderr
