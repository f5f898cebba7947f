"""The exposure workflow on the simulators: success, each fault, and recovery."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dios import codes
from dios.codes import DiosError
from dios.devices.backends import Technique
from dios.engine import build_simulated_engine
from dios.uri import DETECTOR, GENERATOR
from dios.workflow.exposure import ExposurePlan, check, run_exposure
from dios.workflow.waits import wait_status

VIEW = {"img_proc_id": "chest", "TargetEXI": 250, "ImageRotate": 0, "ImageHorizontalFlip": False}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = build_simulated_engine(clock_scale=200.0, panel="FLUORO_1024",
                                 calibration_dir=tmp_path_factory.mktemp("cal"), timeout=20)
    with eng:
        for cmd in ("CalibrateOffset", "CalibrateGain", "CalibrateDefect"):
            check(eng.bus.call(DETECTOR, cmd, "4"))
            wait_status(lambda: eng.detector.status_string, "DETECTOR_STATUS_STANDBY", 120, cmd)
        eng.set_scene("chest", 180.0)
        yield eng


def plan(kv=110.0, mas=4.0, timeout=20.0) -> ExposurePlan:
    return ExposurePlan(Technique(kv=kv, mas=mas, ma=400, ms=10, mode=1), VIEW, timeout=timeout)


def test_exposure_end_to_end(engine):
    out = run_exposure(engine, plan())
    assert out.frame.pixels.shape == (1024, 1024) and out.frame.pixels.dtype == np.uint16
    assert out.record.kv == pytest.approx(110, abs=3)
    assert out.technique.mas == pytest.approx(4.0, rel=0.1)
    assert out.result.window[1] > 0 and out.result.ei > 0
    assert out.result.preview.dtype == np.uint8
    assert engine.bus.global_status()["all_ready"]


def test_dose_follows_technique(engine):
    # doubling the mAs doubles the exposure index (IEC 62494-1 linearity), and the EI
    # matches the simulator's ground-truth air kerma over the anatomy
    low = run_exposure(engine, plan(mas=1.0))
    high = run_exposure(engine, plan(mas=2.0))
    assert high.result.ei == pytest.approx(2 * low.result.ei, rel=0.05)
    for out in (low, high):
        assert out.result.ei == pytest.approx(100 * out.frame.truth.anatomy_dose_ugy, rel=0.05)


def _recover_generator(engine):
    engine.faults["generator"].clear()
    check(engine.bus.call(GENERATOR, "ResetError"))
    assert engine.generator.status_string == "GENERATOR_STATUS_STANDBY"


def assert_stood_down(engine):
    """After a failed exposure neither device is left armed or preparing."""
    assert engine.generator.status_string in ("GENERATOR_STATUS_STANDBY", "GENERATOR_STATUS_ERROR")
    assert engine.detector.status_string in (
        "DETECTOR_STATUS_STANDBY", "DETECTOR_STATUS_ERROR", "DETECTOR_STATUS_DISCONNECTED")


def test_interlock_open_then_recovery(engine):
    engine.faults["generator"].inject("interlock_open")
    with pytest.raises(DiosError) as e:
        run_exposure(engine, plan())
    assert e.value.code is codes.INTERLOCK_OPEN
    assert_stood_down(engine)
    assert engine.detector.status_string == "DETECTOR_STATUS_STANDBY"
    # while the door is open, ResetError keeps the fault
    r = engine.bus.call(GENERATOR, "ResetError")
    assert r.code == codes.INTERLOCK_OPEN.hex
    assert engine.generator.status_string == "GENERATOR_STATUS_ERROR"
    _recover_generator(engine)
    assert run_exposure(engine, plan()).result.ei > 0


def test_tube_overheat_refused_then_cools(engine):
    engine.faults["generator"].inject("tube_overheat")
    with pytest.raises(DiosError) as e:
        run_exposure(engine, plan())
    assert e.value.code is codes.TUBE_OVERHEAT
    assert engine.generator.status_string == "GENERATOR_STATUS_STANDBY"  # not latched
    assert engine.detector.status_string == "DETECTOR_STATUS_STANDBY"
    engine.faults["generator"].clear()
    assert run_exposure(engine, plan()).result.ei > 0


def test_detector_disconnect_mid_acquisition_then_reconnect(engine):
    engine.faults["detector"].inject("detector_disconnect", count=1)
    with pytest.raises(DiosError) as e:
        run_exposure(engine, plan())
    assert e.value.code is codes.DETECTOR_DISCONNECTED
    assert engine.detector.status_string == "DETECTOR_STATUS_ERROR"
    assert not engine.bus.global_status()["all_ready"]
    # ResetError finds the panel gone: Disconnected; Connect brings it back
    engine.bus.call(DETECTOR, "ResetError")
    assert engine.detector.status_string == "DETECTOR_STATUS_DISCONNECTED"
    check(engine.bus.call(DETECTOR, "Connect"))
    check(engine.bus.call(DETECTOR, "SelectMode", "FLUORO_1024"))
    assert engine.bus.global_status()["all_ready"]
    assert run_exposure(engine, plan()).result.ei > 0


def test_lost_frame_then_reset(engine):
    engine.faults["detector"].inject("lost_frame", count=1)
    with pytest.raises(DiosError) as e:
        run_exposure(engine, plan(timeout=5.0))
    assert e.value.code is codes.FRAME_LOST
    assert engine.detector.status_string == "DETECTOR_STATUS_ERROR"
    check(engine.bus.call(DETECTOR, "ResetError"))
    assert engine.detector.status_string == "DETECTOR_STATUS_STANDBY"
    assert run_exposure(engine, plan()).result.ei > 0


def test_expose_without_prepare_is_refused_state_unchanged(engine):
    r = engine.bus.call(GENERATOR, "Expose", "", "tx-x", "t")
    assert r.code == codes.WRONG_STATE.hex and r.reqTransaction == "tx-x"
    assert engine.generator.status_string == "GENERATOR_STATUS_STANDBY"


@pytest.mark.parametrize("rotate,hflip", [(0, True), (90, False), (270, True)])
def test_dicom_shutter_describes_the_presented_image(engine, rotate, hflip):
    """The shutter written to DICOM matches the true field after rotation and flip."""
    import cv2

    from dios.workflow.exposure import shutter_attributes
    from processing.output import orient
    from simulators.frames import Collimation

    view = {**VIEW, "ImageRotate": rotate, "ImageHorizontalFlip": hflip}
    # an off-centre field, so a shutter left in raw coordinates would not fit
    engine.set_scene("chest", 180.0, Collimation("rect", center=(380, 430), width=520, height=640))
    try:
        out = run_exposure(engine, ExposurePlan(Technique(kv=110, mas=2.0, mode=1), view))
    finally:
        engine.set_scene("chest", 180.0)
    attrs = shutter_attributes(out, view)
    truth = orient(out.frame.truth.field_mask.astype(np.uint8), rotate, hflip).astype(bool)
    assert out.result.image.shape == truth.shape
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
    raw = out.result.collimation.shutter_attributes()  # not oriented: must not fit
    assert raw != attrs


def test_x_rays_that_miss_the_panel_fail_when_its_window_closes(engine):
    """Another receptor in the beam: the armed panel sees nothing; the exposure fails with
    TIMEOUT when the panel's window closes (not after the plan's long timeout), both
    devices are back in Standby and the next exposure works."""
    engine.faults["detector"].inject("beam_missed", count=1)
    t0 = time.monotonic()
    with pytest.raises(DiosError) as e:
        run_exposure(engine, plan(timeout=120.0))
    assert e.value.code is codes.TIMEOUT and "no X-rays" in e.value.description()
    assert time.monotonic() - t0 < 60.0  # the window is 300 simulated s = 1.5 s here
    assert engine.detector.status_string == "DETECTOR_STATUS_STANDBY"
    assert engine.generator.status_string == "GENERATOR_STATUS_STANDBY"
    assert run_exposure(engine, plan()).result.ei > 0
