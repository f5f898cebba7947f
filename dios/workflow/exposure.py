"""One exposure end to end: technique, prepare, all ready, expose, frame, pipeline, files.

Everything goes through the bus with the same commands a console client sends, so the
workflow runs unchanged on simulators and on real drivers. Progress is reported through
a callback (the CLI prints it; the task service forwards it as events).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dios.codes import ABORTED, INTERNAL, TIMEOUT, WRONG_STATE, DiosError
from dios.devices.backends import ExposureRecord, Frame, Technique
from dios.messages import Event, EventKind, Reply
from dios.uri import DETECTOR, GENERATOR
from dios.workflow.waits import Watcher, wait_status

Progress = Callable[[str, str], None]


def check(reply: Reply) -> Reply:
    """Raise the reply's own error when it is not a success (see Reply.raise_for_error)."""
    return reply.raise_for_error()


@dataclass
class ExposurePlan:
    """What to expose and where the result goes.

    ``view`` is the catalog's view processing info (``img_proc_id``, ``ImageRotate``,
    ``ImageHorizontalFlip``, ``TargetEXI``, ``body_part``, ``view_position``,
    ``laterality``...); ``patient``/``study``/``series``/``image`` are the DICOM writer's
    dicts; ``scene`` is what the simulated beam meets (ignored on hardware).
    """

    technique: Technique
    view: dict[str, Any] = field(default_factory=dict)
    patient: dict[str, Any] = field(default_factory=dict)
    study: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    image: dict[str, Any] = field(default_factory=dict)
    scene: Any = None
    dicom_path: Path | None = None
    preview_path: Path | None = None
    timeout: float = 60.0
    client_id: str = "dios-workflow"


@dataclass
class ExposureOutcome:
    record: ExposureRecord
    frame: Frame
    result: Any  # processing.pipeline.PipelineResult
    technique: Technique
    dicom_path: Path | None = None
    preview_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def apply_technique(bus: Any, t: Technique, client: str = "dios-workflow",
                    transaction: str = "") -> Technique:
    """Send a technique to the generator; return what it accepted."""

    def setp(name: str, value: object) -> str:
        return check(bus.call(GENERATOR, f"SetParam_{name}", value, transaction, client)).result

    setp("Technique", t.mode)
    setp("Focus", t.focus)
    kv = float(setp("KV", _fmt(t.kv)))
    if t.mode == 0:
        setp("MA", _fmt(t.ma))
        setp("MS", _fmt(t.ms))
    elif t.mode == 1:
        setp("MAS", _fmt(t.mas))
    else:
        setp("AECField", t.aec_field)
        setp("AECDensity", t.aec_density)
        setp("MAS", _fmt(t.mas))  # back-up mAs for AEC
    ma = float(check(bus.call(GENERATOR, "GetParam_MA", "", transaction, client)).result)
    ms = float(check(bus.call(GENERATOR, "GetParam_MS", "", transaction, client)).result)
    mas = float(check(bus.call(GENERATOR, "GetParam_MAS", "", transaction, client)).result)
    return Technique(kv=kv, ma=ma, ms=ms, mas=mas, mode=t.mode, focus=t.focus,
                     aec_field=t.aec_field, aec_density=t.aec_density)


def _fmt(x: float) -> str:
    return f"{x:g}"


def run_exposure(engine: Any, plan: ExposurePlan, *, pipeline: Any = None,
                 progress: Progress | None = None, writer: Any = None) -> ExposureOutcome:
    """Run one exposure on ``engine`` following ``plan``.

    ``pipeline`` is a reusable ``processing.pipeline.Pipeline`` (one is made from the
    view's ``img_proc_id`` if None). ``writer`` overrides how the files are written
    (default: DICOM DX For Presentation and an 8-bit PNG preview when paths are given).
    """
    from processing.pipeline import Pipeline

    say = progress or (lambda step, detail: None)
    bus = engine.bus
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = (now - t0) * 1000.0
        t0 = now

    tx = f"exp-{uuid.uuid4().hex[:12]}"
    say("technique", f"{plan.technique.kv:g} kV, {plan.technique.mas:g} mAs")
    accepted = apply_technique(bus, plan.technique, plan.client_id, tx)
    if plan.scene is not None and getattr(engine, "room", None) is not None:
        engine.room.scene = plan.scene
    lap("technique")

    gen = engine.generator
    fpd = engine.detector
    with Watcher(engine.hub, kinds=(EventKind.FAULT, EventKind.IMAGE, EventKind.EXPOSURE,
                                    EventKind.PARAM)) as watch:
        try:
            record, frame = _expose(bus, gen, fpd, watch, plan, tx, say, lap)
        except BaseException:
            _stand_down(bus, tx, plan.client_id)
            raise
    say("process", f"profile {plan.view.get('img_proc_id', 'default')}")
    if pipeline is None:
        pipeline = Pipeline(plan.view.get("img_proc_id") or "default")
    result = process_frame(pipeline, frame, fpd.calibration, plan.view)
    for stage, ms in result.timings.items():
        timings[f"pipeline.{stage}"] = ms
    lap("process")

    outcome = ExposureOutcome(record, frame, result, accepted, plan.dicom_path,
                              plan.preview_path, timings)
    if writer is not None:
        writer(outcome, plan)
    elif plan.dicom_path is not None or plan.preview_path is not None:
        say("store", "writing DICOM and preview")
        write_outputs(outcome, plan)
    lap("store")
    timings["total"] = (time.perf_counter() - t_all) * 1000.0
    return outcome


def process_frame(pipeline: Any, frame: Frame, calibration: Any, view: dict[str, Any]) -> Any:
    """Run ``pipeline`` on a detector frame with the view's processing settings
    (target EI, rotation, horizontal flip) and the detector's calibration factor."""
    return pipeline.run(
        frame.pixels,
        calibration,
        counts_per_ugy=frame.mode.counts_per_ugy,
        target_ei=view.get("TargetEXI"),
        rotate=int(view.get("ImageRotate", 0) or 0),
        hflip=_flag(view.get("ImageHorizontalFlip", False)),
    )


def _expose(bus: Any, gen: Any, fpd: Any, watch: Watcher, plan: ExposurePlan, tx: str,
            say: Progress, lap: Callable[[str], None]) -> tuple[ExposureRecord, Frame]:
    """Arm, prepare, wait for all ready, expose; return the readback and the frame."""
    say("prepare", "arming detector, rotor boost")
    check(bus.call(DETECTOR, "Prepare", "", tx, plan.client_id))
    check(bus.call(GENERATOR, "Prepare", "", tx, plan.client_id))
    wait_status(lambda: fpd.status_string, "DETECTOR_STATUS_READY", plan.timeout, "detector ready")
    wait_status(lambda: gen.status_string, "GENERATOR_STATUS_READY", plan.timeout, "generator ready")
    status = bus.global_status()
    if not status["all_ready"]:
        raise DiosError(WRONG_STATE, f"not all ready: {status}")
    lap("prepare")

    say("expose", "X-ray on")
    check(bus.call(GENERATOR, "Expose", "", tx, plan.client_id))
    ev = watch.wait(lambda e: e.kind == EventKind.EXPOSURE and e.deviceUri == GENERATOR
                    and e.reqTransaction == tx, plan.timeout, "end of exposure")
    if ev.data.get("aborted"):
        raise DiosError(ABORTED, "exposure aborted before its end")
    record = _record(ev)
    lap("expose")
    say("readout", "reading the detector")
    ev = watch.wait(lambda e: (e.kind == EventKind.IMAGE and e.deviceUri == DETECTOR
                               and e.reqTransaction == tx) or window_expired(e),
                    plan.timeout, "frame readout")
    if ev.kind != EventKind.IMAGE:  # the panel's window closed: the X-rays missed it
        raise DiosError(TIMEOUT, f"the detector saw no X-rays ({ev.data.get('detail', '')})")
    lap("readout")
    return record, ev.data["frame"]


def window_expired(ev: Event) -> bool:
    """True for the detector's event that its arm window closed without X-rays."""
    return (ev.kind == EventKind.PARAM and ev.deviceUri == DETECTOR and ev.name == "Window"
            and ev.value == "expired")


def _stand_down(bus: Any, tx: str, client: str) -> None:
    """After a failed exposure: abort whatever is still armed or preparing (best effort)."""
    for uri, busy in ((GENERATOR, ("PREPARE", "READY", "EXPOSURE")),
                      (DETECTOR, ("READY", "ACQUIRING", "READOUT"))):
        try:
            if bus.device(uri).status_string.rsplit("_", 1)[-1] in busy:
                bus.call(uri, "Abort", "", tx, client)
        except DiosError:
            pass


def _record(ev: Event) -> ExposureRecord:
    rec = ev.data.get("record")
    if isinstance(rec, ExposureRecord):
        return rec
    if isinstance(rec, dict):
        names = ExposureRecord.__dataclass_fields__
        return ExposureRecord(**{k: v for k, v in rec.items() if k in names})
    raise DiosError(INTERNAL, "exposure event without a record")


def acquisition_attributes(outcome: ExposureOutcome, sid_cm: float | None = None,
                           target_ei: float | None = None) -> dict[str, Any]:
    """The acquisition dict the DICOM writer takes, from the real run."""
    r = outcome.record
    res = outcome.result
    acq: dict[str, Any] = {
        "kv": r.kv, "ma": r.ma, "ms": r.ms, "mas": r.mas, "focus": r.focus,
        "dap": r.dap_dgycm2, "ei": getattr(res, "ei", None), "di": getattr(res, "di", None),
        "target_ei": target_ei,
    }
    if sid_cm is not None:
        acq["sid"] = sid_cm * 10.0
    return {k: v for k, v in acq.items() if v is not None}


def detector_attributes(frame: Frame, backend_name: str = "") -> dict[str, Any]:
    m = frame.mode
    return {
        "detector_id": m.name, "detector_type": "SCINTILLATOR",
        "pixel_pitch_mm": m.pixel_pitch_mm, "bits": m.bits,
        "model": m.description or m.name, "manufacturer": backend_name or "DIOS",
    }


def shutter_attributes(outcome: ExposureOutcome, view: dict[str, Any]) -> dict[str, Any] | None:
    """The detected field as DICOM Display Shutter attributes of the *presented* image
    (rotated and flipped like it), or None when there is no collimation."""
    from processing.output import orient_shutter

    col = outcome.result.collimation
    attrs = col.shutter_attributes() if col is not None else {}
    if not attrs:
        return None
    return orient_shutter(attrs, outcome.frame.pixels.shape,
                          int(view.get("ImageRotate", 0) or 0), _flag(view.get("ImageHorizontalFlip")))


def _flag(value: Any) -> bool:
    """A catalog yes/no value (bool, 0/1 or YES/NO/TRUE/FALSE text)."""
    if isinstance(value, str):
        return value.strip().upper() in ("YES", "TRUE", "1", "Y")
    return bool(value)


def write_outputs(outcome: ExposureOutcome, plan: ExposurePlan) -> None:
    """Write the DICOM file and the PNG preview named in ``plan`` (atomically)."""
    from dios.dicom.dx import write_dx
    from dios.dicom.png import write_preview_png

    res = outcome.result
    if plan.dicom_path is not None:
        sid = getattr(plan.scene, "sid_cm", None)
        write_dx(
            plan.dicom_path, res.image, bits_stored=res.bits_stored,
            patient=plan.patient, study=plan.study, series=plan.series, image=plan.image,
            acquisition=acquisition_attributes(outcome, sid, plan.view.get("TargetEXI")),
            detector=detector_attributes(outcome.frame),
            window=tuple(res.window),
            shutter=shutter_attributes(outcome, plan.view),
        )
    if plan.preview_path is not None:
        write_preview_png(plan.preview_path, res.preview)


def summary(outcome: ExposureOutcome) -> dict[str, Any]:
    """A plain-data summary for printing or JSON."""
    res = outcome.result
    col = res.collimation
    return {
        "technique": asdict(outcome.technique),
        "delivered": asdict(outcome.record),
        "frame": {"shape": list(outcome.frame.pixels.shape), "mode": outcome.frame.mode.name},
        "window": {"center": res.window[0], "width": res.window[1]},
        "ei": res.ei, "di": res.di,
        "collimation": {"kind": col.kind, "confidence": col.confidence} if col else None,
        "dicom": str(outcome.dicom_path) if outcome.dicom_path else None,
        "preview": str(outcome.preview_path) if outcome.preview_path else None,
        "timings_ms": {k: round(v, 2) for k, v in outcome.timings.items()},
    }
