"""Verification and sending images to storage nodes, against real peers.

Peers (tests/dicom_peers.py): Orthanc (Debian ``orthanc``) and dcmtk's ``storescp``,
installed when missing and started on loopback ports; for the cases no packaged peer
produces on demand (a C-STORE failure status, a peer that takes DX images only RLE
compressed) a pynetdicom SCP of the test.

What is proved:

* C-ECHO: success with round trip; a wrong called AE title and an unknown calling AE
  title rejected (``DICOM_ERROR``); nobody listening (``PEER_UNREACHABLE``); a listener that
  never answers (``TIMEOUT``); no thread left behind.
* A console with two auto-sending storage nodes: images exposed over HTTP reach Orthanc
  and storescp, are valid DX files (dciodvfy), ``send_status`` becomes Sent and the study
  ``is_exported``; the queue and per-image results over HTTP and MessagePack-RPC.
* Orthanc stopped: its rows back off (attempts grow, state Queued, PEER_UNREACHABLE) and
  the image is not Sent while storescp has it; Orthanc started again: the rows go.
* A send without resend leaves acknowledged images alone; a resend sends them again.
* A failure status is retried with backoff, then Failed with the status (SendFailed); a
  peer that takes only RLE Lossless gets the image re-encoded, pixels unchanged; a peer
  that aborts the association during a C-STORE gets the image on the next try.
* Rows a stopped console left Sending are sent by the next start; a sender process killed
  with SIGKILL three times while sending to four nodes delivers every row after a restart,
  and the peer holds every image marked Sent.
* Node input errors name their field; roles are enforced; the console's threads are
  gone after it stops.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless
from pynetdicom import AE, evt

from dios.codes import DICOM_ERROR, PEER_UNREACHABLE, SUCCESS, TIMEOUT
from dios.config import DicomConfig
from dios.exchange.echo import echo
from dios.exchange.nodes import Node
from dios.exchange.outbox import DX_SOP_CLASSES
from tests.console_helpers import (
    ADMIN_INITIAL,
    FAST_SCRYPT,
    Api,
    RpcClient,
    images_of,
    setup_users,
    study_request,
    wait_until,
)
from tests.dicom_peers import OrthancPeer, StorescpPeer, free_port
from tests.fixtures_dicom import assert_dciodvfy_clean

OUR_AET = "DIOSTEST"
DICOM = DicomConfig(ae_title=OUR_AET, connect_timeout=5.0, acse_timeout=4.0,
                    dimse_timeout=30.0, network_timeout=60.0, retry_initial=0.2, retry_max=1.0)
ONE_VIEW = [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"}]
TWO_VIEWS = [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
             {"view_id": "View_DX_T_A_SK_LAT_00", "procedure_id": "P0-0002"}]


def dicom_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith("dios-dicom") or "Association" in type(t).__name__
            or type(t).__name__ in ("DULServiceProvider", "AssociationServer")]


# --- peers -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc"), calling=[OUR_AET]).start()
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def storescp(tmp_path_factory):
    peer = StorescpPeer(tmp_path_factory.mktemp("storescp")).start()
    yield peer
    peer.stop()


class PyScp:
    """A storage SCP of the test (pynetdicom): answers every C-STORE with ``status`` and
    accepts the DX SOP classes in ``syntaxes`` only; keeps what it received."""

    def __init__(self, ae_title: str, status: int = 0x0000,
                 syntaxes: tuple[str, ...] = (RLELossless,), aborts: int = 0) -> None:
        self.ae_title = ae_title
        self.status = status
        self.aborts = aborts  # abort the association at this many C-STOREs first
        self.received: list[Any] = []
        self.port = free_port()
        ae = AE(ae_title=ae_title)
        for sop_class in DX_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(syntaxes))

        def on_store(event: Any) -> int:
            if self.aborts > 0:
                self.aborts -= 1
                event.assoc.abort()
                return 0xC000
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            return self.status

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        self.server.shutdown()


# --- C-ECHO ----------------------------------------------------------------------------------------
def test_echo_ok_refused_unreachable_and_silent(orthanc):
    before = len(threading.enumerate())
    ok = echo(Node(1, "orthanc", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port), DICOM)
    assert ok.ok and ok.status == "0x0000" and ok.code == SUCCESS.hex and ok.rtt_ms > 0, ok

    wrong_called = echo(Node(1, "o", "NOT-ORTHANC", "127.0.0.1", orthanc.dicom_port), DICOM)
    assert not wrong_called.ok and wrong_called.code == DICOM_ERROR.hex, wrong_called
    assert "rejected" in wrong_called.description and wrong_called.status == ""

    stranger = DicomConfig(**{**DICOM.__dict__, "ae_title": "STRANGER"})
    unknown_caller = echo(Node(1, "o", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),
                          stranger)
    assert not unknown_caller.ok and unknown_caller.code == DICOM_ERROR.hex, unknown_caller
    assert "rejected" in unknown_caller.description

    down = echo(Node(1, "down", "NOBODY", "127.0.0.1", free_port()), DICOM)
    assert not down.ok and down.code == PEER_UNREACHABLE.hex, down

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        quiet = echo(Node(1, "silent", "SILENT", "127.0.0.1", silent.getsockname()[1]), DICOM)
    assert not quiet.ok and quiet.code == TIMEOUT.hex, quiet
    assert "did not answer" in quiet.description
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"echo threads to end: {dicom_threads()}")


# --- the console -----------------------------------------------------------------------------------
class Site:
    """The console under test, its clients, its nodes and their peers."""

    def __init__(self, console: Any, apis: dict[str, Api], orthanc: OrthancPeer,
                 storescp: StorescpPeer, baseline: int) -> None:
        self.console = console
        self.apis = apis
        self.orthanc = orthanc
        self.storescp = storescp
        self.baseline = baseline
        self.stopped = False
        self.nodes: dict[str, dict[str, Any]] = {}

    @property
    def admin(self) -> Api:
        return self.apis["admin"]

    @property
    def tech(self) -> Api:
        return self.apis["tech"]

    def expose_study(self, views: list[dict[str, str]], accession: str) -> tuple[str, list[str]]:
        study = self.tech.ok("POST", "/study", json=study_request(
            accession_number=accession, patient_id=f"P-{accession}", views=views))
        sops = [im["sop_instance_id"] for im in images_of(study)]
        for sop in sops:
            self.tech.ok("POST", "/task/image/expose", json={"instance_uid": sop})
        return study["study_id"], sops

    def results(self, sop: str) -> dict[str, Any]:
        return self.tech.ok("GET", f"/dicom/images/{sop}/results")

    def row(self, sop: str, node: str) -> dict[str, Any] | None:
        rows = [r for r in self.results(sop)["results"] if r["node"] == node]
        return rows[0] if rows else None

    def send_status(self, sop: str) -> str:
        return self.results(sop)["send_status"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, orthanc, storescp):
    from dios.config import ListenerConfig, load_config
    from dios.serve import Console

    baseline = len(threading.enumerate())
    cfg = load_config(None, data_dir=tmp_path_factory.mktemp("console"))
    cfg.http = ListenerConfig("127.0.0.1", 0)
    cfg.rpc = ListenerConfig("127.0.0.1", 0)
    cfg.devices.clock_scale = 200.0
    cfg.devices.panel = "FLUORO_1024"
    cfg.dicom = DICOM
    console = Console(cfg, calibrate=True, calibration_frames=2,
                      auth_options={"initial_admin_password": ADMIN_INITIAL,
                                    "scrypt_params": FAST_SCRYPT}).start()
    apis = setup_users(console)
    s = Site(console, apis, orthanc, storescp, baseline)
    for name, aet, port in (("Orthanc", orthanc.ae_title, orthanc.dicom_port),
                            ("Storescp", storescp.ae_title, storescp.port)):
        s.nodes[name] = s.admin.ok("POST", "/dicom/nodes", json={
            "name": name, "ae_title": aet, "host": "127.0.0.1", "port": port,
            "roles": ["storage"], "auto_send": True})
    yield s
    for a in apis.values():
        a.close()
    if not s.stopped:
        console.stop()


def test_node_input_errors_name_their_field_and_roles_are_enforced(site):
    admin, tech = site.admin, site.tech
    good = {"name": "X", "ae_title": "X", "host": "127.0.0.1", "port": 104}
    for bad, field in (({**good, "port": 70000}, "port"), ({**good, "ae_title": "A" * 17},
                                                           "ae_title"),
                       ({**good, "ae_title": "BAD\\AE"}, "ae_title"),
                       ({k: v for k, v in good.items() if k != "host"}, "host"),
                       ({**good, "host": "a b"}, "host"), ({**good, "roles": ["archive"]}, "roles"),
                       ({**good, "auto_send": "yes"}, "auto_send"),
                       ({**good, "name": "Orthanc"}, "name")):
        r = admin.post("/dicom/nodes", json=bad)
        assert 400 <= r.status_code < 500, (bad, r.status_code, r.text)
        assert r.json()["data"].get("field") == field, (bad, r.json())
    assert [n["name"] for n in admin.ok("GET", "/dicom/nodes")["nodes"]] == [
        "Orthanc", "Storescp"]  # nothing was created by the refused requests
    assert tech.post("/dicom/nodes", json=good).status_code == 403
    assert tech.post(f"/dicom/nodes/{site.nodes['Orthanc']['id']}/echo").status_code == 403
    assert site.apis["guest"].get("/dicom/queue").status_code in (401, 403)
    node = site.nodes["Storescp"]
    r = admin.put(f"/dicom/nodes/{node['id']}", json={"description": "x", "version": 999})
    assert r.status_code == 409, r.text
    assert admin.get("/dicom/nodes/424242").status_code == 404
    r = tech.post("/dicom/send", json={"node_id": node["id"]})
    assert 400 <= r.status_code < 500 and r.json()["data"].get("field") == "study_id"
    r = tech.post("/dicom/send", json={"node_id": node["id"], "sop_instance_uids": ["1.2.3"]})
    assert r.status_code == 404 and r.json()["data"].get("field") == "sop_instance_uids"
    r = tech.get("/dicom/queue", params={"state": "Lost"})
    assert r.status_code == 400 and r.json()["data"].get("field") == "state"


def test_echo_over_http_and_rpc(site):
    node = site.nodes["Orthanc"]
    got = site.admin.ok("POST", f"/dicom/nodes/{node['id']}/echo")
    assert got["ok"] is True and got["status"] == "0x0000" and got["node"] == "Orthanc", got
    rpc = RpcClient(site.console.rpc_port)
    try:
        login = rpc.ok("auth.login", {"username": "service1", "password": "Str0ng-Passw0rd"})
        got = rpc.ok("dicom.echo", {"node_id": site.nodes["Storescp"]["id"]},
                     {"token": login["token"]})
        assert got["ok"] is True and got["code"] == SUCCESS.hex, got
    finally:
        rpc.close()


def test_exposed_images_reach_both_peers_and_validate(site, tmp_path):
    sid, sops = site.expose_study(TWO_VIEWS, "ACC-SEND-1")
    wait_until(lambda: set(sops) <= set(site.orthanc.sop_uids()), 60,
               lambda: f"the images at Orthanc; queue {site.tech.ok('GET', '/dicom/queue')}")
    wait_until(lambda: set(sops) <= set(site.storescp.files()), 60, "the images at storescp")
    wait_until(lambda: all(site.send_status(s) == "Sent" for s in sops), 60,
               lambda: f"send_status Sent: {[site.results(s) for s in sops]}")
    # the study's flag follows its images' statuses, just after them
    study = wait_until(lambda: (st := site.tech.ok("GET", f"/study/{sid}"))["is_exported"]
                       and st, 60, "the study marked exported")
    assert {im["send_status"] for im in images_of(study)} == {"Sent"}
    held = site.orthanc.sop_uids()
    for sop in sops:
        assert_dciodvfy_clean(site.orthanc.instance_file(held[sop], tmp_path / f"o-{sop}.dcm"))
        assert_dciodvfy_clean(site.storescp.files()[sop])
        rows = site.results(sop)["results"]
        assert {r["node"] for r in rows} == {"Orthanc", "Storescp"}
        for r in rows:
            assert r["state"] == "Sent" and r["last_status"] == "0x0000" and r["sent_at"], r
            assert r["attempts"] == 1 and r["transfer_syntax"], r
    queue = site.tech.ok("GET", "/dicom/queue", params={"study_id": sid})
    assert queue["counts"] == {"Queued": 0, "Sending": 0, "Sent": 4, "Failed": 0}
    assert len(queue["rows"]) == 4
    only = site.tech.ok("GET", "/dicom/queue", params={
        "study_id": sid, "node_id": site.nodes["Orthanc"]["id"], "state": "Sent"})
    assert {r["sop_instance_uid"] for r in only["rows"]} == set(sops)
    rpc = RpcClient(site.console.rpc_port)
    try:
        login = rpc.ok("auth.login", {"username": "tech1", "password": "Str0ng-Passw0rd"})
        got = rpc.ok("dicom.image_results", {"instance_uid": sops[0]},
                     {"token": login["token"]})
        assert got["send_status"] == "Sent" and len(got["results"]) == 2
    finally:
        rpc.close()


def test_send_without_resend_keeps_acknowledged_images_resend_sends_again(site):
    sid, sops = site.expose_study(ONE_VIEW, "ACC-RESEND")
    wait_until(lambda: site.send_status(sops[0]) == "Sent", 60, "the image sent")
    node = site.nodes["Storescp"]
    before = site.row(sops[0], "Storescp")
    got = site.tech.ok("POST", "/dicom/send", json={"node_id": node["id"], "study_id": sid})
    assert got["queued"] == 0 and got["unchanged"] == 1 and got["rows"][0]["state"] == "Sent"
    path = site.storescp.files()[sops[0]]
    path.unlink()
    got = site.tech.ok("POST", "/dicom/send", json={"node_id": node["id"],
                                                    "sop_instance_uids": sops, "resend": True})
    assert got["queued"] == 1
    wait_until(lambda: sops[0] in site.storescp.files(), 60, "the image sent again")
    wait_until(lambda: (site.row(sops[0], "Storescp") or {}).get("state") == "Sent", 60,
               "the resent row Sent")
    after = site.row(sops[0], "Storescp")
    assert after["sent_at"] >= before["sent_at"] and after["id"] == before["id"]
    wait_until(lambda: site.send_status(sops[0]) == "Sent", 60, "send_status Sent again")


def test_orthanc_down_backs_off_then_delivers(site):
    site.orthanc.stop()
    try:
        _sid, sops = site.expose_study(ONE_VIEW, "ACC-DOWN")
        sop = sops[0]
        wait_until(lambda: sop in site.storescp.files(), 60, "storescp to get the image")

        def backing_off() -> bool:
            row = site.row(sop, "Orthanc")
            return bool(row and row["attempts"] >= 2 and row["state"] == "Queued"
                        and PEER_UNREACHABLE.hex in row["last_error"])

        wait_until(backing_off, 60, lambda: f"Orthanc's row backing off: {site.results(sop)}")
        row = site.row(sop, "Orthanc")
        assert row["sent_at"] is None and row["next_attempt_at"] > 0
        assert site.row(sop, "Storescp")["state"] == "Sent"
        assert site.send_status(sop) == "Sending"
    finally:
        site.orthanc.start()
    wait_until(lambda: sop in site.orthanc.sop_uids(), 60,
               lambda: f"the image at Orthanc once it is back: {site.results(sop)}")
    wait_until(lambda: site.send_status(sop) == "Sent", 60, "send_status Sent")
    assert site.row(sop, "Orthanc")["state"] == "Sent"


def test_failure_status_gives_up_and_rle_only_peer_gets_rle(site):
    """Also: a peer that aborts the association mid-transfer gets the image on a retry."""
    failing = PyScp("FAILING", status=0xA700, syntaxes=("1.2.840.10008.1.2.1",))
    rle = PyScp("RLEONLY", aborts=1)
    try:
        ids = {}
        for scp in (failing, rle):
            ids[scp.ae_title] = site.admin.ok("POST", "/dicom/nodes", json={
                "name": scp.ae_title, "ae_title": scp.ae_title, "host": "127.0.0.1",
                "port": scp.port, "roles": ["storage"]})["id"]
        sid, sops = site.expose_study(ONE_VIEW, "ACC-FAIL")
        sop = sops[0]
        wait_until(lambda: site.send_status(sop) == "Sent", 60, "sent to the auto nodes")
        for name in ("FAILING", "RLEONLY"):
            got = site.tech.ok("POST", "/dicom/send", json={"node_id": ids[name],
                                                            "study_id": sid})
            assert got["queued"] == 1 and got["rows"][0]["state"] in ("Queued", "Sending")

        wait_until(lambda: (site.row(sop, "FAILING") or {}).get("state") == "Failed", 90,
                   lambda: f"the failing node's row Failed: {site.results(sop)}")
        row = site.row(sop, "FAILING")
        assert row["attempts"] == 5 and row["last_status"] == "0xA700", row
        assert DICOM_ERROR.hex in row["last_error"] and "0xA700" in row["last_error"]
        assert len(failing.received) == 5
        wait_until(lambda: (site.row(sop, "RLEONLY") or {}).get("state") == "Sent", 60,
                   "the RLE-only node's row Sent")
        row = site.row(sop, "RLEONLY")
        assert row["transfer_syntax"] == RLELossless and row["last_error"] == "", row
        assert row["attempts"] == 2 and rle.aborts == 0, row  # aborted once, then sent
        wait_until(lambda: site.send_status(sop) == "SendFailed", 60, "send_status SendFailed")
        assert site.tech.ok("GET", f"/study/{sid}")["is_exported"] is False
        got = rle.received[0]
        assert got.file_meta.TransferSyntaxUID == RLELossless
        original = dcmread(site.storescp.files()[sop])
        assert np.array_equal(got.pixel_array, original.pixel_array)
    finally:
        failing.stop()
        rle.stop()
    for name in ("FAILING", "RLEONLY"):
        site.admin.ok("DELETE", f"/dicom/nodes/{ids[name]}")
    assert site.tech.ok("GET", "/dicom/queue", params={"study_id": sid})["counts"]["Failed"] == 0


def test_rows_left_sending_are_sent_after_a_restart(site):
    """A console killed while sending leaves rows Sending: the next start sends them."""
    from dios.exchange.service import ExchangeService

    services = site.console.services
    late = site.admin.ok("POST", "/dicom/nodes", json={
        "name": "Late", "ae_title": site.storescp.ae_title, "host": "127.0.0.1",
        "port": site.storescp.port, "roles": ["storage"]})
    _sid, sops = site.expose_study(ONE_VIEW, "ACC-KILLED")
    sop = sops[0]
    wait_until(lambda: site.send_status(sop) == "Sent", 60, "sent to the auto nodes")
    site.storescp.files()[sop].unlink()
    db = services.exchange.db
    db.execute("INSERT INTO dicom_outbox (sop_instance_uid, study_id, node_id, state, "
               "attempts, created_at, updated_at) VALUES (?, ?, ?, 'Sending', 0, 'x', 'x')",
               [sop, _sid, late["id"]])
    before = len(threading.enumerate())
    second = ExchangeService(db, DICOM, site.console.config.data_dir, hub=None,
                             study=services.study).start()
    try:
        wait_until(lambda: (site.row(sop, "Late") or {}).get("state") == "Sent", 60,
                   lambda: f"the row left Sending to be sent: {site.results(sop)}")
        assert sop in site.storescp.files()
    finally:
        second.close()
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"the second sender's threads to end: {dicom_threads()}")
    site.admin.ok("DELETE", f"/dicom/nodes/{late['id']}")


def test_threads_are_gone_after_the_console_stops(site):
    site.console.stop()
    site.stopped = True
    wait_until(lambda: not dicom_threads(), 60,
               lambda: f"the DICOM threads to end: {dicom_threads()}")
    wait_until(lambda: len(threading.enumerate()) <= site.baseline, 60,
               lambda: f"threads back to {site.baseline}: "
                       f"{[t.name for t in threading.enumerate()]}")



KILLED_SENDER = """
import signal, sys, time
from pathlib import Path
from dios.config import DicomConfig
from dios.exchange.service import ExchangeService
from dios.store import open_database

config = DicomConfig(ae_title={aet!r}, connect_timeout=5.0, acse_timeout=4.0, dimse_timeout=30.0,
                     network_timeout=60.0, retry_initial=0.2, retry_max=1.0)
service = ExchangeService(open_database(sys.argv[1]), config, Path(sys.argv[2]), batch=4)
service.start()
print("sending", flush=True)
while True:
    time.sleep(3600)
"""


def test_sigkill_while_sending_then_restart_delivers_every_row(site, tmp_path):
    """SIGKILL a sender process three times while it sends to four nodes: after a restart
    every row is Sent, none is left behind, and the peer holds every image marked Sent."""
    from dios.exchange.nodes import NodeStore
    from dios.exchange.outbox import Outbox
    from dios.store import open_database

    assert site.stopped, "runs after the console has stopped (the outbox is the process's own)"
    peer = StorescpPeer(tmp_path / "peer", ae_title="KILLDEST").start()
    db = open_database(site.console.config.database_url)
    try:
        nodes = NodeStore(db)
        outbox = Outbox(db)
        images = db.query("SELECT sop_instance_id, study_id FROM images "
                          "WHERE storage_status = 'Saved'")
        assert len(images) >= 5
        ids = [nodes.create({"name": f"Kill{i}", "ae_title": "KILLDEST", "host": "127.0.0.1",
                             "port": peer.port, "roles": ["storage"]}).id for i in range(4)]
        for node_id in ids:
            for im in images:
                outbox.enqueue(im["sop_instance_id"], im["study_id"], node_id)
        script = tmp_path / "sender.py"
        script.write_text(KILLED_SENDER.format(aet=OUR_AET))
        root = Path(__file__).resolve().parents[1]
        total = len(ids) * len(images)

        def sent() -> int:
            return sum(outbox.counts(node_id=n)["Sent"] for n in ids)

        def run() -> subprocess.Popen:
            return subprocess.Popen([sys.executable, str(script), site.console.config.database_url,
                                     str(site.console.config.data_dir)], cwd=root,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        left: list[dict[str, int]] = []  # the outbox after each kill
        for _ in range(3):
            start = sent()
            proc = run()
            try:
                wait_until(lambda s=start: sent() > s or sent() == total, 120,
                           "the sender to acknowledge one more row")
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(60)
                proc.stdout.close()
            left.append(outbox.counts())
        assert left[0]["Sent"] < total, left  # the first kill did interrupt the sending
        proc = run()
        try:
            wait_until(lambda: sent() == total, 120,
                       lambda: f"every row Sent after the restart: "
                               f"{[outbox.counts(node_id=n) for n in ids]}")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(60)
            proc.stdout.close()
        held = set(peer.files())
        for node_id in ids:
            for row in outbox.rows(node_id=node_id):
                assert row.state == "Sent" and row.sop_instance_uid in held, row
        assert held == {im["sop_instance_id"] for im in images}
    finally:
        db.close()
        peer.stop()
