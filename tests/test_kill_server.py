"""Killing the real server at any moment loses nothing that was acknowledged.

``dios serve`` runs as a subprocess (TOML configuration, free loopback ports, fast
simulated clock, the small FLUORO_1024 panel). Several HTTP clients register studies and
expose their images; the server is SIGKILLed at a random moment (seeded; the kill waits
for an exposure to be in flight so it often lands inside one), then restarted on the same
data directory. After every restart:

* every study and every image whose HTTP reply arrived is there, unchanged;
* every image whose exposure reply arrived is Exposed and Saved;
* every Saved image has its DICOM file, readable by pydicom, with its own SOP UID;
* no image is left Exposing (the start-up recovery put interrupted ones back);
* no ``.dcm`` (or temporary) file under ``images/`` is unreferenced.
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

from tests.console_helpers import PASSWORD, PREFIX, images_of, study_request

SEED = 20251123
ROUNDS = 3
CLIENTS = 3
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

    def start(self, timeout: float = 90.0) -> None:
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
                            + self.log.read_text()[-3000:])
            try:
                r = httpx.get(f"{self.base}{PREFIX}/resource/software-info", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        pytest.fail("dios serve did not answer in time:\n" + self.log.read_text()[-3000:])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Acknowledged:
    """What the server replied to (so it must survive the kill)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    studies: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # id -> (request, reply)
    exposed: dict[str, dict] = field(default_factory=dict)  # sop -> image reply
    inflight: int = 0


def _client(base: str, token: str, seed: int, ack: Acknowledged,
            stop: threading.Event) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}", "Source": "Electron"}
    with httpx.Client(base_url=base + PREFIX, headers=headers, timeout=60.0) as http:
        while not stop.is_set():
            req = study_request(patient_id=f"K{seed}-{rng.randrange(10**6)}",
                                patient_name=f"Kill^{rng.randrange(10**6)}",
                                comment=f"round comment {rng.random():.6f}",
                                weight=rng.randrange(5, 120))
            try:
                r = http.post("/study", json=req)
            except httpx.HTTPError:
                return
            assert r.status_code == 200, r.text[:300]
            study = r.json()["data"]
            with ack.lock:
                ack.studies[study["study_id"]] = (req, study)
            for im in images_of(study)[: rng.randint(1, 2)]:
                with ack.lock:
                    ack.inflight += 1
                try:
                    r = http.post("/task/image/expose", json={"instance_uid": im["sop_instance_id"]})
                except httpx.HTTPError:
                    return
                finally:
                    with ack.lock:
                        ack.inflight -= 1
                assert r.status_code == 200, r.text[:300]
                with ack.lock:
                    ack.exposed[im["sop_instance_id"]] = r.json()["data"]["image"]


def _login(base: str, data_dir: Path) -> str:
    with httpx.Client(base_url=base + PREFIX, timeout=30.0) as http:
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
    with httpx.Client(base_url=server.base + PREFIX, headers=headers, timeout=30.0) as http:
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
            stop = threading.Event()
            threads = [threading.Thread(target=_client, daemon=True,
                                        args=(server.base, token, SEED * 100 + round_no * 10 + i,
                                              ack, stop))
                       for i in range(CLIENTS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.5, 2.5))
            deadline = time.monotonic() + 5.0  # kill while an exposure is in flight
            while ack.inflight == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.4))
            killed_inflight += ack.inflight > 0
            server.kill()
            stop.set()
            for t in threads:
                t.join(60)
                assert not t.is_alive()
            server.start()
            counts = _check(server, token, ack)
            assert counts["images"] >= len(ack.studies)
        assert ack.studies and ack.exposed
        assert killed_inflight >= 1
    finally:
        server.stop()
