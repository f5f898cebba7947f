"""The task service on the real engine (simulators): technique from the APR, exposures
landing in exactly one image, orphan frames, faults, uploads and downloads.

Every test runs twice: on the default SQLite database and on PostgreSQL (the shared study
database of multi-console sites), through the same services."""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest

from dios.acquisition.lifecycle import check
from dios.acquisition.waits import wait_status
from dios.codes import DiosError
from dios.task.service import check_file_name, check_uid, command_permission
from dios.uri import DETECTOR, GENERATOR
from tests.console_helpers import images_of, start_console, study_request
from tests.test_shim_http import png_bytes


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def console(request, tmp_path_factory):
    url = ""
    if request.param == "postgresql":
        url = request.getfixturevalue("_postgres_session").new_database()
    c = start_console(tmp_path_factory.mktemp("task"), database_url=url)
    assert c.db.dialect.name == request.param
    yield c
    c.stop()


@pytest.fixture()
def svc(console):
    return console.services


def new_study(svc, **over) -> dict:
    return svc.study.register(study_request(**over), product="DROS")


def image_of(svc, sop: str) -> dict:
    return svc.study.image(sop)


def test_command_permissions():
    assert command_permission("IncParam_KV") == "device.action"
    assert command_permission("SetParam_AECField") == "device.action"
    for name in ("Prepare", "Expose", "Abort", "ResetError", "GetStatus"):
        assert command_permission(name) == "device.action"
    assert command_permission("CalibrateGain") == "device.calibrate"
    for name in ("SelectMode", "Connect", "Disconnect", "GetCommands", "Initialize"):
        assert command_permission(name) == "device.command"


def test_argument_checks():
    assert check_uid("1.2.840.10008.1.2") == "1.2.840.10008.1.2"
    for bad in ("../x", "1.2.03", "", None, "1..2", "a.b"):
        with pytest.raises(DiosError) as e:
            check_uid(bad)
        assert e.value.code.name == "INVALID_FIELD"
    assert check_file_name("scan 1.png") == "scan 1.png"
    for bad in ("../a.png", "a/b.png", "a\\b.png", "..", "", "x\x00.png"):
        with pytest.raises(DiosError) as e:
            check_file_name(bad)
        assert e.value.code.name == "BAD_FILE_NAME"


@pytest.mark.parametrize("size", ["Large", "Paediatric"])
def test_selection_applies_the_apr_technique(svc, size):
    study = new_study(svc, patient_size=size)
    image = images_of(study)[1]  # Skull LAT
    accepted = svc.task.select_image(image["sop_instance_id"])
    ep = svc.catalog.tech_params(image["view_id"], size, svc.config.work_station_id)["ep"]
    bus = svc.engine.bus
    assert float(check(bus.call(GENERATOR, "GetParam_KV")).result) == pytest.approx(ep["kV"])
    assert float(check(bus.call(GENERATOR, "GetParam_MAS")).result) == pytest.approx(
        accepted["mas"])
    assert accepted["kv"] == pytest.approx(ep["kV"])
    if ep["ExposureMode"] == 0:
        assert accepted["ma"] == pytest.approx(ep["mA"]) and accepted["ms"] == pytest.approx(ep["ms"])
    assert accepted["mas"] == pytest.approx(ep["mAs"], rel=0.05)
    assert svc.task.armed == image["sop_instance_id"]
    svc.task.disarm()
    assert svc.task.armed is None


def test_expose_without_selection_is_refused(svc):
    svc.task.disarm()
    with pytest.raises(DiosError) as e:
        svc.task.device_command({"deviceUri": GENERATOR, "reqName": "Expose", "reqParam": "",
                                 "reqTransaction": "t", "reqClientID": "c"})
    assert e.value.code.name == "WRONG_STATE"
    assert svc.engine.generator.status_string == "GENERATOR_STATUS_STANDBY"


def test_an_exposure_fills_exactly_the_selected_image(svc):
    study = new_study(svc)
    first, second, third = (im["sop_instance_id"] for im in images_of(study))
    before = svc.task.exposures
    image = svc.task.expose(second)
    assert image["sop_instance_id"] == second
    assert (image["expose_status"], image["storage_status"]) == ("Exposed", "Saved")
    assert svc.task.exposures == before + 1
    assert image_of(svc, first)["expose_status"] == "Unexposed"
    assert image_of(svc, third)["expose_status"] == "Unexposed"
    ctx = svc.study.image_context(second)
    rel = ctx["image"]["image_file_path"]
    assert rel == f"images/{study['study_instance_uid']}/{second}.dcm"  # relative to data_dir
    path = svc.task.image_path(second)
    assert path == (svc.config.data_dir / rel).resolve()
    ds = pydicom.dcmread(path)
    record = svc.engine.generator.last_record
    assert ds.SOPInstanceUID == second
    assert ds.StudyInstanceUID == study["study_instance_uid"]
    assert ds.SeriesInstanceUID == ctx["series"]["series_instance_uid"]
    assert ds.PatientID == "PET007" and str(ds.PatientName) == "Buddy"
    assert ds.Modality == "DX" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert float(ds.KVP) == pytest.approx(record.kv, abs=0.5)
    assert ds.pixel_array.shape == (1024, 1024) and ds.pixel_array.std() > 0
    assert not [p for p in (svc.task.images_dir / study["study_instance_uid"]).iterdir()
                if p.suffix != ".dcm"]  # no temporary files left behind
    proc = ctx["image"]
    assert proc["ei"] is not None and proc["ei"] > 0
    # the same image cannot be exposed again
    with pytest.raises(DiosError) as e:
        svc.task.expose(second)
    assert e.value.code.name == "INVALID_TRANSITION"
    assert svc.task.exposures == before + 1


def test_device_command_flow_like_the_console(svc):
    """Select, then Prepare and Expose as device commands; the frame lands by itself."""
    study = new_study(svc)
    sop = images_of(study)[0]["sop_instance_id"]
    sub = svc.engine.hub.subscribe("DIOS/TASK/Image")
    try:
        svc.task.select_image(sop, client="console")
        for uri in (DETECTOR, GENERATOR):
            svc.task.device_command({"deviceUri": uri, "reqName": "Prepare", "reqParam": "",
                                     "reqTransaction": "tx1", "reqClientID": "console"})
        wait_status(lambda: svc.engine.generator.status_string, "GENERATOR_STATUS_READY", 30, "ready")
        wait_status(lambda: svc.engine.detector.status_string, "DETECTOR_STATUS_READY", 30, "ready")
        svc.task.device_command({"deviceUri": GENERATOR, "reqName": "Expose", "reqParam": "",
                                 "reqTransaction": "tx1", "reqClientID": "console"})
        ev = sub.get(timeout=30)
        assert ev is not None and ev.name == "image.stored" and ev.value == sop
        assert ev.reqTransaction == "tx1"
    finally:
        sub.close()
    assert image_of(svc, sop)["expose_status"] == "Exposed"
    assert svc.task.armed is None


def test_a_frame_without_a_selected_image_is_stored_nowhere(svc):
    study = new_study(svc)
    svc.task.disarm()
    orphans = svc.task.orphan_frames
    bus = svc.engine.bus
    check(bus.call(DETECTOR, "Prepare"))
    check(bus.call(GENERATOR, "Prepare"))
    wait_status(lambda: svc.engine.generator.status_string, "GENERATOR_STATUS_READY", 30, "ready")
    wait_status(lambda: svc.engine.detector.status_string, "DETECTOR_STATUS_READY", 30, "ready")
    check(bus.call(GENERATOR, "Expose"))  # straight onto the bus, past the task service
    deadline = time.time() + 30
    while svc.task.orphan_frames == orphans and time.time() < deadline:
        time.sleep(0.01)
    assert svc.task.orphan_frames == orphans + 1
    assert all(im["expose_status"] == "Unexposed"
               for im in images_of(svc.study.get(study["study_id"])))


def test_a_lost_frame_leaves_the_image_unexposed_and_a_retry_lands_once(svc):
    study = new_study(svc)
    sop = images_of(study)[0]["sop_instance_id"]
    faults = svc.engine.faults["detector"]
    faults.inject("lost_frame", 1)
    try:
        with pytest.raises(DiosError) as e:
            svc.task.expose(sop, timeout=20)
        assert e.value.code.name in ("FRAME_LOST", "TIMEOUT", "DEVICE_FAULT")
    finally:
        faults.clear()
    assert image_of(svc, sop)["expose_status"] == "Unexposed"
    assert svc.task.armed is None
    bus = svc.engine.bus
    if svc.engine.detector.status_string == "DETECTOR_STATUS_ERROR":
        check(bus.call(DETECTOR, "ResetError"))
    if svc.engine.generator.status_string == "GENERATOR_STATUS_ERROR":
        check(bus.call(GENERATOR, "ResetError"))
    image = svc.task.expose(sop)
    assert image["expose_status"] == "Exposed"
    exposed = [im for im in images_of(svc.study.get(study["study_id"]))
               if im["expose_status"] == "Exposed"]
    assert [im["sop_instance_id"] for im in exposed] == [sop]


def test_an_open_interlock_refuses_the_exposure_and_changes_nothing(svc):
    study = new_study(svc)
    sop = images_of(study)[0]["sop_instance_id"]
    faults = svc.engine.faults["generator"]
    faults.inject("interlock_open")
    try:
        with pytest.raises(DiosError) as e:
            svc.task.expose(sop, timeout=20)
        assert e.value.code.name == "INTERLOCK_OPEN"
    finally:
        faults.clear()
    assert image_of(svc, sop)["expose_status"] == "Unexposed"
    bus = svc.engine.bus
    for uri in (GENERATOR, DETECTOR):
        dev = bus.device(uri)
        if dev.status_string.endswith("_ERROR"):
            check(bus.call(uri, "ResetError"))
        elif dev.status_string.endswith("_READY"):
            check(bus.call(uri, "Abort"))
    assert svc.task.expose(sop)["expose_status"] == "Exposed"


def test_upload_and_downloads(svc):
    study = new_study(svc)
    sop = images_of(study)[2]["sop_instance_id"]
    with pytest.raises(DiosError) as e:
        svc.task.upload_png(sop, b"not a png")
    assert e.value.code.name == "UNSUPPORTED_MEDIA"
    with pytest.raises(DiosError) as e:
        svc.task.upload_png(sop, png_bytes(), "../../x.png")
    assert e.value.code.name == "BAD_FILE_NAME"
    with pytest.raises(DiosError) as e:
        svc.task.image_file(sop)
    assert e.value.code.name == "INVALID_TRANSITION"
    reply = svc.task.upload_png(sop, png_bytes((40, 30)), "scan.png")
    content, name = svc.task.image_file(sop)
    assert name == reply["path"]
    ds = pydicom.dcmread(svc.task.image_path(sop))
    assert (ds.Rows, ds.Columns) == (40, 30)
    expected = (np.arange(40 * 30) % 251).reshape(40, 30)
    assert np.array_equal(ds.pixel_array.astype(int), expected)
    preview, pname = svc.task.preview(sop)
    assert preview[:8] == b"\x89PNG\r\n\x1a\n" and pname == f"{sop}.png"
    with pytest.raises(DiosError) as e:
        svc.task.upload_png(sop, png_bytes())
    assert e.value.code.name == "INVALID_TRANSITION"


def test_global_status_shape(svc):
    st = svc.task.global_status()
    assert list(st) == ["@type", "gen_status", "gen_ready", "fpd_status", "fpd_ready",
                        "insp_status", "insp_ready", "all_ready"]
    assert st["gen_status"].startswith("GENERATOR_STATUS_")
    assert st["fpd_status"].startswith("DETECTOR_STATUS_")
    assert st["all_ready"] == (st["gen_ready"] and st["fpd_ready"] and st["insp_ready"])


def test_expose_is_refused_while_the_panel_is_not_armed(svc):
    """Interlock: the generator does not fire for a selected image unless the detector is
    armed; nothing changes and the image can then be exposed."""
    study = new_study(svc)
    sop = images_of(study)[0]["sop_instance_id"]
    task = svc.task
    shots = svc.engine.room.shots
    task.select_image(sop)
    task.device_command({"deviceUri": GENERATOR, "reqName": "Prepare"})
    wait_status(lambda: svc.engine.generator.status_string, "GENERATOR_STATUS_READY", 30,
                "ready")
    with pytest.raises(DiosError) as e:
        task.device_command({"deviceUri": GENERATOR, "reqName": "Expose"})
    assert e.value.code.name == "WRONG_STATE" and "not armed" in e.value.description()
    assert svc.engine.room.shots == shots
    assert image_of(svc, sop)["expose_status"] == "Unexposed"
    assert task.armed == sop
    check(svc.engine.bus.call(GENERATOR, "Abort", "", "", "test"))
    assert task.expose(sop)["expose_status"] == "Exposed"


def _miss_and_expose(svc, sop: str) -> None:
    """Arm both devices for ``sop``; the next shot misses the panel; fire it."""
    task = svc.task
    svc.engine.faults["detector"].inject("beam_missed", count=1)
    task.select_image(sop)
    task.device_command({"deviceUri": DETECTOR, "reqName": "Prepare"})
    task.device_command({"deviceUri": GENERATOR, "reqName": "Prepare"})
    wait_status(lambda: svc.engine.detector.status_string, "DETECTOR_STATUS_READY", 30, "fpd")
    wait_status(lambda: svc.engine.generator.status_string, "GENERATOR_STATUS_READY", 30,
                "gen")
    task.device_command({"deviceUri": GENERATOR, "reqName": "Expose"})
    assert image_of(svc, sop)["expose_status"] == "Exposing"


def _wait_unexposed(svc, sop: str, seconds: float) -> float:
    t0 = time.monotonic()
    while image_of(svc, sop)["expose_status"] != "Unexposed" and time.monotonic() - t0 < seconds:
        time.sleep(0.02)
    assert image_of(svc, sop)["expose_status"] == "Unexposed"
    return time.monotonic() - t0


def test_x_rays_that_miss_the_panel_fail_when_its_window_closes(svc):
    """The shot misses the armed panel (another receptor in the beam): when the panel's
    window closes the exposure fails at once (TIMEOUT), long before the task's own
    timeout, and the next exposure works."""
    study = new_study(svc)
    sops = [im["sop_instance_id"] for im in images_of(study)]
    task = svc.task
    saved = task.exposure_timeout
    task.exposure_timeout = 60.0
    events = []
    sub = svc.engine.hub.subscribe("DIOS/*", handler=events.append)
    try:
        _miss_and_expose(svc, sops[0])
        # the window is 300 simulated s = 1.5 s at this clock
        assert _wait_unexposed(svc, sops[0], 20.0) < 20.0
        assert task.armed is None
        # through the one-call path the caller hears TIMEOUT as soon as the window closes
        svc.engine.faults["detector"].inject("beam_missed", count=1)
        t0 = time.monotonic()
        with pytest.raises(DiosError) as e:
            task.expose(sops[1])
        assert e.value.code.name == "TIMEOUT" and "no X-rays" in e.value.description()
        assert time.monotonic() - t0 < 30.0
    finally:
        task.exposure_timeout = saved
        sub.close()
    failed = [ev for ev in events if ev.name == "exposure.failed"]
    assert failed and "no X-rays" in failed[0].data["description"]
    assert image_of(svc, sops[1])["expose_status"] == "Unexposed"
    assert task.expose(sops[0])["expose_status"] == "Exposed"


def test_an_exposure_whose_frame_never_comes_is_given_up(svc):
    """No frame and no word from the panel within the task's exposure timeout: the image
    is Unexposed again, the panel stood down and the room free for the next exposure."""
    study = new_study(svc)
    sop = images_of(study)[0]["sop_instance_id"]
    task = svc.task
    det = svc.engine.detector
    saved = task.exposure_timeout, det.arm_window_s
    task.exposure_timeout, det.arm_window_s = 1.0, 1e6  # the panel would wait for ages
    try:
        _miss_and_expose(svc, sop)
        with pytest.raises(DiosError) as e:  # no second exposure while one is in flight
            task.device_command({"deviceUri": GENERATOR, "reqName": "Expose"})
        assert e.value.code.name in ("WRONG_STATE", "BUSY")
        _wait_unexposed(svc, sop, 10.0)
        wait_status(lambda: det.status_string, "DETECTOR_STATUS_STANDBY", 10, "stood down")
    finally:
        task.exposure_timeout, det.arm_window_s = saved
    assert task.armed is None
    assert task.expose(sop)["expose_status"] == "Exposed"
