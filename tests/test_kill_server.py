"""Killing the real server at any moment loses nothing that was acknowledged.

``dios serve`` runs as a subprocess (TOML configuration, free loopback ports, fast
simulated clock, the small FLUORO_1024 panel). Several HTTP clients register studies and
expose their images; in every round, once the server has acknowledged new studies and
at least ``MIN_EXPOSED_PER_ROUND`` new exposures, it is SIGKILLed at a random moment
(seeded; the kill waits for an exposure to be in flight so it often lands inside one),
then restarted on the same data directory. After every restart:

* every study and every image whose HTTP reply arrived is there, unchanged;
* every image whose exposure reply arrived is Exposed and Saved;
* every Saved image has its DICOM file, readable by pydicom, with its own SOP UID;
* no image is left Exposing (the start-up recovery put interrupted ones back);
* no ``.dcm`` (or temporary) file under ``images/`` is unreferenced.

The kill waits for acknowledged work, never for a fixed time: on a loaded machine (a
CPU hog on every core, a cold numba cache) a fresh server's first exposures take tens of
seconds, and a kill after a fixed delay would find nothing acknowledged to check.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.console_helpers import PASSWORD, PREFIX, images_of, study_request, wait_until

SEED = 20251123
ROUNDS = 3
CLIENTS = 3
#: Each round kills the server only after it acknowledged this many new exposures (and
#: at least one new study), so every round checks acknowledged work.
MIN_EXPOSED_PER_ROUND = 2
#: Deadlines, generous but bounded: a busy 2-core machine with a cold numba cache needs
#: tens of seconds for a start or a first exposure that takes one second when idle.
START_DEADLINE = 300.0
WORK_DEADLINE = 300.0
INFLIGHT_DEADLINE = 60.0
HTTP_TIMEOUT = 300.0
#: The one refusal an exposure may get here: the X-ray room still busy with the other
#: clients' exposures after the exposure timeout (a slow machine). Nothing is acknowledged.
BUSY = "0x010007"
#: Fields of the registration request that must come back unchanged.
PATIENT_FIELDS = ("accession_number", "patient_id", "patient_name", "patient_size",
                  "patient_age", "patient_sex", "comment", "weight")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``dios serve`` on a data directory; new free ports at every start."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = data_dir.parent / "serve.log"

    def start(self, timeout: float = START_DEADLINE) -> None:
        self.port = _free_port()
        cfg = self.data_dir.parent / "dios.toml"
        cfg.write_text(
            f'data_dir = "{self.data_dir}"\n'
            'uid_root = "1.2.826.0.1.3680043.10.1443"\n'
            f"[http]\nhost = \"127.0.0.1\"\nport = {self.port}\n"
            f"[rpc]\nhost = \"127.0.0.1\"\nport = {_free_port()}\n"
            "[devices]\npanel = \"FLUORO_1024\"\nclock_scale = 200.0\n")
        exe = Path(sys.executable).with_name("dios")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dios.cli"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*cmd, "serve", "--config", str(cfg)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dios serve exited with {self.proc.returncode}:\n"
                            + self.log_tail())
            try:
                r = httpx.get(f"{self.base}{PREFIX}/resource/software-info", timeout=10.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"dios serve did not answer within {timeout:g} s:\n" + self.log_tail())

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Acknowledged:
    """What the server replied to (so it must survive the kill)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    studies: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # id -> (request, reply)
    exposed: dict[str, dict] = field(default_factory=dict)  # sop -> image reply
    inflight: int = 0
    busy: int = 0  # exposures refused with BUSY (nothing acknowledged)
    errors: list[str] = field(default_factory=list)  # what a client saw go wrong


def _client(base: str, token: str, seed: int, ack: Acknowledged, stop: threading.Event,
            killed: threading.Event) -> None:
    """Register studies and expose their images until ``stop``; record every reply. A
    failed request is expected only once ``killed`` is set; anything else is an error."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}", "Source": "Electron"}
    try:
        with httpx.Client(base_url=base + PREFIX, headers=headers, timeout=HTTP_TIMEOUT) as http:
            while not stop.is_set():
                req = study_request(patient_id=f"K{seed}-{rng.randrange(10**6)}",
                                    patient_name=f"Kill^{rng.randrange(10**6)}",
                                    comment=f"round comment {rng.random():.6f}",
                                    weight=rng.randrange(5, 120))
                r = http.post("/study", json=req)
                assert r.status_code == 200, r.text[:300]
                study = r.json()["data"]
                with ack.lock:
                    ack.studies[study["study_id"]] = (req, study)
                for im in images_of(study)[: rng.randint(1, 2)]:
                    with ack.lock:
                        ack.inflight += 1
                    try:
                        r = http.post("/task/image/expose",
                                      json={"instance_uid": im["sop_instance_id"]})
                    finally:
                        with ack.lock:
                            ack.inflight -= 1
                    if r.status_code == 409 and r.json()["code"] == BUSY:
                        with ack.lock:
                            ack.busy += 1
                        continue
                    assert r.status_code == 200, r.text[:300]
                    with ack.lock:
                        ack.exposed[im["sop_instance_id"]] = r.json()["data"]["image"]
    except httpx.HTTPError as exc:
        if not killed.is_set():
            ack.errors.append(f"client {seed}: {exc!r} while the server was up")
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        ack.errors.append(f"client {seed}: {exc!r}")


def _login(base: str, data_dir: Path) -> str:
    with httpx.Client(base_url=base + PREFIX, timeout=HTTP_TIMEOUT) as http:
        r = http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        if r.json()["code"] != "0x000000":  # first start: the one-time password
            initial = (data_dir / "initial-admin-password").read_text().strip()
            tok = http.post("/auth/login", json={"username": "admin", "password": initial})
            token = tok.json()["data"]["token"]
            r = http.post("/auth/password", headers={"Authorization": f"Bearer {token}"},
                          json={"old_password": initial, "new_password": PASSWORD,
                                "confirm_new_password": PASSWORD})
            assert r.json()["code"] == "0x000000", r.text
            r = http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        assert r.json()["code"] == "0x000000", r.text
        return r.json()["data"]["token"]


def _check(server: Server, token: str, ack: Acknowledged) -> dict[str, int]:
    data_dir = server.data_dir
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base + PREFIX, headers=headers,
                      timeout=HTTP_TIMEOUT) as http:
        for study_id, (req, reply) in ack.studies.items():
            r = http.get(f"/study/{study_id}")
            assert r.json()["code"] == "0x000000", (study_id, r.text[:300])
            got = r.json()["data"]
            assert got["study_instance_uid"] == reply["study_instance_uid"]
            assert got["reg_source"] == "Electron"
            for k in PATIENT_FIELDS:
                assert got[k] == reply[k] == req[k], (study_id, k)
            assert {(i["sop_instance_id"], i["view_id"]) for i in images_of(got)} == {
                (i["sop_instance_id"], i["view_id"]) for i in images_of(reply)}
            for im in images_of(got):
                if im["sop_instance_id"] in ack.exposed:
                    assert (im["expose_status"], im["storage_status"]) == ("Exposed", "Saved")
                    assert im["image_file_path"] == ack.exposed[im["sop_instance_id"]][
                        "image_file_path"]

    db = sqlite3.connect(f"file:{data_dir / 'dios.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT sop_instance_id, expose_status, storage_status, image_status, "
                          "image_file_path FROM images").fetchall()
    finally:
        db.close()
    assert not [r for r in rows if r[1] == "Exposing" or r[3] == "EXPOSING"]
    referenced = set()
    for sop, expose, storage, _, path in rows:
        if storage != "Saved":
            assert expose == "Unexposed" and not path, sop
            continue
        assert expose == "Exposed" and path and not Path(path).is_absolute(), (sop, path)
        file = (data_dir / path).resolve()
        referenced.add(file)
        ds = pydicom.dcmread(file)
        assert ds.SOPInstanceUID == sop
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
    on_disk = {p.resolve() for p in (data_dir / "images").rglob("*") if p.is_file()}
    assert on_disk == referenced, sorted(str(p) for p in on_disk ^ referenced)
    return {"images": len(rows), "saved": len(referenced)}


def test_killing_the_server_loses_nothing_acknowledged(tmp_path):
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    server = Server(data_dir)
    server.start()
    ack = Acknowledged()
    killed_inflight = 0
    try:
        token = _login(server.base, data_dir)
        for round_no in range(ROUNDS):
            stop, killed = threading.Event(), threading.Event()
            threads = [threading.Thread(target=_client, daemon=True,
                                        args=(server.base, token, SEED * 100 + round_no * 10 + i,
                                              ack, stop, killed))
                       for i in range(CLIENTS)]
            with ack.lock:
                studies0, exposed0 = len(ack.studies), len(ack.exposed)
            for t in threads:
                t.start()

            def progress(round_no=round_no, studies0=studies0, exposed0=exposed0) -> str:
                return (f"round {round_no}: {MIN_EXPOSED_PER_ROUND} acknowledged exposures and "
                        f"a study before the kill; have {len(ack.exposed) - exposed0} exposures, "
                        f"{len(ack.studies) - studies0} studies, {ack.busy} BUSY so far, "
                        f"errors {ack.errors}\nserver log:\n{server.log_tail()}")

            # the kill comes only after acknowledged work: a kill of a server that
            # acknowledged nothing would prove nothing
            wait_until(lambda studies0=studies0, exposed0=exposed0: ack.errors or (
                len(ack.studies) > studies0
                and len(ack.exposed) - exposed0 >= MIN_EXPOSED_PER_ROUND),
                WORK_DEADLINE, progress)
            assert not ack.errors, ack.errors
            # then at a random moment, preferably while an exposure is in flight (the
            # clients keep exposing, so one comes soon)
            time.sleep(rng.uniform(0.0, 1.0))
            deadline = time.monotonic() + INFLIGHT_DEADLINE
            while ack.inflight == 0 and not ack.errors and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
            killed.set()
            killed_inflight += ack.inflight > 0
            print(f"round {round_no}: kill after {len(ack.exposed) - exposed0} acknowledged "
                  f"exposures, {len(ack.studies) - studies0} studies, in flight {ack.inflight}")
            server.kill()
            stop.set()
            for t in threads:
                t.join(120)
                assert not t.is_alive(), "a client still runs after the kill"
            assert not ack.errors, ack.errors
            server.start()
            counts = _check(server, token, ack)
            assert counts["images"] >= len(ack.studies)
            assert counts["saved"] >= len(ack.exposed)
        assert len(ack.exposed) >= ROUNDS * MIN_EXPOSED_PER_ROUND and ack.studies
        assert killed_inflight >= 1
    finally:
        server.stop()
