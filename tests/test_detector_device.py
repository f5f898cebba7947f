"""The detector device on the bus, driven against the detector simulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from dios.bus import DeviceBus
from dios.clock import SimClock
from dios.codes import (
    BAD_PARAMETER,
    COMM_LOST,
    DETECTOR_DISCONNECTED,
    FRAME_LOST,
    NOT_CALIBRATED,
    OUT_OF_RANGE,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_COMMAND,
    WRONG_STATE,
)
from dios.devices.backends import DetectorBackend, Frame
from dios.devices.detector import TRANSITIONS, Detector, DetectorState
from dios.events import Subscription
from dios.messages import Event, EventKind, Reply
from dios.uri import DETECTOR
from simulators.detector import SimDetectorBackend
from simulators.faults import FaultInjector
from simulators.frames import Collimation, FrameTruth
from simulators.room import Scene, XrayRoom, XrayShot

S = DetectorState
#: Wall seconds a stage is held open (a long integration window or readout) while a test
#: looks at it: far longer than any deadline here, so that a busy machine cannot let the
#: stage end before the test is done with it; the test ends it (Abort, a fault).
HOLD_WALL_S = 600.0
#: Deadline for what takes milliseconds when idle.
DEADLINE_S = 60.0
COMMANDS = ("Connect", "Disconnect", "SelectMode", "Prepare", "Acquire", "Abort", "ResetError",
            "CalibrateOffset", "CalibrateGain", "CalibrateDefect")
#: What the specification allows in each state (the rest must be WRONG_STATE).
ALLOWED = {
    S.Disconnected: {"Connect"},
    S.Standby: {"Disconnect", "SelectMode", "Prepare", "CalibrateOffset", "CalibrateGain",
                "CalibrateDefect"},
    S.Ready: {"Disconnect", "Acquire", "Abort"},
    S.Acquiring: {"Abort"},
    S.Readout: {"Abort"},
    S.Calibrating: {"Abort"},
    S.Error: {"Disconnect", "ResetError"},
}


@dataclass
class Rig:
    bus: DeviceBus
    det: Detector
    backend: SimDetectorBackend
    room: XrayRoom
    clock: SimClock
    faults: FaultInjector
    events: Subscription
    seen: list[Event] = field(default_factory=list)

    def call(self, name: str, param: str = "", transaction: str = "") -> Reply:
        return self.bus.call(DETECTOR, name, param, transaction=transaction, timeout=DEADLINE_S)

    def ok(self, name: str, param: str = "") -> Reply:
        r = self.call(name, param)
        assert r.code == SUCCESS.hex, f"{name}({param!r}): {r.code} {r.description}"
        return r

    def wait_state(self, state: DetectorState, timeout: float = DEADLINE_S) -> None:
        end = time.monotonic() + timeout
        while self.det.state is not state:
            assert time.monotonic() < end, f"state {self.det.state} instead of {state}"
            time.sleep(0.002)

    def wait_event(self, pred: Callable[[Event], bool], timeout: float = DEADLINE_S) -> Event:
        for e in self.seen:
            if pred(e):
                return e
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0, "event not seen"
            e = self.events.get(left)
            if e is None:
                continue
            self.seen.append(e)
            if pred(e):
                return e

    def drain(self) -> list[Event]:
        while (e := self.events.get(0.05)) is not None:
            self.seen.append(e)
        return self.seen

    def shoot(self, kv: float = 70, mas: float = 2.0) -> None:
        self.room.emit(XrayShot(kv, mas * 10, 100, mas, 1, self.clock.now()))

    def states(self, timeout: float = DEADLINE_S) -> list[str]:
        """The states announced so far, once the device's current state has been (a state
        is set just before its STATE event is published, so the event may still come)."""
        end = time.monotonic() + timeout
        while True:
            seen = [e.value.removeprefix("DETECTOR_STATUS_") for e in self.drain()
                    if e.kind == EventKind.STATE]
            current = self.det.state.value
            if (seen[-1] if seen else S.Disconnected.value) == current:
                return seen
            assert time.monotonic() < end, f"no STATE event for {current}; saw {seen}"

    def hold(self) -> float:
        """Simulated seconds that last ``HOLD_WALL_S`` of wall time on this rig's clock."""
        return HOLD_WALL_S * self.clock.scale

    def expose(self) -> Frame:
        self.ok("Prepare")
        self.shoot()
        e = self.wait_event(lambda e: e.kind == EventKind.IMAGE and e not in self._used)
        self._used.append(e)
        return e.data["frame"]

    _used: list[Event] = field(default_factory=list)


def make_rig(tmp: Path | None = None, scale: float = 200.0, modes: tuple[str, ...] = (
        "FLUORO_1024", "CSI_3543"), arm_window_s: float = 300.0, connect: bool = True) -> Rig:
    clock = SimClock(scale)
    room = XrayRoom(Scene(sid_cm=115, collimation=Collimation.rect(511.5, 511.5, 700, 800, 8),
                          phantom="hand"))
    faults = FaultInjector()
    backend = SimDetectorBackend(list(modes), room, clock, seed=3, faults=faults)
    bus = DeviceBus(timeout=20)
    det = Detector(DETECTOR, bus.hub, backend, clock, calibration_dir=tmp,
                   arm_window_s=arm_window_s)
    bus.register(det)
    bus.start()
    rig = Rig(bus, det, backend, room, clock, faults, bus.hub.subscribe("DIOS/DEVICE/*"))
    if connect:
        rig.ok("Connect")
    return rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(tmp_path)
    yield r
    r.bus.stop()


def assert_refused(rig: Rig, state: DetectorState) -> None:
    """Every command not allowed in ``state`` is WRONG_STATE and leaves it unchanged."""
    assert rig.det.state is state
    for name in COMMANDS:
        if name in ALLOWED[state]:
            continue
        r = rig.call(name, "FLUORO_1024" if name == "SelectMode" else "")
        assert r.code == WRONG_STATE.hex, f"{name} in {state}: {r.code}"
        assert rig.det.state is state, f"{name} moved {state} to {rig.det.state}"


# --- the table itself ----------------------------------------------------------------------------


def test_transition_table_covers_the_specified_states() -> None:
    states = {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values())
    assert states == set(DetectorState)
    assert {s.value for s in DetectorState} == {"DISCONNECTED", "STANDBY", "READY", "ACQUIRING",
                                                "READOUT", "CALIBRATING", "ERROR"}
    assert isinstance(SimDetectorBackend(room=XrayRoom()), DetectorBackend)


def test_connect_disconnect_and_status(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, connect=False)
    try:
        r = rig.ok("GetStatus")
        assert r.result == "DETECTOR_STATUS_DISCONNECTED" and not rig.det.ready
        assert_refused(rig, S.Disconnected)
        r = rig.ok("Connect", "")
        assert r.result == "DETECTOR_STATUS_STANDBY" and rig.det.ready
        r = rig.ok("GetStatus")
        assert r.data["mode"] == "FLUORO_1024" and r.data["connected"] is True
        assert r.data["calibration"] == {"offset": False, "gain": False, "defect": False,
                                         "complete": False}
        assert rig.bus.global_status()["fpd_status"] == "DETECTOR_STATUS_STANDBY"
        assert rig.bus.global_status()["fpd_ready"] is True
        rig.ok("Disconnect")
        assert rig.det.state is S.Disconnected and not rig.backend.connected
        assert rig.states() == ["STANDBY", "DISCONNECTED"]
        state_events = [e for e in rig.seen if e.kind == EventKind.STATE]
        assert [e.data["trigger"] for e in state_events] == ["connect", "disconnect"]
    finally:
        rig.bus.stop()


def test_modes_and_select_mode(rig: Rig) -> None:
    r = rig.ok("GetModes")
    assert r.result == "FLUORO_1024,CSI_3543"
    assert r.data["modes"][1]["rows"] == 2800 and r.data["modes"][1]["cols"] == 2304
    r = rig.ok("SelectMode", "csi_3543")
    assert r.result == "CSI_3543" and rig.det.mode.name == "CSI_3543"
    assert rig.backend.mode.name == "CSI_3543"
    ev = rig.wait_event(lambda e: e.kind == EventKind.PARAM and e.name == "Mode")
    assert ev.value == "CSI_3543"
    assert rig.det.state is S.Standby
    for bad in ("NOPE", "", "  "):
        r = rig.call("SelectMode", bad)
        assert r.code == BAD_PARAMETER.hex
        assert rig.det.mode.name == "CSI_3543" and rig.det.state is S.Standby


def test_prepare_expose_frame_walks_ready_acquiring_readout_standby(rig: Rig) -> None:
    r = rig.call("Prepare", "", transaction="tx-prep")
    assert r.code == SUCCESS.hex and r.result == "DETECTOR_STATUS_READY"
    assert rig.det.state is S.Ready and rig.det.ready
    assert rig.bus.global_status()["fpd_ready"] is True
    assert_refused(rig, S.Ready)
    rig.shoot(kv=66, mas=2.5)
    img = rig.wait_event(lambda e: e.kind == EventKind.IMAGE)
    assert rig.det.state is S.Standby
    assert rig.states() == ["STANDBY", "READY", "ACQUIRING", "READOUT", "STANDBY"]
    frame = img.data["frame"]
    assert isinstance(frame, Frame) and frame.kind == "exposure"
    assert frame.pixels.dtype == np.uint16 and frame.pixels.shape == (1024, 1024)
    assert frame.meta["kv"] == 66 and frame.meta["mas"] == 2.5 and frame.meta["dose_ugy"] > 0
    assert isinstance(frame.truth, FrameTruth)
    assert frame.truth.collimation == rig.room.scene.collimation
    assert img.reqTransaction == "tx-prep", "the image is attributed to the Prepare request"
    # the IMAGE is published after the device is back in Standby
    kinds = [(e.kind, e.value) for e in rig.seen if e.kind in (EventKind.STATE, EventKind.IMAGE)]
    assert kinds[-1][0] == EventKind.IMAGE and kinds[-2][1] == "DETECTOR_STATUS_STANDBY"
    assert rig.det.frames_acquired == 1


def test_default_collimation_when_the_scene_has_none(rig: Rig) -> None:
    rig.room.scene = Scene(sid_cm=100, collimation=None, phantom="chest")
    frame = rig.expose()
    assert frame.truth.collimation == Collimation.default((1024, 1024))
    assert frame.meta["phantom"] == "chest" and frame.meta["sid_cm"] == 100


def test_acquire_is_a_software_trigger_giving_a_dark_frame(rig: Rig) -> None:
    rig.ok("Prepare")
    r = rig.ok("Acquire")
    img = rig.wait_event(lambda e: e.kind == EventKind.IMAGE)
    frame = img.data["frame"]
    assert frame.kind == "dark" and frame.meta["dose_ugy"] == 0.0
    model = rig.backend.model()
    good = ~model.defect_mask
    assert abs(float((frame.pixels - model.offset)[good].mean())) < 1.0
    assert rig.states()[-4:] == ["READY", "ACQUIRING", "READOUT", "STANDBY"]
    assert r.code == SUCCESS.hex


def test_unarmed_shots_are_ignored(rig: Rig) -> None:
    rig.shoot()
    assert rig.backend.shots_ignored == 1
    rig.drain()
    assert not any(e.kind == EventKind.IMAGE for e in rig.seen)
    assert rig.det.state is S.Standby


def test_arm_window_expires_back_to_standby(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, arm_window_s=5.0)
    try:
        rig.ok("Prepare")
        ev = rig.wait_event(lambda e: e.kind == EventKind.PARAM and e.name == "Window")
        assert ev.value == "expired"
        rig.wait_state(S.Standby)
        assert rig.states()[-2:] == ["READY", "STANDBY"]
        assert not any(e.kind == EventKind.FAULT for e in rig.seen)
        rig.expose()  # and the panel works afterwards
    finally:
        rig.bus.stop()


def test_abort_from_ready_acquiring_and_readout(rig: Rig) -> None:
    rig.ok("Prepare")
    rig.ok("Abort")
    assert rig.det.state is S.Standby and not rig.backend.armed
    rig.shoot()
    assert rig.backend.shots_ignored == 1
    # hold Acquiring with a long integration window
    rig.backend.integration_s = rig.hold()
    rig.ok("Prepare")
    rig.shoot()
    rig.wait_state(S.Acquiring)
    assert rig.bus.global_status()["fpd_ready"] is False
    assert_refused(rig, S.Acquiring)
    rig.ok("Abort")
    assert rig.det.state is S.Standby
    rig.backend.integration_s = 0.05
    # hold Readout: the 35x43 panel reads out for 0.8 s; at a slow clock that is long
    slow = make_rig(None, scale=0.8 / HOLD_WALL_S, modes=("CSI_3543",))
    try:
        slow.backend.integration_s = 0.0
        slow.ok("Prepare")
        slow.shoot()
        slow.wait_state(S.Readout)
        assert_refused(slow, S.Readout)
        slow.ok("Abort")
        assert slow.det.state is S.Standby
        slow.drain()
        assert not any(e.kind == EventKind.IMAGE for e in slow.seen)
        assert slow.states()[-4:] == ["READY", "ACQUIRING", "READOUT", "STANDBY"]
    finally:
        slow.bus.stop()
    rig.drain()
    assert not any(e.kind in (EventKind.IMAGE, EventKind.FAULT) for e in rig.seen)
    rig.expose()


def test_wrong_state_commands_are_refused_in_standby(rig: Rig) -> None:
    assert_refused(rig, S.Standby)
    r = rig.call("Fly")
    assert r.code == UNKNOWN_COMMAND.hex and rig.det.state is S.Standby


# --- calibration -----------------------------------------------------------------------------------


def progress_of(rig: Rig, name: str) -> list[int]:
    rig.wait_event(lambda e: e.kind == EventKind.PROGRESS and e.name == name and e.value == "100")
    return [int(e.value) for e in rig.seen if e.kind == EventKind.PROGRESS and e.name == name]


def test_calibration_offset_gain_defect_with_progress(rig: Rig, tmp_path: Path) -> None:
    assert rig.det.calibration is None
    r = rig.call("CalibrateGain", "3")
    assert r.code == NOT_CALIBRATED.hex and rig.det.state is S.Standby
    r = rig.call("CalibrateOffset", "6", transaction="cal-1")
    assert r.code == SUCCESS.hex and r.result == "6"
    assert rig.det.state in (S.Calibrating, S.Standby)
    steps = progress_of(rig, "CalibrateOffset")
    assert steps[0] == 0 and steps[-1] == 100 and steps == sorted(steps) and len(steps) == 8
    ev = [e for e in rig.seen if e.kind == EventKind.PROGRESS and e.name == "CalibrateOffset"]
    assert all(e.reqTransaction == "cal-1" for e in ev)
    rig.wait_state(S.Standby)
    assert rig.states() == ["STANDBY", "CALIBRATING", "STANDBY"]
    assert rig.det.calibration is None  # offset only: not usable yet
    model = rig.backend.model()
    good = ~model.defect_mask
    offset = rig.det._maps["FLUORO_1024"]["offset"]
    assert np.abs(offset - model.offset)[good].mean() < 2.0

    rig.ok("CalibrateGain", "4")
    assert progress_of(rig, "CalibrateGain")[-1] == 100
    rig.wait_state(S.Standby)
    maps = rig.det.calibration
    assert maps is not None and not maps.defect.any()
    # corrected = (raw - offset) * gain: gain is the inverse of panel gain times heel
    inv = 1.0 / (model.gain * model.heel)
    assert np.corrcoef(maps.gain[good], inv[good])[0, 1] > 0.95
    assert not (tmp_path / "FLUORO_1024.npz").exists()  # saved once complete

    rig.ok("CalibrateDefect")
    steps = progress_of(rig, "CalibrateDefect")
    assert len(steps) == 2 * 4 + 2
    rig.wait_state(S.Standby)
    maps = rig.det.calibration
    truth = model.defect_mask
    assert (maps.defect & truth).sum() / truth.sum() > 0.98
    assert (maps.defect & ~truth).sum() < 0.001 * truth.size
    assert rig.ok("GetStatus").data["calibration"]["complete"] is True
    assert (tmp_path / "FLUORO_1024.npz").exists()
    # another detector on the same directory loads them; the other mode has none
    other = make_rig(tmp_path)
    try:
        assert np.array_equal(other.det.calibration.defect, maps.defect)
        other.ok("SelectMode", "CSI_3543")
        assert other.det.calibration is None
    finally:
        other.bus.stop()


@pytest.mark.parametrize("param,code", [("abc", BAD_PARAMETER), ("1.5", BAD_PARAMETER),
                                        ("0", OUT_OF_RANGE), ("65", OUT_OF_RANGE),
                                        ("-3", OUT_OF_RANGE)])
def test_calibration_bad_frame_counts(rig: Rig, param: str, code) -> None:
    for name in ("CalibrateOffset", "CalibrateDefect"):
        r = rig.call(name, param)
        assert r.code == code.hex, (name, param, r.code)
        assert rig.det.state is S.Standby and not rig.det.job_running


def test_calibrating_refuses_commands_and_abort_keeps_old_maps(rig: Rig) -> None:
    rig.backend.integration_s = rig.hold()  # the first calibration frame lasts until the Abort
    rig.ok("CalibrateOffset", "4")
    rig.wait_state(S.Calibrating)
    assert rig.bus.global_status()["fpd_ready"] is False
    assert_refused(rig, S.Calibrating)
    rig.ok("Abort")
    assert rig.det.state is S.Standby
    assert "offset" not in rig.det._maps.get("FLUORO_1024", {})
    assert rig.states() == ["STANDBY", "CALIBRATING", "STANDBY"]


# --- faults and recovery --------------------------------------------------------------------------


def fault_event(rig: Rig, code) -> Event:
    ev = rig.wait_event(lambda e: e.kind == EventKind.FAULT)
    assert ev.data["code"] == code.hex and ev.value == code.hex
    assert ev.data["description"]
    return ev


def test_detector_disconnect_mid_acquisition_and_reconnect(rig: Rig) -> None:
    rig.backend.integration_s = rig.hold()
    rig.ok("Prepare")
    rig.shoot()
    rig.wait_state(S.Acquiring)
    rig.faults.inject("detector_disconnect")  # persistent: the cable is out
    fault_event(rig, DETECTOR_DISCONNECTED)
    rig.wait_state(S.Error)
    assert not rig.backend.connected and not rig.det.ready
    st = rig.ok("GetStatus")
    assert st.result == "DETECTOR_STATUS_ERROR" and st.data["fault"] == DETECTOR_DISCONNECTED.hex
    assert_refused(rig, S.Error)
    rig.ok("ResetError")
    assert rig.det.state is S.Disconnected
    r = rig.call("Connect")
    assert r.code == DETECTOR_DISCONNECTED.hex and rig.det.state is S.Disconnected
    rig.faults.clear("detector_disconnect")
    rig.backend.integration_s = 0.05
    rig.ok("Connect")
    assert rig.det.state is S.Standby
    assert rig.expose().kind == "exposure"
    assert rig.states()[-7:] == ["ERROR", "DISCONNECTED", "STANDBY", "READY", "ACQUIRING",
                                 "READOUT", "STANDBY"]


def test_disconnect_while_ready(rig: Rig) -> None:
    rig.ok("Prepare")
    rig.faults.inject("detector_disconnect", count=1)
    fault_event(rig, DETECTOR_DISCONNECTED)
    rig.wait_state(S.Error)
    rig.ok("Disconnect")  # the operator may also just disconnect from Error
    assert rig.det.state is S.Disconnected
    rig.ok("Connect")
    rig.expose()


def test_lost_frame_then_reset(rig: Rig) -> None:
    rig.faults.inject("lost_frame", count=1)
    rig.ok("Prepare")
    rig.shoot()
    fault_event(rig, FRAME_LOST)
    rig.wait_state(S.Error)
    assert rig.states()[-3:] == ["ACQUIRING", "READOUT", "ERROR"]
    assert not any(e.kind == EventKind.IMAGE for e in rig.seen)
    assert rig.backend.connected
    rig.ok("ResetError")
    assert rig.det.state is S.Standby
    assert rig.expose().kind == "exposure"


def test_comm_timeout_on_command_latches_error_until_cleared(rig: Rig) -> None:
    rig.faults.inject("comm_timeout")  # persistent
    r = rig.call("Prepare")
    assert r.code == TIMEOUT.hex
    fault_event(rig, TIMEOUT)
    assert rig.det.state is S.Error
    r = rig.call("ResetError")
    assert r.code == TIMEOUT.hex and rig.det.state is S.Error
    rig.faults.clear()
    rig.ok("ResetError")
    assert rig.det.state is S.Standby
    rig.expose()


def test_comm_timeout_during_acquisition_and_calibration(rig: Rig) -> None:
    rig.ok("Prepare")
    rig.faults.inject("comm_timeout", count=1)
    fault_event(rig, COMM_LOST)
    rig.wait_state(S.Error)
    rig.ok("ResetError")
    assert rig.det.state is S.Standby
    rig.seen.clear()
    rig.backend.integration_s = rig.hold()
    rig.ok("CalibrateOffset", "4")
    rig.wait_state(S.Calibrating)
    rig.faults.inject("comm_timeout", count=1)
    rig.backend.integration_s = 0.05
    ev = rig.wait_event(lambda e: e.kind == EventKind.FAULT)
    assert ev.data["code"] in (TIMEOUT.hex, COMM_LOST.hex)
    rig.wait_state(S.Error)
    assert "offset" not in rig.det._maps.get("FLUORO_1024", {})
    rig.ok("ResetError")
    rig.ok("CalibrateOffset", "2")
    rig.wait_state(S.Standby)
    assert "offset" in rig.det._maps["FLUORO_1024"]


# --- the panel model is built when first needed, not while connecting -------------------------------


def test_connect_and_select_mode_build_no_panel_model(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    try:
        assert rig.backend._models == {}
        rig.ok("SelectMode", "CSI_3543")
        rig.ok("SelectMode", "FLUORO_1024")
        assert rig.backend._models == {}  # nothing synthesised for modes never used
        frame = rig.expose()
        assert set(rig.backend._models) == {"FLUORO_1024"}
        assert frame.mode.name == "FLUORO_1024" and frame.truth is not None
    finally:
        rig.bus.stop()


def test_lazy_model_gives_the_same_frames_as_one_built_up_front(tmp_path: Path) -> None:
    frames = []
    for eager in (True, False):
        rig = make_rig(tmp_path / str(eager))
        try:
            if eager:
                rig.backend.model()
            frames.append(rig.expose().pixels)
        finally:
            rig.bus.stop()
    np.testing.assert_array_equal(frames[0], frames[1])


# --- state changes only after the backend succeeded ---------------------------------------------------


def test_refused_software_trigger_leaves_the_detector_ready(rig: Rig, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from dios.codes import DiosError

    rig.ok("Prepare")
    assert rig.det.state is S.Ready

    def refuse() -> None:
        raise DiosError(WRONG_STATE, "panel not armed")

    monkeypatch.setattr(rig.backend, "trigger", refuse)
    r = rig.call("Acquire")
    assert r.code == WRONG_STATE.hex
    assert rig.det.state is S.Ready
    monkeypatch.undo()
    rig.ok("Acquire")
    frame = rig.wait_event(lambda e: e.kind == EventKind.IMAGE).data["frame"]
    assert frame.kind == "dark" and rig.det.state is S.Standby


def test_abort_while_maps_are_built_keeps_the_old_maps(rig: Rig, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    import threading

    from processing import calibration

    rig.ok("CalibrateOffset", "2")
    rig.wait_event(lambda e: e.kind == EventKind.PARAM and e.name == "Calibration")
    rig.wait_state(S.Standby)
    old = rig.det._maps["FLUORO_1024"]["offset"]
    building, release = threading.Event(), threading.Event()
    real = calibration.build_offset

    def slow_build(frames):  # the Abort arrives while the map is being computed
        building.set()
        release.wait(DEADLINE_S)
        return real(frames)

    monkeypatch.setattr(calibration, "build_offset", slow_build)
    rig.ok("CalibrateOffset", "2")
    assert building.wait(DEADLINE_S)
    replies: list[Reply] = []
    t = threading.Thread(target=lambda: replies.append(rig.call("Abort")))
    t.start()
    deadline = time.monotonic() + DEADLINE_S
    while not rig.det._cancel.is_set():
        assert time.monotonic() < deadline, "the Abort never cancelled the calibration"
        time.sleep(0.001)
    release.set()
    t.join(DEADLINE_S)
    assert replies and replies[0].code == SUCCESS.hex
    assert rig.det.state is S.Standby
    assert rig.det._maps["FLUORO_1024"]["offset"] is old
