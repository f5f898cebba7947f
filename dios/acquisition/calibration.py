"""Detector calibration when none is stored: offset, gain and defect maps, with progress.

Used by ``dios serve`` at start and by ``dios acquire`` before its exposure; the detector
device runs each step as a job (:mod:`dios.devices.detector`) and publishes its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dios.acquisition.lifecycle import check
from dios.acquisition.waits import wait_status
from dios.codes import NOT_CALIBRATED, DiosError
from dios.messages import Event, EventKind
from dios.uri import DETECTOR

STEPS = ("CalibrateOffset", "CalibrateGain", "CalibrateDefect")

#: ``say(step, detail)``: a progress line
Say = Callable[[str, str], None]


def calibrate_if_needed(engine: Any, frames: int = 4, timeout: float = 600.0,
                        say: Say | None = None, client: str = "dios") -> bool:
    """Calibrate the selected mode's offset, gain and defect maps unless they are stored.

    Returns True when a calibration ran. ``say`` receives a line per step and per quarter
    of each step's progress. ``NOT_CALIBRATED`` when a step leaves the detector in error
    or no maps come out.
    """
    tell = say or (lambda step, detail: None)
    if engine.detector.calibration is not None:
        tell("calibration", "using stored calibration maps")
        return False
    last = {"pct": -10.0, "done": False}

    def on_progress(ev: Event) -> None:
        pct = float(ev.value or 0)
        if pct >= last["pct"] + 25 or pct >= 100:
            last["pct"] = pct
            tell("calibration", f"{ev.name}: {pct:3.0f} %")
        if pct >= 100:
            last["done"] = True

    sub = engine.hub.subscribe(DETECTOR, on_progress, kinds=[EventKind.PROGRESS])
    try:
        for cmd in STEPS:
            last.update(pct=-10.0, done=False)
            tell("calibration", f"{cmd} ({frames} frames)")
            check(engine.bus.call(DETECTOR, cmd, str(frames), "cal", client))
            status = wait_status(lambda: engine.detector.status_string,
                                 ("DETECTOR_STATUS_STANDBY", "DETECTOR_STATUS_ERROR"), timeout,
                                 cmd, interval=0.01)
            if status == "DETECTOR_STATUS_ERROR":
                raise DiosError(NOT_CALIBRATED, f"{cmd} failed; the detector is in error")
    finally:
        sub.close(drain=2.0)  # the last progress lines before the caller goes on
    if engine.detector.calibration is None:
        raise DiosError(NOT_CALIBRATED, "calibration produced no maps")
    return True
