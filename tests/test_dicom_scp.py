"""The console's own DICOM SCP against dcmtk's independent clients.

A console data directory with stored studies (registered with the study service, each
saved image a DX file written by the engine's writer) is served by :class:`DicomScp` on a
free loopback port; dcmtk (Debian ``dcmtk``, installed by the set-up when missing, the test
fails loudly when it cannot be) talks to it: ``echoscu`` (allowed caller accepted, unknown
AE title and wrong called AE title rejected), ``findscu`` (patient/study/series/image
levels, wildcards, date ranges, character set), ``getscu`` (files read back with pydicom),
``movescu`` to a ``storescp`` move destination and to an unknown one (``0xA801``),
``storescu`` of a foreign instance (indexed, then found; a duplicate replaces nothing). A
pynetdicom client bound to 127.0.0.2 checks the caller's host, and sends the malformed
requests dcmtk will not make. Every test ends with the thread count back where it began.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dios.config import DicomConfig
from dios.dicom.dx import write_dx
from dios.exchange.nodes import NodeStore
from dios.exchange.scp import DicomScp, matches
from dios.store import open_database
from dios.study import StudyService
from dios.uids import UidFactory
from tests.console_helpers import wait_until
from tests.peers import ensure_debian_packages
from tests.test_store import SeedCatalog
from tests.test_study import seed_register_request

ROOT_UID = "1.2.826.0.1.3680043.10.1443"
OUR_AET = "DIOSSCP"
CALLER = "QRSCU"
DEST = "MOVEDEST"
TOOLS = ["echoscu", "findscu", "getscu", "movescu", "storescp", "storescu"]

PATIENTS = [
    {"patient_id": "PID-0001", "patient_name": "Doe^Jane", "patient_sex": "F",
     "accession_number": "ACC-A1", "views": 3, "saved": 2},
    {"patient_id": "PID-0002", "patient_name": "张^三", "patient_sex": "M",
     "accession_number": "ACC-B2", "views": 2, "saved": 2},
]
VIEWS = [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
         {"view_id": "View_DX_T_A_SK_LAT_00", "procedure_id": "P0-0002"},
         {"view_id": "View_DX_T_A_SK_Special_04", "procedure_id": ""}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dcmtk() -> dict[str, str]:
    """dcmtk's programs (apt-get installs the package when missing; fails loudly if not)."""
    return ensure_debian_packages(["dcmtk"], TOOLS)


def _register(svc: StudyService, p: dict) -> dict:
    req = seed_register_request(
        patient_id=p["patient_id"], patient_name=p["patient_name"],
        patient_sex=p["patient_sex"], patient_dob="1980-02-03", patient_type="Human",
        owner_name="", chip_number="", variety="", is_anaesthesia=False,
        is_sedation=False, accession_number=p["accession_number"],
        ref_physician="Ref^Rita", views=VIEWS[:p["views"]])
    return svc.register(req)


def _save_images(svc: StudyService, data_dir: Path, study: dict, count: int) -> list[str]:
    """Write DX files for the first ``count`` images of ``study`` and mark them saved."""
    saved = []
    images = [(se, im) for se in study["series"] for im in se["images"]]
    for se, im in images[:count]:
        sop = im["sop_instance_id"]
        folder = data_dir / "images" / study["study_instance_uid"]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) & 0x0FFF
        write_dx(folder / f"{sop}.dcm", pixels, bits_stored=12,
                 patient={"patient_id": study["patient_id"],
                          "patient_name": study["patient_name"],
                          "patient_sex": study["patient_sex"],
                          "patient_dob": study["patient_dob"]},
                 study={"study_instance_uid": study["study_instance_uid"],
                        "study_id": study["study_id"],
                        "accession_number": study["accession_number"],
                        "ref_physician": study["ref_physician"],
                        "study_datetime": study["study_start_datetime"],
                        "specific_character_set": study["specific_character_set"]},
                 series={"series_instance_uid": se["series_instance_uid"],
                         "series_number": se["sort"]},
                 image={"sop_instance_uid": sop, "instance_number": im["sort"]},
                 detector={"pixel_pitch_mm": 0.15})
        svc.mark_imported(sop, f"images/{study['study_instance_uid']}/{sop}.dcm")
        saved.append(sop)
    return saved


class Site:
    """A console data directory served by a running SCP, and the dcmtk command lines."""

    def __init__(self, root: Path, tools: dict[str, str]) -> None:
        self.root = root
        self.tools = tools
        self.data_dir = root / "data"
        self.data_dir.mkdir()
        self.db = open_database(f"sqlite:///{self.data_dir / 'dios.db'}")
        self.svc = StudyService(self.db, SeedCatalog(), UidFactory(ROOT_UID),
                                data_dir=self.data_dir)
        self.studies: list[dict] = []
        self.saved: dict[str, list[str]] = {}
        for p in PATIENTS:
            study = _register(self.svc, p)
            self.studies.append(study)
            self.saved[study["study_instance_uid"]] = _save_images(
                self.svc, self.data_dir, study, p["saved"])
        self.nodes = NodeStore(self.db)
        self.dest_port = free_port()
        self.nodes.create({"name": "Query client", "ae_title": CALLER, "host": "127.0.0.1",
                           "port": 104, "roles": ["query"], "allow_incoming": True})
        self.nodes.create({"name": "Move destination", "ae_title": DEST, "host": "127.0.0.1",
                           "port": self.dest_port, "roles": ["storage"]})
        self.config = DicomConfig(ae_title=OUR_AET, host="127.0.0.1", port=free_port(),
                                  acse_timeout=30, dimse_timeout=60, network_timeout=60)
        self.scp = DicomScp(self.db, self.nodes, self.config, self.data_dir)

    def study_file(self, study_uid: str, sop: str) -> Path:
        return self.data_dir / "images" / study_uid / f"{sop}.dcm"

    def run(self, tool: str, *args: str, aet: str = CALLER, aec: str = OUR_AET,
            cwd: Path | None = None, files: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess[str]:
        cmd = [self.tools[tool], "-v", "-aet", aet, "-aec", aec, "-to", "30", "-ta", "30",
               "-td", "60", *args, "127.0.0.1", str(self.scp.port), *files]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd,
                              check=False)

    def find(self, level: str, *keys: str, model: str = "-S") -> list[Dataset]:
        out = self.root / f"find-{datetime.now().strftime('%H%M%S%f')}"
        out.mkdir()
        proc = self.run("findscu", model, "-X", "-od", str(out), "-k",
                        f"QueryRetrieveLevel={level}", *[a for k in keys for a in ("-k", k)])
        assert proc.returncode == 0, proc.stderr
        return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture()
def site(tmp_path, dcmtk):
    threads = threading.active_count()
    s = Site(tmp_path, dcmtk)
    s.scp.start()
    try:
        yield s
    finally:
        s.scp.close()
        s.db.close()
    wait_until(lambda: threading.active_count() <= threads, 60,
               lambda: f"threads back to {threads}, now {threading.enumerate()}")


# -- association: who may call ---------------------------------------------------------------


def test_echo_allowed_caller_and_rejections(site):
    ok = site.run("echoscu")
    assert ok.returncode == 0, ok.stderr
    unknown = site.run("echoscu", aet="STRANGER")
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stderr, unknown.stderr
    wrong_called = site.run("echoscu", aec="NOTUS")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr, wrong_called.stderr


def test_allowed_ae_title_from_another_host_is_rejected(site):
    """The node allows QRSCU from 127.0.0.1; the same AE title from 127.0.0.2 is refused."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET,
                         bind_address=("127.0.0.2", 0))
    try:
        assert assoc.is_rejected
        rj = assoc.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    near = AE(ae_title=CALLER)
    near.add_requested_context(Verification)
    assoc = near.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET,
                           bind_address=("127.0.0.1", 0))
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
        near.shutdown()


def test_a_node_given_by_host_name_may_call(site):
    site.nodes.create({"name": "Named", "ae_title": "NAMEDSCU", "host": "localhost",
                       "port": 104, "allow_incoming": True})
    ok = site.run("echoscu", aet="NAMEDSCU")
    assert ok.returncode == 0, ok.stderr


def test_association_cap(tmp_path, dcmtk):
    """Beyond max_associations at once, a caller is refused transiently (local limit)."""
    threads = threading.active_count()
    s = Site(tmp_path, dcmtk)
    s.scp = DicomScp(s.db, s.nodes, s.config, s.data_dir, max_associations=1).start()
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", s.scp.port, ae_title=OUR_AET)
    try:
        assert first.is_established
        second = ae.associate("127.0.0.1", s.scp.port, ae_title=OUR_AET)
        assert second.is_rejected
        rj = second.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
        assert first.send_c_echo().Status == 0x0000
    finally:
        first.release()
        ae.shutdown()
        s.scp.close()
        s.db.close()
    wait_until(lambda: threading.active_count() <= threads, 60,
               lambda: f"threads back to {threads}, now {threading.enumerate()}")


def test_close_aborts_open_associations(site):
    threads_before = threading.active_count()
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET)
    try:
        assert assoc.is_established
        site.scp.close()
        wait_until(lambda: assoc.is_aborted or not assoc.is_established, 60,
                   "the open association to end when the SCP closes")
        assert not site.scp.running
        refused = site.run("echoscu")
        assert refused.returncode != 0  # nothing listens any more
    finally:
        ae.shutdown()
    wait_until(lambda: threading.active_count() < threads_before, 60,
               lambda: f"the association threads to end: {threading.enumerate()}")


def test_the_node_must_allow_incoming(site):
    node = next(n for n in site.nodes.list() if n.ae_title == CALLER)
    site.nodes.update(node.id, {"version": node.version, "allow_incoming": False})
    refused = site.run("echoscu")
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr


# -- C-FIND --------------------------------------------------------------------------------


def test_find_study_level(site):
    a, b = site.studies
    got = site.find("STUDY", "StudyInstanceUID", "PatientName", "PatientID", "StudyDate",
                    "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
                    "NumberOfStudyRelatedSeries", "StudyID", "PatientBirthDate",
                    "ReferringPhysicianName", "StudyTime", "InstitutionName")
    by_uid = {str(ds.StudyInstanceUID): ds for ds in got}
    assert set(by_uid) == {a["study_instance_uid"], b["study_instance_uid"]}
    first = pydicom.dcmread(site.study_file(a["study_instance_uid"],
                                            site.saved[a["study_instance_uid"]][0]))
    ra = by_uid[a["study_instance_uid"]]
    assert str(ra.PatientName) == "Doe^Jane" and ra.PatientID == "PID-0001"
    assert ra.StudyDate == first.StudyDate and ra.StudyID == first.StudyID
    assert ra.AccessionNumber == "ACC-A1" and ra.ModalitiesInStudy == "DX"
    assert int(ra.NumberOfStudyRelatedInstances) == 2  # the unsaved third image is not there
    assert int(ra.NumberOfStudyRelatedSeries) == 1
    assert ra.PatientBirthDate == "19800203" and str(ra.ReferringPhysicianName) == "Ref^Rita"
    assert ra.StudyTime == first.StudyTime
    assert "InstitutionName" in ra and ra.InstitutionName == ""  # asked, has no value: empty
    rb = by_uid[b["study_instance_uid"]]
    assert str(rb.PatientName) == "张^三"  # decoded with the response's character set
    assert rb.SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in ra  # plain ASCII: the default repertoire


def test_find_matching_keys(site):
    a, b = site.studies
    uids = lambda got: {str(ds.StudyInstanceUID) for ds in got}  # noqa: E731
    assert uids(site.find("STUDY", "StudyInstanceUID", "PatientName=doe*")) == {
        a["study_instance_uid"]}
    assert uids(site.find("STUDY", "StudyInstanceUID", "PatientID=PID-000?")) == {
        a["study_instance_uid"], b["study_instance_uid"]}
    assert uids(site.find("STUDY", "StudyInstanceUID", "AccessionNumber=ACC-B2")) == {
        b["study_instance_uid"]}
    assert site.find("STUDY", "StudyInstanceUID", "AccessionNumber=NOPE") == []
    date = site.find("STUDY", "StudyDate", f"StudyInstanceUID={a['study_instance_uid']}")[0]
    day = date.StudyDate
    assert len(uids(site.find("STUDY", "StudyInstanceUID", f"StudyDate={day}-"))) == 2
    assert uids(site.find("STUDY", "StudyInstanceUID", "StudyDate=19000101-19991231")) == set()
    assert len(uids(site.find("STUDY", "StudyInstanceUID", "ModalitiesInStudy=CR\\DX"))) == 2
    assert uids(site.find("STUDY", "StudyInstanceUID", "ModalitiesInStudy=CT")) == set()
    # a UTF-8 query on a name in another script
    assert uids(site.find("STUDY", "StudyInstanceUID", "SpecificCharacterSet=ISO_IR 192",
                          "PatientName=张*")) == {b["study_instance_uid"]}
    both = f"StudyInstanceUID={a['study_instance_uid']}\\{b['study_instance_uid']}"
    assert len(site.find("STUDY", both)) == 2


def test_find_patient_series_image_levels(site):
    a, b = site.studies
    patients = site.find("PATIENT", "PatientID", "PatientName",
                         "NumberOfPatientRelatedInstances", model="-P")
    assert {(p.PatientID, int(p.NumberOfPatientRelatedInstances)) for p in patients} == {
        ("PID-0001", 2), ("PID-0002", 2)}
    series = site.find("SERIES", f"StudyInstanceUID={b['study_instance_uid']}",
                       "SeriesInstanceUID", "Modality", "SeriesNumber",
                       "NumberOfSeriesRelatedInstances", "BodyPartExamined", "SOPInstanceUID")
    expected = {se["series_instance_uid"] for se in b["series"]}
    assert {s.SeriesInstanceUID for s in series} == expected
    assert all(s.Modality == "DX" for s in series)
    saved = set(site.saved[b["study_instance_uid"]])
    per_series = {se["series_instance_uid"]: sum(im["sop_instance_id"] in saved
                                                 for im in se["images"]) for se in b["series"]}
    assert {s.SeriesInstanceUID: int(s.NumberOfSeriesRelatedInstances)
            for s in series} == per_series
    for s in series:  # BodyPartExamined is read from the file; an IMAGE key stays empty
        sop = next(im["sop_instance_id"] for se in b["series"] for im in se["images"]
                   if se["series_instance_uid"] == s.SeriesInstanceUID)
        written = pydicom.dcmread(site.study_file(b["study_instance_uid"], sop))
        assert s.BodyPartExamined == written.get("BodyPartExamined", "")
        assert s.SOPInstanceUID == ""
    images = site.find("IMAGE", f"StudyInstanceUID={a['study_instance_uid']}",
                       f"SeriesInstanceUID={a['series'][0]['series_instance_uid']}",
                       "SOPInstanceUID", "SOPClassUID", "InstanceNumber")
    assert {i.SOPInstanceUID for i in images} == set(site.saved[a["study_instance_uid"]])
    assert all(i.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" for i in images)
    # the Study Root model has no PATIENT level: a failure status, not an answer
    proc = site.run("findscu", "-S", "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID")
    # dcmtk names status 0xA900 after the storage meaning of the same code
    assert "DataSetDoesNotMatchSOPClass" in proc.stderr, proc.stderr


def test_find_bad_identifiers_are_failures(site):
    """Unknown or missing levels get a failure status; the SCP keeps serving."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET)
    try:
        assert assoc.is_established
        for level in ("WARD", None):
            ds = Dataset()
            if level:
                ds.QueryRetrieveLevel = level
            ds.PatientID = ""
            statuses = [st.Status for st, _ in assoc.send_c_find(
                ds, StudyRootQueryRetrieveInformationModelFind) if st]
            assert statuses and statuses[-1] == 0xA900, statuses
    finally:
        assoc.release()
        ae.shutdown()
    assert site.run("echoscu").returncode == 0


# -- C-GET and C-MOVE ----------------------------------------------------------------------


def test_get_study_files_read_back(site):
    a = site.studies[0]
    out = site.root / "got"
    out.mkdir()
    proc = site.run("getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={a['study_instance_uid']}")
    assert proc.returncode == 0, proc.stderr
    files = [pydicom.dcmread(f) for f in out.iterdir() if f.is_file()]
    assert sorted(ds.SOPInstanceUID for ds in files) == sorted(
        site.saved[a["study_instance_uid"]])
    for ds in files:
        original = pydicom.dcmread(site.study_file(a["study_instance_uid"], ds.SOPInstanceUID))
        assert np.array_equal(ds.pixel_array, original.pixel_array)
        assert ds.PatientID == "PID-0001"


def test_get_counts_a_missing_file_as_failed(site):
    a = site.studies[0]
    gone = site.saved[a["study_instance_uid"]][0]
    site.study_file(a["study_instance_uid"], gone).unlink()
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1", ExplicitVRLittleEndian)
    received: list[str] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET,
                         ext_neg=[build_role("1.2.840.10008.5.1.4.1.1.1.1", scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assert assoc.is_established
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = a["study_instance_uid"]
        responses = [st for st, _ in assoc.send_c_get(
            ds, StudyRootQueryRetrieveInformationModelGet) if st]
        final = responses[-1]
        assert final.Status == 0xB000, hex(final.Status)  # some sub-operations failed
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
        assert received == [site.saved[a["study_instance_uid"]][1]]
        # a retrieval without its level's unique key is refused
        bad = Dataset()
        bad.QueryRetrieveLevel = "SERIES"
        bad.PatientID = "PID-0001"
        statuses = [st.Status for st, _ in assoc.send_c_get(
            bad, StudyRootQueryRetrieveInformationModelGet) if st]
        assert statuses[-1] & 0xF000 in (0xA000, 0xC000), hex(statuses[-1])
    finally:
        assoc.release()
        ae.shutdown()


def test_move_to_storescp_and_to_unknown_destination(site):
    b = site.studies[1]
    got = site.root / "storescp"
    got.mkdir()
    storescp = subprocess.Popen(
        [site.tools["storescp"], "-aet", DEST, "-od", str(got), "-ta", "30", "-td", "60",
         str(site.dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: subprocess.run(
            [site.tools["echoscu"], "-aec", DEST, "127.0.0.1", str(site.dest_port)],
            capture_output=True, timeout=60).returncode == 0, 60, "storescp to listen")
        proc = site.run("movescu", "-S", "-aem", DEST, "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={b['study_instance_uid']}")
        assert proc.returncode == 0, proc.stderr
        want = sorted(site.saved[b["study_instance_uid"]])
        wait_until(lambda: len([f for f in got.iterdir() if f.is_file()]) == len(want), 60,
                   "the moved files at storescp")
        moved = [pydicom.dcmread(f) for f in got.iterdir() if f.is_file()]
        assert sorted(ds.SOPInstanceUID for ds in moved) == want
        assert all(str(ds.PatientName) == "张^三" for ds in moved)

        unknown = site.run("movescu", "-S", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={b['study_instance_uid']}")
        assert "Refused: MoveDestinationUnknown" in unknown.stderr, unknown.stderr
        assert _move_status(site, "NOWHERE", b["study_instance_uid"]) == 0xA801
        # a known destination but no StudyInstanceUID to retrieve: unable to process
        assert _move_status(site, DEST, "") & 0xF000 == 0xC000
    finally:
        storescp.terminate()
        storescp.wait(60)


def _move_status(site: Site, destination: str, study_uid: str) -> int:
    """The final status of a study-level C-MOVE (a pynetdicom requestor reads the code)."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET)
    try:
        assert assoc.is_established
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        statuses = [st.Status for st, _ in assoc.send_c_move(
            ds, destination, StudyRootQueryRetrieveInformationModelMove) if st]
        return int(statuses[-1])
    finally:
        assoc.release()
        ae.shutdown()


# -- C-STORE -------------------------------------------------------------------------------


def _foreign_cr(path: Path, patient_id: str = "PRIOR-9") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Prior^Paula"
    ds.StudyDate = "20240105"
    ds.Modality = "CR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((32, 32), 123, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_store_foreign_instance_indexed_found_and_kept(site):
    sent = site.root / "prior.dcm"
    ds = _foreign_cr(sent)
    proc = site.run("storescu", files=(str(sent),))
    assert proc.returncode == 0, proc.stderr
    stored = site.data_dir / "received" / ds.StudyInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert stored.is_file()
    assert pydicom.dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID
    row = site.db.query_one("SELECT * FROM dicom_received WHERE sop_instance_uid = ?",
                            [ds.SOPInstanceUID])
    assert row["patient_id"] == "PRIOR-9" and row["calling_ae"] == CALLER
    assert row["modality"] == "CR" and row["study_date"] == "20240105"
    found = site.find("STUDY", "PatientID=PRIOR-9", "StudyInstanceUID", "PatientName",
                      "ModalitiesInStudy", "StudyDate")
    assert [(f.StudyInstanceUID, str(f.PatientName), f.ModalitiesInStudy, f.StudyDate)
            for f in found] == [(ds.StudyInstanceUID, "Prior^Paula", "CR", "20240105")]
    images = site.find("IMAGE", f"StudyInstanceUID={ds.StudyInstanceUID}", "SOPInstanceUID",
                       "SOPClassUID", "Rows")
    assert [(i.SOPInstanceUID, i.SOPClassUID, i.Rows) for i in images] == [
        (ds.SOPInstanceUID, ComputedRadiographyImageStorage, 32)]

    # the same SOP Instance UID again, with other content: success, nothing replaced
    before = stored.read_bytes()
    ds.PatientName = "Changed^Name"
    ds.save_as(sent, enforce_file_format=True)
    again = site.run("storescu", files=(str(sent),))
    assert again.returncode == 0, again.stderr
    assert stored.read_bytes() == before
    assert site.db.query_one("SELECT COUNT(*) AS n FROM dicom_received")["n"] == 1


def test_parallel_clients_and_a_received_prior_retrieved(site):
    """Several dcmtk clients at once, each on its own association; a stored prior comes
    back by C-GET at IMAGE level like the console's own images."""
    sent = site.root / "prior.dcm"
    ds = _foreign_cr(sent, patient_id="PRIOR-P")
    assert site.run("storescu", files=(str(sent),)).returncode == 0
    a = site.studies[0]
    outs = [site.root / f"par{i}" for i in range(4)]
    for out in outs:
        out.mkdir()
    procs = []
    for i, out in enumerate(outs):
        if i % 2:
            args = ["-k", "QueryRetrieveLevel=STUDY",
                    "-k", f"StudyInstanceUID={a['study_instance_uid']}"]
        else:
            args = ["-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                    "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                    "-k", f"SOPInstanceUID={ds.SOPInstanceUID}"]
        cmd = [site.tools["getscu"], "-aet", CALLER, "-aec", OUR_AET, "-to", "30", "-ta", "30",
               "-td", "60", "-S", "-od", str(out), *args, "127.0.0.1", str(site.scp.port)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    for i, out in enumerate(outs):
        got = sorted(pydicom.dcmread(f).SOPInstanceUID for f in out.iterdir())
        want = [ds.SOPInstanceUID] if i % 2 == 0 else sorted(site.saved[a["study_instance_uid"]])
        assert got == want


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_store_refuses_uids_that_are_not_uids(site):
    """A Study Instance UID from the network never becomes a path unchecked."""
    ae = AE(ae_title=CALLER)
    ae.add_requested_context(ComputedRadiographyImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", site.scp.port, ae_title=OUR_AET)
    try:
        assert assoc.is_established
        for bad in ("../../escape", "1.2.03", ""):
            ds = _foreign_cr(site.root / "bad.dcm")
            ds.StudyInstanceUID = bad
            status = assoc.send_c_store(ds)
            assert status.Status == 0xA900, (bad, hex(status.Status))
        for bad in ("../../escape", "1.2.03"):
            ds = _foreign_cr(site.root / "bad.dcm")
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = bad
            status = assoc.send_c_store(ds)
            assert status.Status == 0xA900, (bad, hex(status.Status))
    finally:
        assoc.release()
        ae.shutdown()
    assert not (site.data_dir / "received").exists() or not any(
        (site.data_dir / "received").rglob("*.dcm"))
    assert not (site.data_dir.parent / "escape").exists()
    assert site.db.query_one("SELECT COUNT(*) AS n FROM dicom_received")["n"] == 0


# -- matching rules (no network) -----------------------------------------------------------


@pytest.mark.parametrize("vr,query,values,expected", [
    ("PN", "", ["Doe^Jane"], True),
    ("PN", "doe^*", ["Doe^Jane"], True),
    ("PN", "D?e^Jane", ["Doe^Jane"], True),
    ("PN", "Smith*", ["Doe^Jane"], False),
    ("LO", "pid-1", ["PID-1"], False),
    ("UI", "1.2.3\\1.2.4", ["1.2.4"], True),
    ("UI", "1.2.3", ["1.2.33"], False),
    ("DA", "20240101-20240131", ["20240115"], True),
    ("DA", "-20231231", ["20240115"], False),
    ("DA", "20240115-", ["20240115"], True),
    ("DA", "20240115", ["20240115"], True),
    ("TM", "080000-120000", ["093015"], True),
    ("TM", "1000-1200", ["093015"], False),
    ("CS", "CT\\DX", ["CR", "DX"], True),
    ("CS", "CT", ["CR", "DX"], False),
    ("CS", "D*", [], False),
    ("PN", "a*" * 40 + "b", ["a" * 64], False),  # linear wildcard matching, no blow-up
    ("DT", "20240101-20240102", ["20240101120000"], True),
])
def test_matching_rules(vr, query, values, expected):
    assert matches(vr, query, values) is expected


def test_no_listener_when_port_is_zero(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        scp = DicomScp(db, NodeStore(db), DicomConfig(port=0), tmp_path).start()
        assert not scp.running and scp.port == 0
        scp.close()
    finally:
        db.close()


def test_port_in_use_is_a_clear_error(tmp_path):
    from dios.codes import DICOM_ERROR, DiosError

    db = open_database(f"sqlite:///{tmp_path / 'd.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        scp = DicomScp(db, NodeStore(db), DicomConfig(port=port), tmp_path)
        try:
            with pytest.raises(DiosError) as err:
                scp.start()
            assert err.value.code == DICOM_ERROR and not scp.running
        finally:
            scp.close()
            db.close()

