"""The flat-panel detector device: state machine, acquisition, calibration and events.

States and transitions
----------------------
The state machine is driven only by :data:`TRANSITIONS`. Entries mapping a state to
itself are *admissions* (``select``, ``trigger-free`` commands allowed in that state);
a command whose event is missing for the current state is refused with ``WRONG_STATE``
and the state is left alone.

============================== ============ ==============
from                           event        to
============================== ============ ==============
Disconnected                   connect      Standby
Standby, Ready, Error          disconnect   Disconnected
Standby                        select       Standby (admission: SelectMode)
Standby                        prepare      Ready
Ready                          xray         Acquiring (X-rays detected)
Ready                          trigger      Acquiring (software trigger, Acquire)
Acquiring                      readout      Readout
Readout                        frame        Standby (IMAGE event published)
Ready                          expire       Standby (arm window passed without X-rays)
Standby                        calibrate    Calibrating
Calibrating                    calibrated   Standby
Ready, Acquiring, Readout,     abort        Standby
Calibrating
any but Disconnected, Error    fault        Error (FAULT event published)
Error                          reset        Standby (backend still connected)
Error                          lost         Disconnected (backend not connected)
============================== ============ ==============

Acquisition
-----------
``Prepare`` arms the panel and starts a background job that waits for the frame
(``read_frame``). A backend that offers ``set_stage_listener(fn)`` reports the stages
``"acquiring"`` (window closed on X-rays or a trigger) and ``"readout"``; otherwise the
device passes through Acquiring and Readout when the frame arrives. The frame is
published as an ``IMAGE`` event with ``data={"frame": Frame}`` after the device is back
in Standby.

Calibration
-----------
``CalibrateOffset`` averages N dark frames, ``CalibrateGain`` N flat frames (needs the
offset map of the mode), ``CalibrateDefect`` N darks and N flats from which defects are
found (:mod:`processing.calibration`). ``reqParam`` is the optional frame count
(1..:data:`MAX_FRAMES`). Progress is published as ``PROGRESS`` events 0..100. Maps are
kept per mode; :attr:`Detector.calibration` returns the selected mode's maps once
offset and gain exist (an all-False defect map until the defect calibration has run).
With a ``calibration_dir`` the complete maps of a mode are saved as ``<mode>.npz`` and
loaded at start.

Faults
------
Backend failures (``DETECTOR_DISCONNECTED``, ``FRAME_LOST``, ``COMM_LOST``, ``TIMEOUT``,
``DEVICE_FAULT``...) put the device in Error and publish a ``FAULT`` event with
``data={"code": hex, "description": text}``; the failing command replies with that code.
``ResetError`` returns to Standby when the backend is still connected (after clearing
the panel), else to Disconnected, from where ``Connect`` recovers.
"""

from __future__ import annotations

import logging
import os
import threading
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from dios.clock import REAL_TIME, SimClock
from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    BUSY,
    COMM_LOST,
    DETECTOR_DISCONNECTED,
    INTERNAL,
    NOT_CALIBRATED,
    OUT_OF_RANGE,
    TIMEOUT,
    WRONG_STATE,
    DiosError,
    ResultCode,
)
from dios.devices.backends import DetectorBackend, Frame, PanelMode
from dios.devices.base import Device, command, parse_int
from dios.devices.interlock import XrayEnable
from dios.events import EventHub
from dios.fsm import StateMachine
from dios.messages import EventKind

log = logging.getLogger(__name__)


class DetectorState(Enum):
    """Detector states; the value is the seed's status-string suffix."""

    Disconnected = "DISCONNECTED"
    Standby = "STANDBY"
    Ready = "READY"
    Acquiring = "ACQUIRING"
    Readout = "READOUT"
    Calibrating = "CALIBRATING"
    Error = "ERROR"


S = DetectorState

#: The explicit transition table (see the module docstring).
TRANSITIONS: dict[tuple[DetectorState, str], DetectorState] = {
    (S.Disconnected, "connect"): S.Standby,
    (S.Standby, "disconnect"): S.Disconnected,
    (S.Ready, "disconnect"): S.Disconnected,
    (S.Error, "disconnect"): S.Disconnected,
    (S.Standby, "select"): S.Standby,
    (S.Standby, "prepare"): S.Ready,
    (S.Ready, "xray"): S.Acquiring,
    (S.Ready, "trigger"): S.Acquiring,
    (S.Acquiring, "readout"): S.Readout,
    (S.Readout, "frame"): S.Standby,
    (S.Ready, "expire"): S.Standby,
    (S.Standby, "calibrate"): S.Calibrating,
    (S.Calibrating, "calibrated"): S.Standby,
    (S.Ready, "abort"): S.Standby,
    (S.Acquiring, "abort"): S.Standby,
    (S.Readout, "abort"): S.Standby,
    (S.Calibrating, "abort"): S.Standby,
    (S.Error, "reset"): S.Standby,
    (S.Error, "lost"): S.Disconnected,
    **{(s, "fault"): S.Error for s in DetectorState if s not in (S.Disconnected, S.Error)},
}

#: Default number of frames averaged per calibration.
DEFAULT_FRAMES = {"offset": 8, "gain": 6, "defect": 4}
#: Largest frame count a calibration accepts.
MAX_FRAMES = 64
#: Simulated seconds the panel stays armed waiting for X-rays.
ARM_WINDOW_S = 300.0
#: Codes after which the link to the panel is considered gone.
_LINK_CODES = frozenset({DETECTOR_DISCONNECTED, COMM_LOST})


def mode_dict(m: PanelMode) -> dict[str, Any]:
    """A panel mode as a plain mapping (for replies)."""
    return {"name": m.name, "rows": m.rows, "cols": m.cols, "pixel_pitch_mm": m.pixel_pitch_mm,
            "bits": m.bits, "description": m.description, "counts_per_ugy": m.counts_per_ugy,
            "readout_s": m.readout_s, "aed": m.aed}


class Detector(Device):
    """The detector device on the bus (``DIOS/DEVICE/Detector``).

    Parameters
    ----------
    uri : str
        The device URI.
    hub : EventHub
        Where events are published.
    backend : DetectorBackend
        The hardware half (simulator or driver).
    clock : SimClock
        Simulated time for timeouts.
    calibration_dir : path, optional
        Where the calibration maps of each mode are saved and loaded from.
    arm_window_s : float
        Simulated seconds a prepared panel waits for X-rays before returning to Standby.
    xray_enable : XrayEnable, optional
        The room's X-ray enable line: armed while the panel is Ready, dropped when it
        leaves Ready for anything but X-rays (a beam in progress is stopped first).
    """

    status_prefix = "DETECTOR_STATUS_"

    def __init__(self, uri: str, hub: EventHub, backend: DetectorBackend,
                 clock: SimClock = REAL_TIME, calibration_dir: str | os.PathLike[str] | None = None,
                 arm_window_s: float = ARM_WINDOW_S, xray_enable: XrayEnable | None = None) -> None:
        super().__init__(uri, hub, clock)
        self.backend = backend
        self.xray_enable = xray_enable
        self.fsm = StateMachine("Detector", TRANSITIONS, S.Disconnected, self._state_changed)
        self.calibration_dir = Path(calibration_dir) if calibration_dir is not None else None
        self.arm_window_s = float(arm_window_s)
        self.fault: ResultCode | None = None
        self.frames_acquired = 0
        self.last_frame: Frame | None = None
        self._linked = False
        self._mode: PanelMode | None = None
        #: per mode name: {"offset": arr, "gain": arr, "defect": arr}
        self._maps: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.RLock()
        hook = getattr(backend, "set_stage_listener", None)
        self._staged = callable(hook)
        if self._staged:
            hook(self._on_stage)
        self._load_calibrations()

    # --- status ------------------------------------------------------------------------------
    @property
    def state(self) -> DetectorState:
        return self.fsm.state  # type: ignore[return-value]

    @property
    def ready(self) -> bool:
        return self.state in (S.Standby, S.Ready)

    @property
    def mode(self) -> PanelMode | None:
        """The selected panel mode (None before the first connection)."""
        return self._mode

    @property
    def calibration(self) -> Any:
        """The selected mode's ``processing.calibration.CalibrationMaps``, or None."""
        if self._mode is None:
            return None
        return self._maps_of(self._mode.name)

    def _maps_of(self, name: str) -> Any:
        maps = self._maps.get(name, {})
        if "offset" not in maps or "gain" not in maps:
            return None
        from processing.calibration import CalibrationMaps

        defect = maps.get("defect")
        if defect is None:
            defect = np.zeros(maps["offset"].shape, bool)
        return CalibrationMaps(maps["offset"], maps["gain"], defect)

    def calibration_state(self) -> dict[str, bool]:
        """Which maps exist for the selected mode."""
        maps = self._maps.get(self._mode.name, {}) if self._mode else {}
        done = {k: k in maps for k in ("offset", "gain", "defect")}
        done["complete"] = all(done.values())
        return done

    def _status(self) -> tuple[str, dict[str, Any]]:
        mode = self._mode
        return self.status_string, {
            "status": self.status_string, "state": self.state.name, "ready": self.ready,
            "connected": self._backend_connected(),
            "mode": mode.name if mode else "", "modeInfo": mode_dict(mode) if mode else {},
            "calibration": self.calibration_state(), "job": self._job_name if self.job_running else "",
            "frames": self.frames_acquired, "fault": self.fault.hex if self.fault else "",
        }

    def _backend_connected(self) -> bool:
        flag = getattr(self.backend, "connected", None)
        return bool(flag) if isinstance(flag, bool) else self._linked

    # --- the X-ray enable line ----------------------------------------------------------------
    def _state_changed(self, old: Enum, new: Enum, event: str) -> None:
        line = self.xray_enable
        if line is not None:
            if new is S.Ready:
                line.panel_armed()
            elif old is S.Ready and event == "xray":
                line.panel_exposed()
            elif old is S.Ready:
                # a fault, the window running out, a software trigger: the beam must stop
                line.panel_dropped(f"detector {event}", wait=False)
        super()._state_changed(old, new, event)

    def _drop_line(self, why: str) -> None:
        """Before an Abort/Disconnect/trigger: stop a beam in progress and wait for it."""
        line = self.xray_enable
        if line is not None and not line.panel_dropped(why, wait=True):
            raise DiosError(WRONG_STATE, f"{why}: the generator did not stop its beam; "
                                         "abort the generator")

    # --- helpers -------------------------------------------------------------------------------
    def _on_fault(self, err: DiosError) -> None:
        """Latch a backend failure: Error state and a FAULT event."""
        if err.code in _LINK_CODES:
            self._linked = False
        self.fault = err.code
        self.fsm.fire_if("fault")
        self.publish(EventKind.FAULT, err.code.name, err.code.hex, code=err.code.hex,
                     description=err.description(), state=self.status_string)

    def _hw(self, fn: Any, *args: Any) -> Any:
        """Call the backend; a failure becomes a fault (Error + event) and is re-raised."""
        try:
            return fn(*args)
        except DiosError as err:
            if err.code in (BAD_PARAMETER, OUT_OF_RANGE, WRONG_STATE):
                raise
            self._on_fault(err)
            raise

    def _settle_job(self) -> None:
        """Wait for a job that has already left its state (it is finishing)."""
        job = self._job
        if job is not None and job.is_alive() and job is not threading.current_thread():
            job.join(5.0)

    def on_job_crash(self, name: str) -> None:
        self._on_fault(DiosError(INTERNAL, f"{name} job crashed"))

    def _on_stage(self, stage: str) -> None:
        if stage == "acquiring":
            self.fsm.fire_if("xray")
        elif stage == "readout":
            self.fsm.fire_if("readout")

    def _load_calibrations(self) -> None:
        if self.calibration_dir is None or not self.calibration_dir.is_dir():
            return
        from processing.calibration import CalibrationMaps

        for m in self.backend.modes():
            path = self.calibration_dir / f"{m.name}.npz"
            if not path.exists():
                continue
            try:
                maps = CalibrationMaps.load(path)
            except ValueError:
                log.warning("ignoring unreadable calibration file %s", path)
                continue
            if maps.shape != (m.rows, m.cols):
                log.warning("ignoring calibration %s: shape %s != %s", path, maps.shape,
                            (m.rows, m.cols))
                continue
            self._maps[m.name] = {"offset": maps.offset, "gain": maps.gain, "defect": maps.defect}

    def _save_calibration(self, name: str) -> None:
        if self.calibration_dir is None:
            return
        maps = self._maps.get(name, {})
        if not all(k in maps for k in ("offset", "gain", "defect")):
            return
        from processing.calibration import CalibrationMaps

        CalibrationMaps(maps["offset"], maps["gain"], maps["defect"]).save(
            self.calibration_dir / f"{name}.npz")

    # --- connection ----------------------------------------------------------------------------
    @command("Connect")
    def connect(self, param: str) -> tuple[str, dict]:
        self.fsm.require("connect")
        self.backend.connect()
        self._linked = True
        modes = self.backend.modes()
        if self._mode is None or self._mode.name not in {m.name for m in modes}:
            current = getattr(self.backend, "mode", None)
            self._mode = current if isinstance(current, PanelMode) else modes[0]
            if not isinstance(current, PanelMode):
                self._mode = self.backend.select_mode(self._mode.name)
        else:
            self._mode = self.backend.select_mode(self._mode.name)
        self.fault = None
        self.fsm.fire("connect")
        return self._status()

    @command("Disconnect")
    def disconnect(self, param: str) -> tuple[str, dict]:
        self.fsm.require("disconnect")
        self._drop_line("detector Disconnect")
        if self.state is S.Ready:
            self.cancel_job()
        try:
            self.backend.disconnect()
        except DiosError as err:
            log.warning("disconnect: %s", err)
        self._linked = False
        self.fsm.fire("disconnect")
        return self._status()

    # --- status and modes ---------------------------------------------------------------------
    @command("GetStatus")
    def get_status(self, param: str) -> tuple[str, dict]:
        return self._status()

    @command("GetModes")
    def get_modes(self, param: str) -> tuple[str, dict]:
        modes = self.backend.modes()
        return ",".join(m.name for m in modes), {
            "modes": [mode_dict(m) for m in modes],
            "current": self._mode.name if self._mode else "",
        }

    @command("SelectMode", param="str")
    def select_mode(self, param: str) -> tuple[str, dict]:
        self.fsm.require("select")
        name = param.strip() if isinstance(param, str) else ""
        names = {m.name.upper(): m.name for m in self.backend.modes()}
        if name.upper() not in names:
            raise DiosError(BAD_PARAMETER, f"mode {param!r} not one of {', '.join(names.values())}")
        self._settle_job()
        mode = self._hw(self.backend.select_mode, names[name.upper()])
        changed = self._mode is None or mode.name != self._mode.name
        self._mode = mode
        self.fsm.fire("select")
        if changed:
            self.publish(EventKind.PARAM, "Mode", mode.name, mode=mode_dict(mode))
        return mode.name, {"mode": mode_dict(mode), "calibration": self.calibration_state()}

    # --- acquisition --------------------------------------------------------------------------
    @command("Prepare")
    def prepare(self, param: str) -> tuple[str, dict]:
        self.fsm.require("prepare")
        self._settle_job()
        self._hw(self.backend.arm)
        self.fsm.fire("prepare")
        armed_at = self.clock.now()
        arm = self.xray_enable.arms if self.xray_enable is not None else 0
        try:
            self.start_job("acquire", lambda cancel: self._acquire_job(cancel, armed_at, arm))
        except DiosError:
            self.fsm.fire_if("abort")
            raise
        return self._status()

    def _acquire_job(self, cancel: threading.Event, armed_at: float, arm: int = 0) -> None:
        try:
            frame = self.backend.read_frame(cancel, self.arm_window_s)
        except DiosError as err:
            if cancel.is_set() or err.code is ABORTED:
                return
            if (err.code is TIMEOUT and self.state is S.Ready
                    and self.clock.now() - armed_at >= 0.99 * self.arm_window_s):
                if self.fsm.fire_if("expire"):
                    self.publish(EventKind.PARAM, "Window", "expired",
                                 detail=f"no X-rays within {self.arm_window_s:g} s")
                return
            self._on_fault(err)
            return
        if cancel.is_set():
            return
        if self.state is S.Ready:  # a backend without stage reports
            self.fsm.fire_if("xray")
        if self.state is S.Acquiring:
            self.fsm.fire_if("readout")
        if not self.fsm.fire_if("frame"):
            return
        self.frames_acquired += 1
        self.last_frame = frame
        self.publish(EventKind.IMAGE, frame.kind, frame.meta.get("index", self.frames_acquired),
                     frame=frame, arm=arm)

    @command("Acquire")
    def acquire(self, param: str) -> tuple[str, dict]:
        self.fsm.require("trigger")
        self._drop_line("detector software trigger")
        self._hw(self.backend.trigger)
        # the acquisition job may already have reported the closed window (Acquiring)
        self.fsm.fire_if("trigger")
        return self._status()

    @command("Abort")
    def abort(self, param: str) -> tuple[str, dict]:
        self.fsm.require("abort")
        self._drop_line("detector Abort")
        self._cancel.set()
        try:
            self.backend.abort()
        except DiosError as err:
            log.warning("abort: %s", err)
        self.cancel_job()
        self.fsm.fire_if("abort")
        return self._status()

    @command("ResetError")
    def reset_error(self, param: str) -> tuple[str, dict]:
        self.fsm.require("reset")
        self._settle_job()
        if not self._backend_connected():
            self._linked = False
            self.fault = None
            self.fsm.fire("lost")
            return self._status()
        self.backend.abort()  # clears the panel; raises if the link is still failing
        self.fault = None
        self.fsm.fire("reset")
        return self._status()

    # --- calibration ---------------------------------------------------------------------------
    @command("CalibrateOffset", param="int")
    def calibrate_offset(self, param: str) -> tuple[str, dict]:
        return self._calibrate("offset", param)

    @command("CalibrateGain", param="int")
    def calibrate_gain(self, param: str) -> tuple[str, dict]:
        return self._calibrate("gain", param)

    @command("CalibrateDefect", param="int")
    def calibrate_defect(self, param: str) -> tuple[str, dict]:
        return self._calibrate("defect", param)

    def _calibrate(self, kind: str, param: str) -> tuple[str, dict]:
        self.fsm.require("calibrate")
        n = DEFAULT_FRAMES[kind]
        if isinstance(param, str) and param.strip():
            n = parse_int(param, f"Calibrate{kind.title()} frame count")
            if not 1 <= n <= MAX_FRAMES:
                raise DiosError(OUT_OF_RANGE, f"frame count {n} not in 1..{MAX_FRAMES}")
        mode = self._mode
        assert mode is not None
        if kind == "gain" and "offset" not in self._maps.get(mode.name, {}):
            raise DiosError(NOT_CALIBRATED, f"gain calibration of {mode.name} needs the offset map")
        self._settle_job()
        if self.job_running:
            raise DiosError(BUSY, f"{self._job_name} running")
        self.fsm.fire("calibrate")
        try:
            self.start_job(f"calibrate-{kind}", lambda cancel: self._calibrate_job(kind, n, mode, cancel))
        except DiosError:
            self.fsm.fire_if("abort")
            raise
        return str(n), {"kind": kind, "frames": n, "mode": mode.name}

    def _calibrate_job(self, kind: str, n: int, mode: PanelMode, cancel: threading.Event) -> None:
        from processing.calibration import build_gain, build_offset, find_defects

        name = f"Calibrate{kind.title()}"
        plan = {"offset": ["dark"] * n, "gain": ["flat"] * n,
                "defect": ["dark"] * n + ["flat"] * n}[kind]
        timeout = 10.0 * (mode.readout_s + 1.0)
        self.publish(EventKind.PROGRESS, name, 0, calibration=kind, frames=len(plan))
        frames: dict[str, list[np.ndarray]] = {"dark": [], "flat": []}
        try:
            for i, what in enumerate(plan):
                if cancel.is_set():
                    return
                frame = self.backend.calibration_frame(what, cancel, timeout)
                frames[what].append(frame.pixels)
                pct = int(95 * (i + 1) / len(plan))
                self.publish(EventKind.PROGRESS, name, pct, calibration=kind, frame=i + 1,
                             frames=len(plan))
        except DiosError as err:
            if cancel.is_set() or err.code is ABORTED:
                return
            self._on_fault(err)
            return
        maps = self._maps.setdefault(mode.name, {})
        if kind == "offset":
            new = build_offset(frames["dark"])
        elif kind == "gain":
            new = build_gain(frames["flat"], maps["offset"])
        else:
            offset = build_offset(frames["dark"])
            new = find_defects(offset, build_gain(frames["flat"], offset))
        if cancel.is_set():  # aborted while the map was being built: keep the old one
            return
        maps[kind] = new
        try:
            self._save_calibration(mode.name)
        except OSError as exc:
            log.error("could not save calibration of %s: %s", mode.name, exc)
        self.publish(EventKind.PROGRESS, name, 100, calibration=kind, frames=len(plan))
        self.fsm.fire_if("calibrated")
        extra: dict[str, Any] = {"map": kind, "mode": mode.name}
        if kind == "defect":
            extra["defects"] = int(maps["defect"].sum())
        self.publish(EventKind.PARAM, "Calibration", kind, **extra,
                     calibration=self.calibration_state())

    def close(self) -> None:
        self.cancel_job()
