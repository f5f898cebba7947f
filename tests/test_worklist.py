"""The modality worklist (C-FIND SCU) and registering a study from a worklist item.

Peers: dcmtk's ``wlmscpfs`` (Debian ``dcmtk``) serving worklist files this module writes
with pydicom - a human in ISO_IR 192, a Chinese name in GB18030, a veterinary patient, one
without its Study Instance UID (served with ``--disable-file-reject``), a CT step, a step
in another month and thirty for the limit -, started on a free loopback port with
``--keep-char-set`` so that each item comes back in its own character set; and Orthanc's
worklist plugin (Debian ``orthanc``) for the veterinary attributes (Patient Species and
Breed Description), which wlmscpfs does not return. A peer that cannot be had fails the
test; it is never skipped.

The module's functions are called directly, and the two operations through a started
console over HTTP.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dios.codes import (
    DICOM_ERROR,
    DUPLICATE,
    INVALID_FIELD,
    NOT_FOUND,
    PEER_UNREACHABLE,
    TIMEOUT,
    DiosError,
)
from dios.config import DicomConfig
from dios.exchange import worklist
from dios.exchange.nodes import Node
from tests.console_helpers import (
    ADMIN_INITIAL,
    FAST_SCRYPT,
    Api,
    images_of,
    setup_users,
    wait_until,
)
from tests.dicom_peers import OrthancPeer, _stop, free_port
from tests.fixtures_dicom import assert_dciodvfy_clean
from tests.peers import ensure_debian_packages

OUR_AET = "DIOSWL"
WLM_AET = "WLMSCP"
DICOM = DicomConfig(ae_title=OUR_AET, connect_timeout=5.0, acse_timeout=4.0,
                    dimse_timeout=30.0, network_timeout=60.0)
HUMAN_VIEW = [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"}]
VET_VIEW = [{"view_id": "View_DX_V_D_TH_VD_00", "procedure_id": ""}]
MWL_SOP_CLASS = "1.2.840.10008.5.1.4.31"
#: the file written not UTF-8 on purpose: pydicom says so every time it is read
pytestmark = pytest.mark.filterwarnings("ignore:Failed to decode byte string:UserWarning")


def dicom_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if "Association" in type(t).__name__
            or type(t).__name__ in ("DULServiceProvider", "AssociationServer")]


def wl_file(path: Path, *, accession: str, name: str | bytes, charset: str = "ISO_IR 192",
            date: str = "20260105", modality: str = "DX", station: str = "DXMODALITY",
            patient_id: str = "", study_uid: str | None = "", dob: str = "19800101",
            sex: str = "F", species: str = "", breed: str = "", owner: str = "") -> str:
    """Write one worklist file (a scheduled procedure step); return its Study Instance UID."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.PatientName = name
    ds.PatientID = patient_id or f"PID-{accession}"
    ds.PatientBirthDate = dob
    ds.PatientSex = sex
    if species:
        ds.PatientSpeciesDescription = species
        ds.PatientBreedDescription = breed
        ds.ResponsiblePerson = owner
        ds.ResponsiblePersonRole = "OWNER"
    uid = generate_uid() if study_uid == "" else study_uid
    if uid is not None:
        ds.StudyInstanceUID = uid
    ds.RequestedProcedureID = f"RP-{accession}"
    ds.RequestedProcedureDescription = "Chest PA"
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledStationName = "DXROOM1"
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.ScheduledPerformingPhysicianName = "Tech^Tom"
    sps.ScheduledProcedureStepID = f"SPS-{accession}"
    sps.ScheduledProcedureStepDescription = "Chest PA"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return uid or ""


class Wlm:
    """dcmtk's wlmscpfs on a loopback port over the files of ``root/WLMSCP``."""

    def __init__(self, root: Path) -> None:
        tools = ensure_debian_packages(["dcmtk"], ["wlmscpfs", "echoscu"])
        self.program, self.echoscu = tools["wlmscpfs"], tools["echoscu"]
        self.root = root
        self.folder = root / WLM_AET
        self.folder.mkdir(parents=True)
        (self.folder / "lockfile").touch()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.uids: dict[str, str] = {}

    def add(self, accession: str, **kw: Any) -> str:
        uid = wl_file(self.folder / f"{accession}.wl", accession=accession, **kw)
        self.uids[accession] = uid
        return uid

    def start(self, *extra: str) -> Wlm:
        log = open(self.root / "wlmscpfs.log", "ab")  # noqa: SIM115 - kept by Popen
        self.proc = subprocess.Popen(
            [self.program, "-v", "-s", "--keep-char-set", "--disable-file-reject",
             "-dfp", str(self.root), "-ta", "30", *extra, str(self.port)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"wlmscpfs exited with {self.proc.returncode}; see "
                                     f"{self.root / 'wlmscpfs.log'}")
            return subprocess.run([self.echoscu, "-aec", WLM_AET, "127.0.0.1", str(self.port)],
                                  capture_output=True, timeout=60).returncode == 0

        wait_until(up, 60, "wlmscpfs to answer a C-ECHO", interval=0.05)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def node(self, **over: Any) -> Node:
        base = {"id": 1, "name": "RIS", "ae_title": WLM_AET, "host": "127.0.0.1",
                "port": self.port, "roles": ("worklist",)}
        base.update(over)
        return Node(**base)


@pytest.fixture(scope="module")
def wlm(tmp_path_factory):
    peer = Wlm(tmp_path_factory.mktemp("wlm"))
    peer.add("WL-UTF8", name="Müller^Jürgen", charset="ISO_IR 192")
    peer.add("WL-GB", name="张^三", charset="GB18030", sex="M", dob="19750312")
    peer.add("WL-BROKEN", name="Broken^Bert", study_uid=None)
    peer.add("WL-CT", name="Scan^Sam", modality="CT")
    peer.add("WL-FEB", name="Doe^John", date="20260203", station="DXOTHER", sex="M")
    with pytest.warns(UserWarning, match="DA"):  # written malformed on purpose
        peer.add("WL-BADDATE", name="Date^Dora", dob="19801399")
    peer.add("WL-BADTEXT", name=b"Bad^\xff\xfe\xc3", charset="ISO_IR 192")  # not UTF-8
    peer.add("WL-NODOB", name="Unknown^Una", dob="", sex="", date="20260110")
    for i in range(30):
        peer.add(f"BULK-{i:02d}", name=f"Bulk^N{i:02d}", date="20270101")
    peer.start()
    yield peer
    peer.stop()


class WorklistOrthanc(OrthancPeer):
    """Orthanc with its worklist plugin over a folder of worklist files (``root/wl``)."""

    def __init__(self, root: Path, calling: list[str]) -> None:
        super().__init__(root, calling, ae_title="ORTHANCWL")
        self.worklists = self.root / "wl"
        self.worklists.mkdir()
        config = json.loads(self.config_path.read_text())
        config.update({
            "Plugins": ["/usr/share/orthanc/plugins/libModalityWorklists.so"],
            "Worklists": {"Enable": True, "Database": str(self.worklists)},
            "DefaultEncoding": "Utf8", "DicomAlwaysAllowFindWorklist": False})
        self.config_path.write_text(json.dumps(config, indent=1))


@pytest.fixture(scope="module")
def vet_orthanc(tmp_path_factory):
    peer = WorklistOrthanc(tmp_path_factory.mktemp("orthanc-wl"), calling=[OUR_AET])
    plugin = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
    assert plugin.is_file(), f"the orthanc package did not install {plugin}"
    uid = wl_file(peer.worklists / "vet.wl", accession="WL-VET", name="Bello^Rex",
                  species="Dog", breed="Deutscher Schäferhund", owner="Keller^Anna",
                  sex="M", dob="20200401", station="DXVET")
    peer.start()
    peer.vet_uid = uid  # type: ignore[attr-defined]
    yield peer
    peer.stop()


def accessions(result: worklist.WorklistResult) -> list[str]:
    return sorted(i["accession_number"] for i in result.items)


# --- the query, called directly ----------------------------------------------------------------
def test_query_filters_names_and_the_malformed_item(wlm):
    before = len(threading.enumerate())
    node = wlm.node()
    day = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"date_from": "2026-01-05", "date_to": "2026-01-05", "modality": "DX"}))
    assert accessions(day) == ["WL-GB", "WL-UTF8"], day
    assert not day.truncated
    by_acc = {i["accession_number"]: i for i in day.items}
    assert by_acc["WL-UTF8"]["patient_name"] == "Müller^Jürgen"
    gb = by_acc["WL-GB"]
    assert gb["patient_name"] == "张^三" and gb["specific_character_set"] == "GB18030", gb
    assert gb["study_instance_uid"] == wlm.uids["WL-GB"]
    assert gb["patient_id"] == "PID-WL-GB" and gb["patient_dob"] == "1975-03-12"
    assert gb["patient_sex"] == "M" and gb["patient_age"] == "50Y"
    assert gb["ref_physician"] == "Referrer^Rita" and gb["reg_source"] == "MWL"
    assert gb["requested_procedure_id"] == "RP-WL-GB"
    assert gb["study_description"] == "Chest PA" and gb["patient_type"] == "Human"
    assert gb["scheduled_procedure_step_start_date"] == "2026-01-05"
    step = gb["scheduled_step"]
    assert step["scheduled_procedure_step_id"] == "SPS-WL-GB", step
    assert (step["modality"], step["scheduled_station_ae_title"], step["start_date"],
            step["start_time"], step["performing_physician"]) == (
        "DX", "DXMODALITY", "2026-01-05", "09:30:00", "Tech^Tom")
    # the file without a Study Instance UID: reported with its reason, the rest returned
    # the files without a Study Instance UID, with a birth date that is no date and with
    # a name that is not text in its character set: reported with their reasons, the rest
    # returned
    reasons = {s["accession_number"]: s["reason"] for s in day.skipped}
    assert sorted(reasons) == ["WL-BADDATE", "WL-BADTEXT", "WL-BROKEN"], day.skipped
    assert "PatientName" in reasons["WL-BADTEXT"], reasons
    assert "StudyInstanceUID" in reasons["WL-BROKEN"], reasons
    assert "PatientBirthDate" in reasons["WL-BADDATE"], reasons

    ct = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"date_from": "2026-01-05", "modality": "CT"}))
    assert accessions(ct) == ["WL-CT"] and not ct.skipped
    by_name = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"patient_name": "Doe*"}))
    assert accessions(by_name) == ["WL-FEB"]
    by_acc_only = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"accession_number": "WL-UTF8"}))
    assert [i["patient_name"] for i in by_acc_only.items] == ["Müller^Jürgen"]
    january = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"date_from": "2026-01-01", "date_to": "2026-02-28", "station_ae_title": "DXOTHER"}))
    assert accessions(january) == ["WL-FEB"]
    none = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"patient_id": "NOBODY"}))
    assert none.items == [] and none.skipped == [] and not none.truncated
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"worklist threads to end: {dicom_threads()}")


def test_limit_cancels_the_query_and_says_truncated(wlm):
    before = len(threading.enumerate())
    node = wlm.node()
    cut = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"date_from": "2027-01-01", "date_to": "2027-01-01", "limit": 10}))
    assert len(cut.items) == 10 and cut.truncated, (len(cut.items), cut.truncated)
    assert cut.to_dict()["truncated"] is True and cut.to_dict()["count"] == 10
    whole = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"date_from": "2027-01-01", "date_to": "2027-01-01", "limit": 30}))
    assert len(whole.items) == 30 and not whole.truncated
    assert accessions(whole) == [f"BULK-{i:02d}" for i in range(30)]
    # the peer still serves after a cancelled query
    again = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"accession_number": "WL-GB"}))
    assert accessions(again) == ["WL-GB"]
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"worklist threads to end: {dicom_threads()}")


def test_bad_filters_are_refused_naming_the_field():
    for bad, field in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"),
                       ({"limit": "10"}, "limit"), ({"date_from": "2026-13-01"}, "date_from"),
                       ({"date_to": "yesterday"}, "date_to"),
                       ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "date_to"),
                       ({"patient_name": "a\\b"}, "patient_name"),
                       ({"accession_number": "A" * 17}, "accession_number"),
                       ({"station_ae_title": "A" * 17}, "station_ae_title"),
                       ({"study_instance_uid": "1.02.3"}, "study_instance_uid"),
                       ({"modality": "D;X"}, "modality")):
        with pytest.raises(DiosError) as err:
            worklist.WorklistFilters.from_request(bad)
        assert err.value.code == INVALID_FIELD and err.value.data.get("field") == field, bad
    ok = worklist.WorklistFilters.from_request({"date_from": "20260101", "modality": "dx"})
    assert ok.date_range() == "20260101-" and ok.modality == "DX"
    assert ok.limit == worklist.DEFAULT_LIMIT
    ident = worklist.identifier(worklist.WorklistFilters.from_request({"patient_name": "张*"}))
    assert ident.SpecificCharacterSet == "ISO_IR 192"
    assert ident.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == ""


def test_peer_down_wrong_title_silent_and_no_role(wlm):
    before = len(threading.enumerate())
    filters = worklist.WorklistFilters.from_request({"patient_name": "*"})
    with pytest.raises(DiosError) as down:
        worklist.query(wlm.node(port=free_port()), DICOM, filters)
    assert down.value.code == PEER_UNREACHABLE, down.value
    with pytest.raises(DiosError) as wrong:
        worklist.query(wlm.node(ae_title="NOT-WLM"), DICOM, filters)
    assert wrong.value.code == DICOM_ERROR and "rejected" in wrong.value.detail
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        with pytest.raises(DiosError) as quiet:
            worklist.query(wlm.node(port=silent.getsockname()[1]), DICOM, filters)
    assert quiet.value.code == TIMEOUT, quiet.value
    with pytest.raises(DiosError) as role:
        worklist.query(wlm.node(roles=("storage",)), DICOM, filters)
    assert role.value.code == INVALID_FIELD and role.value.data.get("field") == "node_id"
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"worklist threads to end: {dicom_threads()}")


def test_a_peer_that_never_answers_the_find_is_a_timeout(tmp_path):
    before = len(threading.enumerate())
    peer = Wlm(tmp_path)
    peer.add("WL-SLOW", name="Slow^Sid")
    peer.start("--sleep-before", "600")  # accepts the association, then sits on the C-FIND
    try:
        impatient = DicomConfig(**{**DICOM.__dict__, "dimse_timeout": 3.0})
        with pytest.raises(DiosError) as silent:
            worklist.query(peer.node(), impatient,
                           worklist.WorklistFilters.from_request({"patient_name": "*"}))
    finally:
        peer.stop()
    assert silent.value.code == TIMEOUT and "did not answer" in silent.value.detail
    wait_until(lambda: len(threading.enumerate()) <= before, 60,
               lambda: f"worklist threads to end: {dicom_threads()}")


def test_veterinary_item_from_orthanc(vet_orthanc):
    node = Node(1, "VetRIS", vet_orthanc.ae_title, "127.0.0.1", vet_orthanc.dicom_port,
                roles=("worklist",))
    got = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"station_ae_title": "DXVET"}))
    assert len(got.items) == 1 and not got.skipped, got
    item = got.items[0]
    assert item["study_instance_uid"] == vet_orthanc.vet_uid
    assert (item["patient_type"], item["variety"], item["owner_name"]) == (
        "Dog", "Deutscher Schäferhund", "Keller^Anna"), item
    assert item["patient_name"] == "Bello^Rex" and item["patient_sex"] == "M"


# --- registration, and the operations over HTTP ---------------------------------------------------
class Site:
    def __init__(self, console: Any, apis: dict[str, Api], wlm_node: dict) -> None:
        self.console = console
        self.apis = apis
        self.wlm_node = wlm_node

    def call(self, role: str, path: str, body: dict[str, Any],
             product: str = "") -> tuple[int, dict[str, Any]]:
        r = self.apis[role].post(path, json=body,
                                 headers={"Product": product} if product else None)
        return r.status_code, r.json()


@pytest.fixture(scope="module")
def site(tmp_path_factory, wlm):
    from dios.config import ListenerConfig, load_config
    from dios.serve import Console
    from dios.shim import api, schemas
    from dios.shim.worklist_ops import WORKLIST_SCHEMAS, worklist_ops

    cfg = load_config(None, data_dir=tmp_path_factory.mktemp("console"))
    cfg.http = ListenerConfig("127.0.0.1", 0)
    cfg.rpc = ListenerConfig("127.0.0.1", 0)
    cfg.devices.clock_scale = 200.0
    cfg.devices.panel = "FLUORO_1024"
    cfg.dicom = DICOM
    with pytest.MonkeyPatch.context() as patch:
        wired = api.operations
        if "dicom.worklist" not in {op.name for op in wired()}:
            # not in the console's operations yet: the console serves them beside the others
            patch.setattr(api, "operations", lambda: [*wired(), *worklist_ops()])
            for name, schema in WORKLIST_SCHEMAS.items():
                patch.setitem(schemas.MESSAGE_SCHEMAS, name, schema)
        console = Console(cfg, calibrate=True, calibration_frames=2,
                          auth_options={"initial_admin_password": ADMIN_INITIAL,
                                        "scrypt_params": FAST_SCRYPT}).start()
        apis = setup_users(console)
        node = apis["admin"].ok("POST", "/dicom/nodes", json={
            "name": "RIS", "ae_title": WLM_AET, "host": "127.0.0.1", "port": wlm.port,
            "roles": ["worklist"]})
        yield Site(console, apis, node)
        for a in apis.values():
            a.close()
        console.stop()


def test_register_over_http_keeps_the_worklist_and_refuses_twice(site, wlm):
    status, body = site.call("tech", "/dicom/worklist/query", {
        "node_id": site.wlm_node["id"], "date_from": "2026-01-05", "date_to": "2026-01-05",
        "modality": "DX"})
    assert status == 200 and body["code"] == "0x000000", body
    data = body["data"]
    assert data["@type"].endswith("dios.dicom.Worklist") and data["count"] == 2, data
    assert sorted(s["accession_number"] for s in data["skipped"]) == [
        "WL-BADDATE", "WL-BADTEXT", "WL-BROKEN"]
    gb = next(i for i in data["items"] if i["accession_number"] == "WL-GB")
    assert gb["patient_name"] == "张^三"

    status, body = site.call("tech", "/dicom/worklist/register",
                             {"item": gb, "node_id": site.wlm_node["id"],
                              "views": HUMAN_VIEW, "patient_size": "Large"})
    assert status == 200 and body["code"] == "0x000000", body
    study = body["data"]
    assert study["study_instance_uid"] == wlm.uids["WL-GB"]
    assert (study["accession_number"], study["patient_name"], study["patient_id"],
            study["ref_physician"], study["reg_source"], study["study_description"],
            study["scheduled_procedure_step_start_date"], study["patient_size"]) == (
        "WL-GB", "张^三", "PID-WL-GB", "Referrer^Rita", "MWL", "Chest PA", "2026-01-05",
        "Large"), study
    mwl = json.loads(study["mwl"])
    assert (mwl["scheduled_procedure_step_id"], mwl["requested_procedure_id"],
            mwl["node"], mwl["scheduled_station_ae_title"]) == (
        "SPS-WL-GB", "RP-WL-GB", "RIS", "DXMODALITY"), mwl
    assert all(s["study_instance_uid"] == wlm.uids["WL-GB"] for s in study["series"])

    # the same item again: DUPLICATE, nothing created
    count = site.apis["tech"].ok("GET", "/study/stat")["total"]
    status, body = site.call("tech", "/dicom/worklist/register",
                             {"item": gb, "views": HUMAN_VIEW})
    assert body["code"] == DUPLICATE.hex and status == 409, (status, body)
    assert site.apis["tech"].ok("GET", "/study/stat")["total"] == count

    # an exposure writes the worklist's identity into the image's DICOM file
    sop = images_of(study)[0]["sop_instance_id"]
    site.apis["tech"].ok("POST", "/task/image/expose", json={"instance_uid": sop})
    path = site.console.services.study.image_path(sop)
    ds = dcmread(path)
    assert ds.StudyInstanceUID == wlm.uids["WL-GB"] and ds.AccessionNumber == "WL-GB"
    assert str(ds.PatientName) == "张^三" and ds.PatientID == "PID-WL-GB"
    assert str(ds.ReferringPhysicianName) == "Referrer^Rita"
    assert ds.StudyDescription == "Chest PA"
    assert_dciodvfy_clean(path)


def test_register_by_key_rights_and_errors(site, wlm):
    nid = site.wlm_node["id"]
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "WL-UTF8", "views": HUMAN_VIEW})
    assert status == 200 and body["code"] == "0x000000", body
    study = body["data"]
    assert study["study_instance_uid"] == wlm.uids["WL-UTF8"]
    assert study["patient_name"] == "Müller^Jürgen" and study["reg_source"] == "MWL"
    assert json.loads(study["mwl"])["scheduled_procedure_step_id"] == "SPS-WL-UTF8"
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "study_instance_uid": wlm.uids["WL-UTF8"], "views": HUMAN_VIEW})
    assert body["code"] == DUPLICATE.hex, body

    # a worklist without birth date: registered with an empty one (Type 2 in a worklist)
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "WL-NODOB", "views": HUMAN_VIEW})
    assert body["code"] == "0x000000", body
    assert (body["data"]["patient_dob"], body["data"]["patient_age"],
            body["data"]["patient_sex"]) == ("", "", ""), body["data"]

    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "NO-SUCH", "views": HUMAN_VIEW})
    assert body["code"] == NOT_FOUND.hex and status == 404, body
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "WL-BROKEN", "views": HUMAN_VIEW})
    assert body["code"] == NOT_FOUND.hex and "StudyInstanceUID" in body["description"], body
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "WL-CT", "views": []})
    assert body["code"] != "0x000000" and body["data"].get("field") == "views", body
    status, body = site.call("tech", "/dicom/worklist/register", {"views": HUMAN_VIEW})
    assert body["data"].get("field") == "node_id", body
    forged = {"study_instance_uid": "1.2.x", "patient_id": "P", "patient_name": "N"}
    status, body = site.call("tech", "/dicom/worklist/register", {"item": forged,
                                                                   "views": HUMAN_VIEW})
    assert body["code"] == INVALID_FIELD.hex, body
    assert body["data"].get("field") == "item.study_instance_uid", body

    status, body = site.call("tech", "/dicom/worklist/query", {"node_id": nid, "limit": 0})
    assert body["code"] == INVALID_FIELD.hex and body["data"].get("field") == "limit"
    status, body = site.call("tech", "/dicom/worklist/query", {"node_id": 424242})
    assert status == 404, body
    status, body = site.call("guest", "/dicom/worklist/query", {"node_id": nid})
    assert status in (401, 403), body
    status, body = site.call("guest", "/dicom/worklist/register", {
        "node_id": nid, "accession_number": "WL-CT", "views": HUMAN_VIEW})
    assert status in (401, 403), body


def test_peer_down_over_http_changes_nothing(site):
    down = site.apis["admin"].ok("POST", "/dicom/nodes", json={
        "name": "Down", "ae_title": "DOWN", "host": "127.0.0.1", "port": free_port(),
        "roles": ["worklist"]})
    count = site.apis["tech"].ok("GET", "/study/stat")["total"]
    status, body = site.call("tech", "/dicom/worklist/query", {"node_id": down["id"]})
    assert body["code"] == PEER_UNREACHABLE.hex and status >= 400, (status, body)
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": down["id"], "accession_number": "WL-CT", "views": HUMAN_VIEW})
    assert body["code"] == PEER_UNREACHABLE.hex, body
    assert site.apis["tech"].ok("GET", "/study/stat")["total"] == count


def test_register_veterinary_item(site, vet_orthanc):
    node = Node(1, "VetRIS", vet_orthanc.ae_title, "127.0.0.1", vet_orthanc.dicom_port,
                roles=("worklist",))
    item = worklist.query(node, DICOM, worklist.WorklistFilters.from_request(
        {"accession_number": "WL-VET"})).items[0]
    study = worklist.register_from_worklist(
        site.console.services.study, {"item": item, "views": VET_VIEW}, node=node,
        product="VETDROS")
    assert study["study_instance_uid"] == vet_orthanc.vet_uid and study["product"] == "VETDROS"
    assert (study["patient_type"], study["variety"], study["owner_name"], study["reg_source"]) \
        == ("Dog", "Deutscher Schäferhund", "Keller^Anna", "MWL"), study
    with pytest.raises(DiosError) as twice:
        worklist.register_from_worklist(site.console.services.study,
                                        {"item": item, "views": VET_VIEW}, product="VETDROS")
    assert twice.value.code == DUPLICATE


def _closed(schema: Any) -> Any:
    """``schema`` with every object that lists its properties closed to other members."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def test_replies_follow_the_published_schemas(site):
    import jsonschema

    from dios.shim.schemas import COMPONENTS, json_schema

    doc = site.apis["tech"].get("/openapi.json").json()
    components = {name: _closed(json_schema(s, COMPONENTS))
                  for name, s in doc["components"]["schemas"].items()}

    def problems(type_name: str, value: Any) -> list[str]:
        root = {**components[type_name], "components": {"schemas": components}}
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
                for e in jsonschema.Draft202012Validator(root).iter_errors(value)]

    for path in ("/dicom/worklist/query", "/dicom/worklist/register"):
        assert path in {p.removeprefix("/api/v1") for p in doc["paths"]}, path
    status, body = site.call("tech", "/dicom/worklist/query", {
        "node_id": site.wlm_node["id"], "date_from": "2026-01-01", "date_to": "2026-01-31"})
    assert status == 200 and body["data"]["count"] >= 3, body
    assert not problems("dios.dicom.Worklist", body["data"])
    status, body = site.call("tech", "/dicom/worklist/register", {
        "node_id": site.wlm_node["id"], "accession_number": "WL-CT", "views": HUMAN_VIEW})
    assert status == 200, body
    assert body["data"]["modality"] == "DX"  # CT is no modality of this console
    assert not problems("dr.study.Study", body["data"])
