"""The acquisition lifecycle on the simulators: success, each fault, recovery, and the
rules it is held to (one outcome per exposure, frames only into their own exposure)."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from dios import codes, topics
from dios.acquisition.lifecycle import TRANSITIONS, Phase, check
from dios.acquisition.waits import wait_status
from dios.codes import DiosError
from dios.config import load_config
from dios.engine import build_simulated_engine
from dios.messages import Request
from dios.serve import build_services
from dios.uri import DETECTOR, GENERATOR
from tests.console_helpers import study_request

CHEST = "View_DX_T_A_CH_PA_00"


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    data = tmp_path_factory.mktemp("acq")
    eng = build_simulated_engine(clock_scale=200.0, panel="FLUORO_1024",
                                 calibration_dir=data / "calibration", timeout=20)
    with eng:
        for cmd in ("CalibrateOffset", "CalibrateGain", "CalibrateDefect"):
            check(eng.bus.call(DETECTOR, cmd, "4"))
            wait_status(lambda: eng.detector.status_string, "DETECTOR_STATUS_STANDBY", 300, cmd)
        eng.set_scene("chest", 180.0)
        cfg = load_config(None, data_dir=data)
        cfg.institution, cfg.station_name = "Hôpital de Test", "ROOM2"
        services = build_services(cfg, eng)
        services.task.exposure_timeout = 60.0
        yield eng, services
        services.task.close()


def new_image(services, view: str = CHEST) -> str:
    st = services.study.register(study_request(views=[{"view_id": view, "procedure_id": ""}]),
                                 product="DROS")
    return st["series"][0]["images"][0]["sop_instance_id"]


def expose(room, kv=110.0, mas=4.0, timeout=60.0):
    eng, services = room
    sop = new_image(services)
    image = services.task.expose(sop, override={"kv": kv, "mas": mas, "mode": 1},
                                 timeout=timeout)
    return image, services.task.last_outcome


def test_transition_table_is_the_documented_one():
    assert TRANSITIONS[(Phase.Planned, "expose")] is Phase.InFlight
    assert (Phase.Storing, "fail") not in TRANSITIONS  # the store decides
    assert (Phase.Idle, "frame") not in TRANSITIONS     # no frame without an exposure


def test_exposure_end_to_end(room):
    eng, services = room
    image, out = expose(room)
    assert image["expose_status"] == "Exposed" and image["storage_status"] == "Saved"
    assert out.frame.pixels.shape == (1024, 1024) and out.frame.pixels.dtype == np.uint16
    assert out.record.kv == pytest.approx(110, abs=3)
    assert out.context.technique.mas == pytest.approx(4.0, rel=0.1)
    assert out.result.window[1] > 0 and out.result.ei > 0
    assert services.task.lifecycle.phase is Phase.Idle
    assert eng.bus.global_status()["all_ready"]
    import pydicom

    ds = pydicom.dcmread(services.task.image_path(image["sop_instance_id"]))
    assert (ds.InstitutionName, ds.StationName) == ("Hôpital de Test", "ROOM2")
    assert ds.KVP == pytest.approx(out.record.kv)


def test_dose_follows_technique(room):
    # doubling the mAs doubles the exposure index (IEC 62494-1 linearity), and the EI
    # matches the simulator's ground-truth air kerma over the anatomy
    # (the chest view's table SID is 115 cm: below saturation of the 14-bit panel here)
    _, low = expose(room, mas=0.5)
    _, high = expose(room, mas=1.0)
    assert high.result.ei == pytest.approx(2 * low.result.ei, rel=0.05)
    for out in (low, high):
        assert out.result.ei == pytest.approx(100 * out.frame.truth.anatomy_dose_ugy, rel=0.05)


def assert_failed_cleanly(room, sop_before: int):
    eng, services = room
    assert services.task.lifecycle.phase is Phase.Idle
    assert eng.generator.status_string in ("GENERATOR_STATUS_STANDBY", "GENERATOR_STATUS_ERROR")
    assert eng.detector.status_string in (
        "DETECTOR_STATUS_STANDBY", "DETECTOR_STATUS_ERROR", "DETECTOR_STATUS_DISCONNECTED")
    assert services.task.exposures == sop_before  # nothing stored


def _failing(room, exc_code, **kw):
    eng, services = room
    before = services.task.exposures
    sop = new_image(services)
    with pytest.raises(DiosError) as e:
        services.task.expose(sop, override={"kv": 110.0, "mas": 4.0, "mode": 1}, **kw)
    assert e.value.code is exc_code, e.value
    assert_failed_cleanly(room, before)
    assert services.study.image(sop)["expose_status"] == "Unexposed"  # can be retried
    return sop


def test_interlock_open_then_recovery(room):
    eng, _ = room
    eng.faults["generator"].inject("interlock_open")
    _failing(room, codes.INTERLOCK_OPEN)
    r = eng.bus.call(GENERATOR, "ResetError")
    assert r.code == codes.INTERLOCK_OPEN.hex  # the door is still open
    eng.faults["generator"].clear()
    check(eng.bus.call(GENERATOR, "ResetError"))
    assert expose(room)[1].result.ei > 0


def test_tube_overheat_refused_then_cools(room):
    eng, _ = room
    eng.faults["generator"].inject("tube_overheat")
    _failing(room, codes.TUBE_OVERHEAT)
    assert eng.generator.status_string == "GENERATOR_STATUS_STANDBY"  # not latched
    eng.faults["generator"].clear()
    assert expose(room)[1].result.ei > 0


def test_detector_disconnect_mid_acquisition_then_reconnect(room):
    eng, _ = room
    eng.faults["detector"].inject("detector_disconnect", count=1)
    _failing(room, codes.DETECTOR_DISCONNECTED)
    eng.bus.call(DETECTOR, "ResetError")
    assert eng.detector.status_string == "DETECTOR_STATUS_DISCONNECTED"
    check(eng.bus.call(DETECTOR, "Connect"))
    check(eng.bus.call(DETECTOR, "SelectMode", "FLUORO_1024"))
    assert expose(room)[1].result.ei > 0


def test_lost_frame_then_reset(room):
    eng, _ = room
    eng.faults["detector"].inject("lost_frame", count=1)
    _failing(room, codes.FRAME_LOST)
    check(eng.bus.call(DETECTOR, "ResetError"))
    assert expose(room)[1].result.ei > 0


def test_x_rays_that_miss_the_panel_fail_when_its_window_closes(room):
    """Another receptor in the beam: the exposure fails with TIMEOUT when the panel's
    window closes (not after the long exposure timeout); the next exposure works."""
    eng, _ = room
    eng.faults["detector"].inject("beam_missed", count=1)
    t0 = time.monotonic()
    sop = _failing(room, codes.TIMEOUT, timeout=240.0)
    assert time.monotonic() - t0 < 200.0  # the window is 300 simulated s = 1.5 s here
    assert room[1].study.image(sop)["expose_status"] == "Unexposed"
    assert expose(room)[1].result.ei > 0


def test_raw_expose_is_refused_without_plan_or_armed_panel(room):
    eng, services = room
    r = eng.bus.call(GENERATOR, "Expose", "", "tx-x", "t")  # not prepared
    assert r.code == codes.WRONG_STATE.hex and r.reqTransaction == "tx-x"
    with pytest.raises(DiosError) as e:  # through the task service: no image planned
        services.task.device_command({"deviceUri": GENERATOR, "reqName": "Expose"})
    assert e.value.code is codes.WRONG_STATE
    sop = new_image(services)
    services.task.select_image(sop)
    check(eng.bus.call(GENERATOR, "Prepare"))
    wait_status(lambda: eng.generator.status_string, "GENERATOR_STATUS_READY", 60, "ready")
    with pytest.raises(DiosError) as e:  # planned, generator ready, panel not armed
        services.task.device_command({"deviceUri": GENERATOR, "reqName": "Expose"})
    assert e.value.code is codes.WRONG_STATE and "not armed" in e.value.description()
    # and below the task service the X-ray enable line refuses it as well
    r = eng.bus.call(GENERATOR, "Expose", "", "tx-y", "t")
    assert r.code == codes.WRONG_STATE.hex and "X-ray enable" in r.description
    assert eng.generator.status_string == "GENERATOR_STATUS_READY"
    assert services.study.image(sop)["expose_status"] == "Unexposed"
    check(eng.bus.call(GENERATOR, "Abort"))
    services.task.deselect_image()


@contextlib.contextmanager
def wide_arm_window(eng):
    """The panel stays armed for 5 minutes of wall time while a test drives the devices
    step by step (the default window is 300 simulated s, 1.5 s of wall time at x200: a
    busy machine may take longer to get the generator ready, and the closing window would
    stand it down)."""
    window = eng.detector.arm_window_s
    eng.detector.arm_window_s = 300.0 * eng.clock.scale
    try:
        yield
    finally:
        eng.detector.arm_window_s = window


def test_detector_abort_during_the_beam_stops_it_first(room):
    """A detector Abort that comes while the beam is on stops the beam before the panel
    stands down: the line is never off while X-rays are on."""
    eng, services = room
    line = eng.xray_enable
    sop = new_image(services)
    services.task.select_image(sop)
    check(eng.bus.call(GENERATOR, "SetParam_MS", "2000"))  # a long beam: 10 ms real at x200
    with wide_arm_window(eng):
        check(eng.bus.call(DETECTOR, "Prepare"))
        check(eng.bus.call(GENERATOR, "Prepare"))
        wait_status(lambda: eng.generator.status_string, "GENERATOR_STATUS_READY", 60, "ready")
        sub = eng.hub.subscribe(topics.EXPOSURE_URI)
        terminated = line.terminated
        services.task.device_command({"deviceUri": GENERATOR, "reqName": "Expose",
                                      "reqTransaction": "race"})
        check(eng.bus.call(DETECTOR, "Abort"))
    assert not line.beam
    deadline = time.monotonic() + 60
    names = []
    while time.monotonic() < deadline and topics.EXPOSURE_FAILED not in names \
            and topics.IMAGE_STORED not in names:
        ev = sub.get(timeout=1.0)
        if ev is not None:
            names.append(ev.name)
    sub.close()
    image = services.study.image(sop)
    # either the beam was stopped (failed, image back to Unexposed) or it had already
    # ended on the armed panel (the frame then lands); never both, never neither
    if line.terminated > terminated:
        assert topics.EXPOSURE_FAILED in names and image["expose_status"] == "Unexposed"
    wait_status(lambda: services.task.lifecycle.phase.value, "Idle", 60, "idle")
    assert services.study.image(sop)["expose_status"] in ("Unexposed", "Exposed")


def test_a_late_frame_is_kept_unassigned_never_attached(room):
    """A frame with no exposure in flight (a trigger from a service tool) lands in no
    image: it is kept unassigned and announced."""
    eng, services = room
    unassigned = services.task.orphan_frames
    sub = eng.hub.subscribe(topics.EXPOSURE_URI)
    with wide_arm_window(eng):
        check(eng.bus.call(DETECTOR, "Prepare"))
        eng.xray_enable.panel_armed()
        # a beam fired directly at the device layer, bypassing the lifecycle
        check(eng.bus.call(GENERATOR, "Prepare"))
        wait_status(lambda: eng.generator.status_string, "GENERATOR_STATUS_READY", 60, "ready")
        check(eng.bus.request(Request(GENERATOR, "Expose", "", "svc", "service-tool")))
        deadline = time.monotonic() + 60
        while services.task.orphan_frames == unassigned and time.monotonic() < deadline:
            time.sleep(0.01)
    assert services.task.orphan_frames == unassigned + 1
    ev = sub.get(timeout=30)
    while ev is not None and ev.name != topics.FRAME_UNASSIGNED:
        ev = sub.get(timeout=30)
    sub.close()
    assert ev is not None and ev.data["path"].startswith("unassigned/")
    assert (services.task.data_dir / ev.data["path"]).is_file()


@pytest.mark.parametrize("rotate,hflip", [(0, True), (90, False), (270, True)])
def test_dicom_shutter_describes_the_presented_image(room, rotate, hflip):
    """The shutter written to DICOM matches the true field after rotation and flip."""
    import dataclasses

    import cv2

    from dios.acquisition.sink import shutter_attributes
    from processing.output import orient
    from simulators.frames import Collimation

    eng, services = room
    eng.set_scene("chest", 180.0, Collimation("rect", center=(380, 430), width=520, height=640))
    try:
        _, out = expose(room, mas=2.0)
    finally:
        eng.set_scene("chest", 180.0)
    ctx = dataclasses.replace(out.context, view=dataclasses.replace(
        out.context.view, rotate=rotate, hflip=hflip))
    res = services.task.lifecycle.sink.pipeline("chest").run(
        out.frame.pixels, eng.detector.calibration, counts_per_ugy=out.frame.mode.counts_per_ugy,
        rotate=rotate, hflip=hflip)
    attrs = shutter_attributes(res, out.frame.pixels.shape, ctx)
    truth = orient(out.frame.truth.field_mask.astype(np.uint8), rotate, hflip).astype(bool)
    assert res.image.shape == truth.shape
    mask = np.zeros(truth.shape, np.uint8)
    if attrs["ShutterShape"] == "RECTANGULAR":
        mask[attrs["ShutterUpperHorizontalEdge"] - 1:attrs["ShutterLowerHorizontalEdge"],
             attrs["ShutterLeftVerticalEdge"] - 1:attrs["ShutterRightVerticalEdge"]] = 1
    else:
        v = np.array(attrs["VerticesOfThePolygonalShutter"]).reshape(-1, 2)[:, ::-1] - 1
        cv2.fillPoly(mask, [v.astype(np.int32)], 1)

    def iou(a, b):
        return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()

    assert iou(mask, truth) > 0.95
    assert res.collimation.shutter_attributes() != attrs  # raw coordinates would not fit
