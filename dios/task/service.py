"""The task service: device actions and commands, image selection, exposure, files.

Exposure flow (the reference console's)::

    select image  -> its APR technique (catalog: view x patient size x work station)
                     goes to the generator through bus commands; the image is *armed*
    Prepare/Expose (device commands from the client, or :meth:`TaskService.expose`)
    frame event   -> the armed image is taken (exactly once) -> pipeline (profile = the
                     view's ``img_proc_id``) -> DICOM DX written atomically + PNG preview
                  -> study service marks the image exposed and saved
                  -> ``DIOS/TASK/Image`` "ready" event

An ``Expose`` is refused while no image is armed, and a frame that arrives with no armed
image is reported as a fault and stored nowhere, so every exposure lands in exactly one
image. Interlock: the generator's ``Expose`` is refused (``WRONG_STATE``) unless the
detector is armed (Ready), so no X-rays go out that no panel will take. An exposure in
flight fails (``TIMEOUT``, image back to Unexposed) as soon as the panel reports that its
window closed without X-rays (the beam missed it), or after ``exposure_timeout`` without
any word; the panel is then stood down. Events: ``DIOS/TASK/Exposure`` (``state`` selected/disarmed, ``progress`` steps,
``fault``), ``DIOS/TASK/Image`` (``image`` ready).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dios.codes import (
    ABORTED,
    BAD_FILE_NAME,
    BUSY,
    INTERNAL,
    INVALID_FIELD,
    INVALID_TRANSITION,
    PAYLOAD_TOO_LARGE,
    STORAGE_ERROR,
    STUDY_LOCKED,
    TIMEOUT,
    UNSUPPORTED_MEDIA,
    WRONG_STATE,
    DiosError,
    ResultCode,
)
from dios.devices.backends import ExposureRecord, Frame, Technique
from dios.messages import Event, EventKind, Reply, Request
from dios.store.files import PRIVATE_DIR, PRIVATE_FILE, make_private
from dios.uids import UidFactory, is_valid_uid
from dios.uri import DETECTOR, GENERATOR, parse
from dios.workflow.exposure import (
    ExposureOutcome,
    ExposurePlan,
    apply_technique,
    check,
    process_frame,
    window_expired,
)

log = logging.getLogger("dios.task")

EXPOSURE_URI = "DIOS/TASK/Exposure"
IMAGE_URI = "DIOS/TASK/Image"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Commands a radiographer sends while operating the console (``device.action``);
#: calibration needs ``device.calibrate``; anything else is a raw service command.
#: Patient fields the DICOM writer takes from the study service's image context.
_PATIENT_KEYS = frozenset({
    "patient_id", "patient_name", "patient_dob", "patient_age", "weight", "length",
    "thickness", "patient_english_name", "patient_former_name", "other_patient_names",
    "other_patient_ids", "patient_size", "owner_name", "variety", "patient_type",
    "sex_neutered", "chip_number", "pregnancy_status", "is_sedation", "is_anaesthesia"})

#: Patient fields that only describe animals (left out of a human patient's DICOM file).
_ANIMAL_ONLY = ("owner_name", "variety", "sex_neutered", "chip_number")

_OPERATIONAL = re.compile(
    r"^(?:(?:Get|Set|Inc|Dec)Param_\w+|Prepare|Expose|Abort|ResetError|GetStatus|GetLimits)$")
_CALIBRATION = re.compile(r"^Calibrate\w*$")


def command_permission(req_name: str) -> str:
    """The permission a device command needs: ``device.action`` for the console's
    operational commands, ``device.calibrate`` for calibration, else ``device.command``."""
    if _OPERATIONAL.match(req_name):
        return "device.action"
    if _CALIBRATION.match(req_name):
        return "device.calibrate"
    return "device.command"


def technique_from_ep(ep: dict[str, Any]) -> Technique:
    """The generator technique of a catalog ``ep`` block (tech params)."""
    try:
        return Technique(kv=float(ep["kV"]), ma=float(ep["mA"]), ms=float(ep["ms"]),
                         mas=float(ep["mAs"]), mode=int(ep.get("ExposureMode", 0)),
                         focus=int(ep.get("Focus", 1)),
                         aec_field=str(ep.get("AECField", "010")),
                         aec_density=int(ep.get("AECDensity", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DiosError(INTERNAL, f"catalog technique incomplete: {exc}") from None


def check_uid(value: object, name: str = "instance_uid") -> str:
    """A DICOM UID argument; INVALID_FIELD otherwise (this also stops path traversal)."""
    if not is_valid_uid(value):
        raise DiosError(INVALID_FIELD, f"{name} is not a DICOM UID", field=name)
    return str(value)


def check_file_name(name: object) -> str:
    """A client-supplied file name: a plain name, no directories; BAD_FILE_NAME otherwise."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise DiosError(BAD_FILE_NAME, "empty or too long")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or ".." in name:
        raise DiosError(BAD_FILE_NAME, repr(name)[:80])
    return name


@dataclass
class Armed:
    """The image the next exposure fills."""

    sop_instance_uid: str
    study_id: str
    plan: ExposurePlan
    selected_at: float


class TaskService:
    """Device tasks and the acquisition of study images.

    Parameters
    ----------
    engine : dios.engine.Engine
        The running engine (``bus``, ``hub``, ``generator``, ``detector``).
    study : dios.study.service.StudyService
        Image lookup and the ``mark_exposed`` / file attachment transitions.
    catalog : dios.catalog.service.CatalogService
        Views (processing info) and tech params.
    data_dir : path
        Images go to ``data_dir/images/<study uid>/``, previews to ``data_dir/previews/``;
        the study records their paths relative to ``data_dir`` (:meth:`image_path` gives
        the absolute path).
    work_station_id : int
        The work station whose APR techniques apply.
    uid_root : str
        Organisation root for the UIDs of uploaded (secondary capture) images.
    """

    def __init__(self, engine: Any, study: Any, catalog: Any, data_dir: str | os.PathLike,
                 work_station_id: int = 1, uid_root: str = "2.25",
                 exposure_timeout: float = 60.0, max_upload: int = 32 << 20,
                 station_name: str = "DIOS") -> None:
        self.engine = engine
        self.bus = engine.bus
        self.hub = engine.hub
        self.study = study
        self.catalog = catalog
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.previews_dir = self.data_dir / "previews"
        make_private(self.data_dir, ("images", "previews"))
        self.work_station_id = work_station_id
        self.uids = UidFactory(uid_root)
        self.exposure_timeout = exposure_timeout
        self.max_upload = max_upload
        self.station_name = station_name
        self._lock = threading.Lock()
        self._expose_lock = threading.Lock()
        self._armed: Armed | None = None
        self._in_flight = False  # an exposure happened and its frame is not stored yet
        self._flight = 0  # generation of the exposure in flight (for its watchdog)
        self._last_record: ExposureRecord | None = None
        self._waiters: dict[str, Future] = {}
        self._pipelines: dict[str, Any] = {}
        self.exposures = 0
        #: the last stored exposure (record, frame, pipeline result, timings)
        self.last_outcome: ExposureOutcome | None = None
        self.orphan_frames = 0
        self.failures = 0
        self._sub = self.hub.subscribe(
            "DIOS/DEVICE/*", handler=self._on_event,
            kinds=[EventKind.EXPOSURE, EventKind.IMAGE, EventKind.FAULT, EventKind.PARAM])

    def close(self) -> None:
        """Stop listening to the bus."""
        self._sub.close()

    # --- events ----------------------------------------------------------------------------
    def _publish(self, uri: str, kind: str, name: str, value: object = "",
                 transaction: str = "", client: str = "", **data: Any) -> None:
        self.hub.publish(Event(uri, kind, name, str(value), data, transaction, client))

    # --- status and device commands -----------------------------------------------------------
    def global_status(self) -> dict[str, Any]:
        """The seed's ``TaskGlobalStatus`` (with its ``@type``)."""
        return self.bus.global_status()

    def device_command(self, request: dict[str, Any]) -> Reply:
        """Send one device command (the seed's five fields) and return its reply.

        Raises the reply's own result code when the device refuses. ``Expose`` on the
        generator is refused with ``WRONG_STATE`` unless an image is armed.
        """
        req = Request.from_mapping(request)
        parse(req.deviceUri)
        if not (req.deviceUri == GENERATOR and req.reqName == "Expose"):
            return check(self.bus.request(req))
        with self._lock:
            armed = self._armed
            if armed is None:
                raise DiosError(WRONG_STATE, "select the image to expose first")
            if self._in_flight:
                raise DiosError(BUSY, "the previous exposure is still being stored")
            # interlock: no X-rays unless the panel is armed to take them
            panel = self.engine.detector.status_string
            if panel != "DETECTOR_STATUS_READY":
                raise DiosError(WRONG_STATE, f"the detector is not armed ({panel}): "
                                             "prepare it before exposing")
            self._in_flight = True
        try:
            self.study.mark_exposing(armed.sop_instance_uid)
        except BaseException:
            with self._lock:
                self._in_flight = False
            raise
        reply = self.bus.request(req)
        if not reply.ok:
            self._expose_failed(armed.sop_instance_uid, f"Expose refused: {reply.description}")
        else:
            self._watch_flight(armed.sop_instance_uid)
        return check(reply)

    def _watch_flight(self, sop: str) -> None:
        """Give the exposure of ``sop`` ``exposure_timeout`` seconds to be stored; after
        that (no frame: the panel was not armed, the frame never came) it has failed."""
        with self._lock:
            self._flight += 1
            flight = self._flight

        def expire() -> None:
            with self._lock:
                stale = not self._in_flight or self._flight != flight
            if not stale:
                self._expose_failed(sop, "no frame arrived for the exposure",
                                    DiosError(TIMEOUT, "no frame arrived for the exposure"))
                # the panel may still wait for it: stand it down for the next exposure
                if self.bus.device(DETECTOR).job_running:
                    try:
                        check(self.bus.call(DETECTOR, "Abort", "", "", "task"))
                    except DiosError as err:
                        log.warning("could not stand the detector down: %s", err)

        timer = threading.Timer(self.exposure_timeout, expire)
        timer.daemon = True
        timer.start()

    def _expose_failed(self, sop: str, reason: str, error: DiosError | None = None) -> None:
        """An exposure of ``sop`` did not produce its image: back to Unexposed, disarmed."""
        with self._lock:
            self._in_flight = False
            self._flight += 1
            if self._armed is not None and self._armed.sop_instance_uid == sop:
                self._armed = None
            self._last_record = None
        try:
            self.study.mark_expose_failed(sop, reason)
        except DiosError as err:
            log.warning("could not reset %s after a failed exposure: %s", sop, err)
        self._publish(EXPOSURE_URI, EventKind.FAULT, "expose_failed",
                      (error.code.hex if error else WRONG_STATE.hex), sop_instance_uid=sop,
                      description=reason)
        self._resolve(sop, error=error or DiosError(WRONG_STATE, reason))

    def device_action(self, device_uri: str, transaction: str = "", client: str = "") -> Reply:
        """Ask a device to report itself: its status goes out as a ``state`` event."""
        parse(device_uri)
        reply = check(self.bus.request(Request(device_uri, "GetStatus", "", transaction, client)))
        self._publish(device_uri, EventKind.STATE, "status", reply.result, transaction, client,
                      **reply.data)
        return reply

    # --- selection ----------------------------------------------------------------------------
    def _context(self, sop: str) -> dict[str, Any]:
        """The study service's image context (study, patient, series, image, view)."""
        return self.study.image_context(sop)

    def _plan(self, ctx: dict[str, Any], technique: Technique,
              view: dict[str, Any]) -> ExposurePlan:
        study, series, image = ctx["study"], ctx["series"] or {}, ctx["image"]
        sop = image["sop_instance_id"]
        study_uid = study["study_instance_uid"]
        patient = {k: v for k, v in ctx["patient"].items()
                   if k in _PATIENT_KEYS and v not in (None, "")}
        patient["patient_sex"] = ctx["patient"].get("dicom_patient_sex") or "O"
        for flag in ("is_anaesthesia", "is_sedation"):
            if not ctx["patient"].get(flag):
                patient.pop(flag, None)
        if patient.get("patient_type", "Human") == "Human":
            for key in _ANIMAL_ONLY:  # the seed's forms send them for every patient
                patient.pop(key, None)
        plan = ExposurePlan(
            technique=technique, view=view, patient=patient,
            # the DICOM writer maps the 17-digit console id onto StudyID (SH, 16 chars)
            study={"study_instance_uid": study_uid, "study_id": study["study_id"],
                   "accession_number": study.get("accession_number") or "",
                   "ref_physician": study.get("ref_physician") or "",
                   "study_description": study.get("study_description") or "",
                   "study_datetime": study.get("study_start_datetime")
                   or datetime.now().isoformat(),
                   "operator_name": study.get("operator_name") or ""},
            series={"series_instance_uid": series.get("series_instance_uid", ""),
                    "series_number": int(series.get("sort") or 1),
                    "body_part": view.get("body_part") or series.get("body_part") or "",
                    "view_position": view.get("view_position", ""),
                    "protocol_name": series.get("performed_protocol_code_meaning")
                    or view.get("view_description", "")},
            image={"sop_instance_uid": sop, "instance_number": int(image.get("sort") or 1),
                   "image_laterality": view.get("laterality", "U") or "U",
                   "view_id": image.get("view_id", "")},
            dicom_path=self.images_dir / study_uid / f"{sop}.dcm",
            preview_path=self.previews_dir / f"{sop}.png",
            timeout=self.exposure_timeout,
        )
        sid = (view.get("dp") or {}).get("SID")
        if sid and getattr(self.engine, "room", None) is not None:
            from dataclasses import replace

            plan.scene = replace(self.engine.room.scene, sid_cm=float(sid))
        return plan

    def select_image(self, sop: str, transaction: str = "", client: str = "task") -> dict[str, Any]:
        """Arm image ``sop`` for the next exposure and apply its APR technique.

        Returns the technique the generator accepted. Refused with ``BUSY`` while an
        exposure is being taken or stored, ``INVALID_TRANSITION`` for an image that is
        already exposed or a completed study, ``STUDY_LOCKED`` for a locked study.
        """
        sop = check_uid(sop)
        if not self._expose_lock.acquire(timeout=0.0):
            raise DiosError(BUSY, "an exposure is running")
        try:
            return self._select(sop, transaction, client)
        finally:
            self._expose_lock.release()

    def _select(self, sop: str, transaction: str, client: str) -> dict[str, Any]:
        with self._lock:
            if self._in_flight:
                raise DiosError(BUSY, "the previous exposure is still being stored")
        ctx = self._context(sop)
        study, image = ctx["study"], ctx["image"]
        if image.get("expose_status") != "Unexposed":
            raise DiosError(INVALID_TRANSITION, f"image {sop} is {image.get('expose_status')}")
        if study.get("study_status") == "Completed":
            raise DiosError(INVALID_TRANSITION, f"study {study['study_id']} is Completed")
        if study.get("study_lock") == "Locked":
            raise DiosError(STUDY_LOCKED, study["study_id"])
        view_id = image.get("view_id", "")
        size = study.get("patient_size") or "Medium"
        tech = self.catalog.tech_params(view_id, size, self.work_station_id)
        view = dict(self.catalog.view_processing(view_id))
        view["dp"] = tech.get("dp", {})
        technique = technique_from_ep(tech["ep"])
        accepted = apply_technique(self.bus, technique, client or "task", transaction)
        plan = self._plan(ctx, accepted, view)
        plan.client_id = client or "task"
        if plan.scene is not None:
            self.engine.room.scene = plan.scene
        with self._lock:
            self._armed = Armed(sop, study["study_id"], plan, time.time())
        self._publish(EXPOSURE_URI, EventKind.STATE, "selected", sop, transaction, client,
                      study_id=study["study_id"], view_id=view_id, patient_size=size,
                      technique=asdict(accepted))
        return asdict(accepted)

    def deselect_image(self) -> None:
        """Cancel the selection: no image is armed afterwards. ``BUSY`` while an exposure
        is being taken or stored (its frame must still land in its image)."""
        with self._lock:
            if self._in_flight:
                raise DiosError(BUSY, "an exposure is being stored")
        self.disarm()

    def disarm(self) -> None:
        """Forget the armed image (the next frame would be an orphan)."""
        with self._lock:
            armed, self._armed = self._armed, None
        if armed is not None:
            self._publish(EXPOSURE_URI, EventKind.STATE, "disarmed", armed.sop_instance_uid)

    @property
    def armed(self) -> str | None:
        """The SOP instance UID the next exposure fills, if any."""
        a = self._armed
        return a.sop_instance_uid if a else None

    # --- the whole exposure in one call ----------------------------------------------------------
    def expose(self, sop: str, transaction: str = "", client: str = "task",
               timeout: float | None = None) -> dict[str, Any]:
        """Select ``sop``, prepare, expose and wait until the image is stored.

        Exposures are serialised (one X-ray room); a caller waits for the room up to
        ``timeout`` and gets ``BUSY`` after that. Returns the stored image (study
        service's image dict).
        """
        sop = check_uid(sop)
        timeout = self.exposure_timeout if timeout is None else timeout
        if not self._expose_lock.acquire(timeout=timeout):
            raise DiosError(BUSY, "the X-ray room is busy")
        tx = transaction or f"exp-{time.time_ns()}"
        fut: Future = Future()
        try:
            self._select(sop, tx, client)
            with self._lock:
                self._waiters[sop] = fut
            gen, fpd = self.engine.generator, self.engine.detector
            self._progress("prepare", 10, tx, client, sop)
            check(self.bus.call(DETECTOR, "Prepare", "", tx, client))
            check(self.bus.call(GENERATOR, "Prepare", "", tx, client))
            _wait(lambda: fpd.status_string, "DETECTOR_STATUS_READY", timeout, "detector ready")
            _wait(lambda: gen.status_string, "GENERATOR_STATUS_READY", timeout, "generator ready")
            self._progress("expose", 30, tx, client, sop)
            self.device_command({"deviceUri": GENERATOR, "reqName": "Expose", "reqParam": "",
                                 "reqTransaction": tx, "reqClientID": client})
            try:
                return fut.result(timeout)
            except FutureTimeout:
                with self._lock:
                    taken = self._armed is None or self._armed.sop_instance_uid != sop
                    if not taken:  # no frame yet: disarm, a late frame is stored nowhere
                        self._armed = None
                if not taken:
                    raise DiosError(TIMEOUT, f"no frame for image {sop} within {timeout:g} s") from None
            # the frame arrived and is being stored: the reply must say how that ended, so
            # that a client never hears TIMEOUT for an image that is then saved
            try:
                return fut.result(timeout)
            except FutureTimeout:
                raise DiosError(TIMEOUT, f"image {sop} not stored within {2 * timeout:g} s") from None
        except DiosError:
            with self._lock:
                if self._armed is not None and self._armed.sop_instance_uid == sop:
                    self._armed = None
            for uri in (GENERATOR, DETECTOR):
                if self.bus.device(uri).job_running:
                    self.bus.call(uri, "Abort", "", tx, client)
            raise
        finally:
            with self._lock:
                self._waiters.pop(sop, None)
            self._expose_lock.release()

    def _progress(self, step: str, percent: int, tx: str, client: str, sop: str) -> None:
        self._publish(EXPOSURE_URI, EventKind.PROGRESS, step, percent, tx, client,
                      sop_instance_uid=sop)

    # --- frames -> images -----------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if window_expired(ev):
            # the panel's window closed without X-rays: an exposure in flight gets no frame
            armed = self._armed
            if self._in_flight and armed is not None:
                reason = f"the detector saw no X-rays ({ev.data.get('detail', 'window closed')})"
                self._expose_failed(armed.sop_instance_uid, reason, DiosError(TIMEOUT, reason))
            return
        if ev.kind == EventKind.FAULT:
            armed = self._armed
            if self._in_flight and armed is not None:
                code = ev.data.get("code", "")
                try:
                    err = DiosError(ResultCode.from_hex(code), ev.data.get("description", ""))
                except (KeyError, ValueError):
                    err = DiosError(INTERNAL, f"{ev.deviceUri} fault {code}")
                self._expose_failed(armed.sop_instance_uid, f"{ev.deviceUri}: {ev.name}", err)
            return
        if ev.kind == EventKind.EXPOSURE and ev.deviceUri == GENERATOR:
            rec = ev.data.get("record")
            armed = self._armed
            if ev.data.get("aborted"):
                if self._in_flight and armed is not None:
                    self._expose_failed(armed.sop_instance_uid, "exposure aborted",
                                        DiosError(ABORTED))
                return
            if isinstance(rec, dict):
                names = ExposureRecord.__dataclass_fields__
                with self._lock:
                    self._last_record = ExposureRecord(**{k: v for k, v in rec.items() if k in names})
            return
        if ev.kind != EventKind.IMAGE or ev.deviceUri != DETECTOR:
            return
        frame = ev.data.get("frame")
        if not isinstance(frame, Frame) or frame.kind != "exposure":
            return
        with self._lock:
            armed, self._armed = self._armed, None
            record, self._last_record = self._last_record, None
        if armed is None:
            self.orphan_frames += 1
            log.warning("a frame arrived with no image selected; it is not stored")
            self._publish(EXPOSURE_URI, EventKind.FAULT, "orphan_frame", WRONG_STATE.hex,
                          ev.reqTransaction, ev.reqClientID, code=WRONG_STATE.hex,
                          description="frame without a selected image: not stored")
            return
        try:
            image = self._fill(armed, frame, record, ev)
        except Exception as exc:  # noqa: BLE001 - reported as an event and to the waiter
            self.failures += 1
            err = exc if isinstance(exc, DiosError) else DiosError(INTERNAL, type(exc).__name__)
            if not isinstance(exc, DiosError):
                log.exception("storing the exposure of %s failed", armed.sop_instance_uid)
            self._expose_failed(armed.sop_instance_uid, f"storing failed: {err.description()}",
                                err)
        else:
            self._resolve(armed.sop_instance_uid, image=image)
        finally:
            with self._lock:
                self._in_flight = False
                self._flight += 1

    def _resolve(self, sop: str, image: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            fut = self._waiters.get(sop)
        if fut is not None and not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(image)

    def _pipeline(self, profile: str) -> Any:
        from processing.pipeline import Pipeline

        pipe = self._pipelines.get(profile)
        if pipe is None:
            pipe = self._pipelines[profile] = Pipeline(profile or "default")
        return pipe

    def _fill(self, armed: Armed, frame: Frame, record: ExposureRecord | None,
              ev: Event) -> dict[str, Any]:
        from dios.workflow.exposure import acquisition_attributes

        plan = armed.plan
        sop = armed.sop_instance_uid
        tx, client = ev.reqTransaction, ev.reqClientID
        t0 = time.perf_counter()
        self.bus.insp_status, self.bus.insp_ready = "TASK_Processing", False
        try:
            self._progress("process", 60, tx, client, sop)
            view = plan.view
            result = process_frame(self._pipeline(view.get("img_proc_id") or "default"), frame,
                                   self.engine.detector.calibration, view)
            if record is None:
                t = plan.technique
                record = ExposureRecord(t.kv, t.ma, t.ms, t.mas, t.focus, 0.0, 0.0)
            timings = {f"pipeline.{k}": v for k, v in result.timings.items()}
            outcome = ExposureOutcome(record, frame, result, plan.technique, plan.dicom_path,
                                      plan.preview_path, timings)
            self._progress("store", 80, tx, client, sop)
            plan.dicom_path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            acquisition = _finite(acquisition_attributes(outcome, getattr(plan.scene, "sid_cm", None)))
            if view.get("TargetEXI") and "target_ei" not in acquisition:
                acquisition["target_ei"] = float(view["TargetEXI"])
            try:
                self._write_files(outcome, plan, acquisition)
            except DiosError:
                raise
            except OSError as exc:
                raise DiosError(STORAGE_ERROR, str(exc)) from None
            rel = self._relative(plan.dicom_path)
            proc = _finite({"profile": view.get("img_proc_id", ""), "ei": result.ei,
                            "di": result.di, "window_center": result.window[0],
                            "window_width": result.window[1],
                            "timings_ms": {k: round(v, 2) for k, v in timings.items()}})
            try:
                image = self.study.mark_exposed(
                    sop, acquisition, rel, self._relative(plan.preview_path),
                    ei=proc.get("ei"), di=proc.get("di"), img_proc=proc)
            except BaseException:
                # the database refused: the file must not stay behind unreferenced
                for p in (plan.dicom_path, plan.preview_path):
                    if p is not None:
                        p.unlink(missing_ok=True)
                raise
            self.exposures += 1
            self.last_outcome = outcome
            total = (time.perf_counter() - t0) * 1000.0
            self._publish(IMAGE_URI, EventKind.IMAGE, "ready", sop, tx, client,
                          study_id=armed.study_id, sop_instance_uid=sop,
                          view_id=plan.image.get("view_id", ""), image_file_path=rel,
                          ei=result.ei, di=result.di, store_ms=round(total, 2))
            self._progress("done", 100, tx, client, sop)
            return image
        finally:
            self.bus.insp_status, self.bus.insp_ready = "TASK_Ready", True

    def _write_files(self, outcome: ExposureOutcome, plan: ExposurePlan,
                     acquisition: dict[str, Any]) -> None:
        """The DICOM DX file (atomic) and the 8-bit PNG preview (atomic)."""
        from dios.dicom.dx import write_dx
        from dios.dicom.png import write_preview_png
        from dios.workflow.exposure import detector_attributes, shutter_attributes

        res = outcome.result
        shutter = shutter_attributes(outcome, plan.view)
        write_dx(plan.dicom_path, res.image, bits_stored=res.bits_stored,
                 patient=plan.patient, study=plan.study, series=plan.series,
                 image={k: v for k, v in plan.image.items() if k != "view_id"},
                 acquisition=acquisition,
                 detector=detector_attributes(outcome.frame,
                                              getattr(self.engine.detector.backend, "name", "")),
                 window=(res.window[0], res.window[1]), shutter=shutter or None)
        write_preview_png(plan.preview_path, res.preview, window=(127.5, 256.0))
        _private(plan.dicom_path, plan.preview_path)

    # --- uploads and downloads ------------------------------------------------------------------
    def upload_png(self, sop: str, data: bytes, filename: str = "") -> dict[str, Any]:
        """Turn a PNG into the DICOM file of image ``sop``; reply the seed's ``DcmPath``."""
        sop = check_uid(sop)
        if filename:
            check_file_name(filename)
        if not isinstance(data, (bytes, bytearray)):
            raise DiosError(INVALID_FIELD, "data must be a PNG file", field="data")
        if len(data) > self.max_upload:
            raise DiosError(PAYLOAD_TOO_LARGE, f"{len(data)} bytes; the limit is {self.max_upload}")
        if not bytes(data[:8]) == PNG_SIGNATURE:
            raise DiosError(UNSUPPORTED_MEDIA, "data is not a PNG file")
        ctx = self._context(sop)
        study, image = ctx["study"], ctx["image"]
        if image.get("storage_status") == "Saved" or image.get("expose_status") != "Unexposed":
            raise DiosError(INVALID_TRANSITION, f"image {sop} already has a stored file")
        if study.get("study_lock") == "Locked":
            raise DiosError(STUDY_LOCKED, study["study_id"])
        from dios.dicom.png import png_to_dx, write_preview_png
        from dios.dicom.reader import read_image

        new_uid = self.uids.instance()
        name = f"{new_uid}.dcm"
        path = self.images_dir / study["study_instance_uid"] / name
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        plan = self._plan(ctx, Technique(), dict(ctx.get("view") or {}))
        image_attrs = {k: v for k, v in plan.image.items() if k != "view_id"}
        image_attrs["sop_instance_uid"] = new_uid
        series = {k: v for k, v in plan.series.items() if k != "view_position"}
        png_to_dx(bytes(data), path, patient=plan.patient, study=plan.study, series=series,
                  image=image_attrs, max_bytes=self.max_upload)
        preview = self.previews_dir / f"{sop}.png"
        try:
            decoded = read_image(path)
            write_preview_png(preview, decoded.pixels, window=decoded.meta.get("window"),
                              max_side=2048)
            _private(path, preview)
            self.study.mark_exposed(sop, None, self._relative(path), self._relative(preview),
                                    img_proc={"source": "png-upload"},
                                    secondary_sop_uid=new_uid)
        except BaseException:
            path.unlink(missing_ok=True)
            preview.unlink(missing_ok=True)
            raise
        self._publish(IMAGE_URI, EventKind.IMAGE, "ready", sop, study_id=study["study_id"],
                      sop_instance_uid=sop, image_file_path=self._relative(path), source="upload")
        return {"path": name}

    def _relative(self, path: Path) -> str:
        """``path`` (inside the data directory) as stored: relative to the data directory,
        POSIX separators, so the data directory can move."""
        return path.resolve().relative_to(self.data_dir.resolve()).as_posix()

    def image_path(self, sop: str) -> Path:
        """The absolute path of image ``sop``'s stored DICOM file.

        Raises ``INVALID_TRANSITION`` while the image has no file, ``STORAGE_ERROR`` when
        the file is missing.
        """
        return self._stored_path(sop)[0]

    def _stored_path(self, sop: str) -> tuple[Path, dict[str, Any]]:
        sop = check_uid(sop)
        image = self._context(sop)["image"]
        rel = image.get("image_file_path") or ""
        if not rel:
            raise DiosError(INVALID_TRANSITION, f"image {sop} has no stored file yet")
        path = (self.data_dir / rel).resolve()  # absolute paths stay as they are
        if not path.is_relative_to(self.images_dir.resolve()):
            raise DiosError(BAD_FILE_NAME, "stored path outside the image directory")
        if not path.is_file():
            raise DiosError(STORAGE_ERROR, f"file of image {sop} is missing")
        return path, image

    def image_file(self, sop: str) -> tuple[bytes, str]:
        """The stored DICOM file of image ``sop``: (bytes, file name)."""
        path, _ = self._stored_path(sop)
        return path.read_bytes(), path.name

    def preview(self, sop: str) -> tuple[bytes, str]:
        """The processed 8-bit PNG preview of image ``sop``: (bytes, file name)."""
        path, _ = self._stored_path(sop)
        sop = check_uid(sop)
        prev = self.previews_dir / f"{sop}.png"
        if not prev.is_file():
            from dios.dicom.png import write_preview_png
            from dios.dicom.reader import read_image

            decoded = read_image(path)
            write_preview_png(prev, decoded.pixels, window=decoded.meta.get("window"),
                              max_side=2048)
            _private(prev)
        return prev.read_bytes(), prev.name


def _private(*paths: Path | None) -> None:
    """Patient data files: readable and writable by the server's user only (0600)."""
    for p in paths:
        if p is not None and p.exists():
            os.chmod(p, PRIVATE_FILE)


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without NaN/inf numbers (not JSON, not DICOM), recursively."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _finite(v)
        elif isinstance(v, float) and not math.isfinite(v):
            continue
        elif hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                continue
            out[k] = v
        else:
            out[k] = v
    return out


def _wait(read: Any, wanted: str, timeout: float, what: str) -> None:
    from dios.workflow.waits import wait_status

    wait_status(read, wanted, timeout, what)
