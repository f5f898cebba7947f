"""The acquisition lifecycle: one exposure, one outcome, decided in one place.

:class:`AcquisitionLifecycle` owns the exposure of study images in one X-ray room. Its
phases follow only :data:`TRANSITIONS` (a :class:`dios.fsm.StateMachine`); an event
missing for the current phase is refused and changes nothing:

========== ============== ========== ===============================================
from       event          to         what happens
========== ============== ========== ===============================================
Idle       select         Planned    image chosen, its APR technique sent and accepted
Planned    select         Planned    another image chosen instead
Planned    deselect       Idle       selection cancelled
Planned    expose         InFlight   image Exposing in the store, Expose sent
InFlight   frame          Storing    the panel's frame of *this* exposure arrived
InFlight   fail           Idle       refused, aborted, fault, missed beam, timeout:
                                     image back to Unexposed, devices stood down
Storing    stored         Idle       files written and committed: image Exposed/Saved
Storing    store_failed   Idle       pipeline or files failed: image back to Unexposed
========== ============== ========== ===============================================

Consequences the tests hold it to:

* an exposure has exactly one outcome (its :class:`Exposure` future is settled once):
  a timeout or fault that comes while the frame is being stored is not in the table
  for Storing, so the store decides; the reply a client gets is that outcome;
* a frame is taken only by the exposure in flight whose beam used the panel arm it was
  read on (the X-ray enable line's arm number); any other frame (no exposure in flight,
  a late frame after a reported failure, a frame of another arm) is kept as an
  *unassigned frame* (raw pixels in ``data_dir/unassigned/``) with a
  ``frame.unassigned`` event for the operator, never attached to an image;
* no generator Expose from the task API unless an image is planned and the panel is
  armed; beyond this module, the X-ray enable line (:mod:`dios.devices.interlock`)
  refuses beam-on for every command that reaches the generator without an armed panel.

Events (``DIOS/TASK/Exposure`` and ``DIOS/TASK/Image``, see :mod:`dios.topics`):
``exposure.planned``, ``exposure.cancelled``, ``exposure.started``, ``exposure.ended``
(the generator's post-exposure readback), ``exposure.failed``, ``image.stored``,
``frame.unassigned``, and ``progress`` steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import secrets
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dios import topics
from dios.acquisition.context import ExposureContext, ViewCatalog, build_context
from dios.acquisition.sink import FrameSink, StoredFrame, discard
from dios.acquisition.waits import wait_status
from dios.atomic import atomic_write_bytes, atomic_write_with
from dios.codes import (
    ABORTED,
    BUSY,
    INTERNAL,
    INVALID_FIELD,
    INVALID_TRANSITION,
    STUDY_LOCKED,
    TIMEOUT,
    WRONG_STATE,
    DiosError,
    ResultCode,
)
from dios.devices.backends import ExposureRecord, Frame, Technique
from dios.events import EventHub
from dios.fsm import StateMachine
from dios.messages import Event, EventKind, Reply, Request, seq_mark
from dios.uri import DETECTOR, GENERATOR

log = logging.getLogger("dios.acquisition")


class Phase(Enum):
    Idle = "Idle"
    Planned = "Planned"
    InFlight = "InFlight"
    Storing = "Storing"


P = Phase

#: The lifecycle's transition table (see the module docstring).
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (P.Idle, "select"): P.Planned,
    (P.Planned, "select"): P.Planned,
    (P.Planned, "deselect"): P.Idle,
    (P.Planned, "expose"): P.InFlight,
    (P.InFlight, "frame"): P.Storing,
    (P.InFlight, "fail"): P.Idle,
    (P.Storing, "stored"): P.Idle,
    (P.Storing, "store_failed"): P.Idle,
}


class StudyRecords(Protocol):
    """What the lifecycle needs from the study service (its image transitions)."""

    def image_context(self, sop_uid: str) -> dict[str, Any]: ...
    def mark_exposing(self, sop_uid: str) -> dict[str, Any]: ...
    def mark_expose_failed(self, sop_uid: str, reason: str = "") -> dict[str, Any]: ...
    def mark_exposed(self, sop_uid: str, acquisition: dict[str, Any] | None = None,
                     file_path: str | None = None, preview_path: str = "",
                     ei: float | None = None, di: float | None = None,
                     img_proc: dict[str, Any] | None = None) -> dict[str, Any]: ...


class Room(Protocol):
    """What the lifecycle needs from the engine."""

    bus: Any
    hub: EventHub
    generator: Any
    detector: Any
    xray_enable: Any

    def set_geometry(self, sid_cm: float | None) -> None: ...


@dataclass
class Exposure:
    """One exposure in flight; its :attr:`outcome` future is settled exactly once."""

    id: str
    ctx: ExposureContext
    client: str
    start_seq: int
    arm: int
    started: float = field(default_factory=time.monotonic)
    record: ExposureRecord | None = None
    outcome: Future = field(default_factory=Future)
    timer: threading.Timer | None = None

    @property
    def sop(self) -> str:
        return self.ctx.sop_instance_uid

    def settle(self, image: Any = None, error: DiosError | None = None) -> bool:
        """Set the one outcome; False if it was already set."""
        try:
            if error is not None:
                self.outcome.set_exception(error)
            else:
                self.outcome.set_result(image)
        except Exception:  # noqa: BLE001 - InvalidStateError: already settled
            return False
        if self.timer is not None:
            self.timer.cancel()
        return True


_ids = itertools.count(1)


class AcquisitionLifecycle:
    """The exposure lifecycle of one room (see the module docstring).

    Parameters
    ----------
    room : Room
        The engine: bus, hub, generator and detector devices, X-ray enable line.
    records : StudyRecords
        The study service (image context and the Exposing/Exposed/Unexposed transitions).
    catalog : ViewCatalog
        Views and APR techniques.
    data_dir : path
        Images go to ``images/<study uid>/``, previews to ``previews/``, unassigned frames
        to ``unassigned/``; the store records paths relative to ``data_dir``.
    work_station_id : int
        The work station whose APR techniques apply.
    exposure_timeout : float
        Seconds from Expose to the frame before the exposure fails (TIMEOUT); an exposure
        whose frame is being stored is never timed out: the store decides.
    site : dict, optional
        DICOM attributes of the site for every image (``InstitutionName``, ``StationName``).
    """

    def __init__(self, room: Room, records: StudyRecords, catalog: ViewCatalog,
                 data_dir: str | Path, *, work_station_id: int = 1,
                 exposure_timeout: float = 60.0, site: dict[str, str] | None = None) -> None:
        from dios.store.files import make_private

        self.room = room
        self.bus = room.bus
        self.hub = room.hub
        self.records = records
        self.catalog = catalog
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.previews_dir = self.data_dir / "previews"
        self.unassigned_dir = self.data_dir / "unassigned"
        make_private(self.data_dir, ("images", "previews", "unassigned"))
        self.work_station_id = work_station_id
        self.exposure_timeout = exposure_timeout
        self.sink = FrameSink(getattr(room.detector.backend, "name", ""), site)
        self.fsm = StateMachine("Acquisition", TRANSITIONS, P.Idle, self._changed)
        self._lock = threading.RLock()
        self._room_lock = threading.Lock()  # whole exposures (run) one at a time
        self._planned: ExposureContext | None = None
        self._current: Exposure | None = None
        #: counters (tests, benches, status)
        self.stored = 0
        self.failed = 0
        self.unassigned = 0
        self.last_stored: StoredFrame | None = None
        self._sub = self.hub.subscribe(
            "DIOS/DEVICE/*", handler=self._on_event,
            kinds=[EventKind.EXPOSURE, EventKind.IMAGE, EventKind.FAULT, EventKind.PARAM,
                   EventKind.STATE])

    def close(self) -> None:
        """Stop listening to the devices."""
        self._sub.close()

    # --- state --------------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self.fsm.state  # type: ignore[return-value]

    @property
    def planned(self) -> str | None:
        """The SOP instance UID the next exposure fills, if any."""
        ctx = self._planned
        return ctx.sop_instance_uid if ctx is not None and self.phase is P.Planned else None

    @property
    def current(self) -> Exposure | None:
        """The exposure in flight or being stored."""
        return self._current

    def _changed(self, old: Enum, new: Enum, event: str) -> None:
        self.bus.insp_status, self.bus.insp_ready = (
            ("TASK_Processing", False) if new is P.Storing else ("TASK_Ready", True))

    def _publish(self, uri: str, kind: str, name: str, value: object = "", tx: str = "",
                 client: str = "", **data: Any) -> None:
        self.hub.publish(Event(uri, kind, name, str(value), data, tx, client))

    def progress(self, step: str, percent: int, tx: str, client: str, sop: str) -> None:
        self._publish(topics.EXPOSURE_URI, EventKind.PROGRESS, step, percent, tx, client,
                      sop_instance_uid=sop)

    # --- planning -----------------------------------------------------------------------------
    def context(self, sop: str, with_technique: bool = True) -> ExposureContext:
        """The typed context of image ``sop`` (study, patient, view, technique, paths)."""
        return build_context(self.records, self.catalog, sop,
                             work_station_id=self.work_station_id, images_dir=self.images_dir,
                             previews_dir=self.previews_dir, with_technique=with_technique)

    def select(self, sop: str, tx: str = "", client: str = "task",
               override: dict[str, Any] | None = None, *, _run: bool = False) -> Technique:
        """Plan image ``sop`` for the next exposure and send its APR technique.

        ``override`` replaces fields of the APR technique (``kv``, ``mas``, ``mode``...,
        as :class:`~dios.devices.backends.Technique` names them). Returns the technique
        the generator accepted. ``BUSY`` while an exposure is in
        flight or being stored; ``INVALID_TRANSITION`` for an image already exposed or a
        completed study; ``STUDY_LOCKED`` for a locked study.
        """
        if not self.fsm.can("select"):
            raise DiosError(BUSY, f"an exposure is {self.phase.value}")
        if not _run and self._room_lock.locked():
            raise DiosError(BUSY, "a whole exposure is under way")
        raw = self.records.image_context(sop)
        study, image = raw["study"], raw["image"]
        if image.get("expose_status") != "Unexposed":
            raise DiosError(INVALID_TRANSITION, f"image {sop} is {image.get('expose_status')}")
        if study.get("study_status") == "Completed":
            raise DiosError(INVALID_TRANSITION, f"study {study['study_id']} is Completed")
        if study.get("study_lock") == "Locked":
            raise DiosError(STUDY_LOCKED, study["study_id"])
        ctx = self.context(sop)
        wanted = ctx.technique
        if override:
            try:
                wanted = dataclasses.replace(wanted, **override)
            except TypeError as exc:
                raise DiosError(INVALID_FIELD, f"technique override: {exc}") from None
        accepted = apply_technique(self.bus, wanted, client or "task", tx)
        ctx = ctx.with_technique(accepted)
        with self._lock:
            if not self.fsm.can("select"):
                raise DiosError(BUSY, f"an exposure is {self.phase.value}")
            self.room.set_geometry(ctx.view.sid_cm)
            self._planned = ctx
            self.fsm.fire("select")
        self._publish(topics.EXPOSURE_URI, EventKind.STATE, topics.EXPOSURE_PLANNED, sop, tx,
                      client, study_id=ctx.study_id, view_id=ctx.view.view_id,
                      technique=dataclasses.asdict(accepted))
        return accepted

    def deselect(self) -> None:
        """Cancel the plan; ``BUSY`` while an exposure is in flight or being stored (its
        frame must still land in its image)."""
        with self._lock:
            if self.phase in (P.InFlight, P.Storing):
                raise DiosError(BUSY, f"an exposure is {self.phase.value}")
            ctx, self._planned = self._planned, None
            self.fsm.fire_if("deselect")
        if ctx is not None:
            self._publish(topics.EXPOSURE_URI, EventKind.STATE, topics.EXPOSURE_CANCELLED,
                          ctx.sop_instance_uid, study_id=ctx.study_id)

    # --- exposing -----------------------------------------------------------------------------
    def expose_command(self, req: Request, sop: str | None = None) -> tuple[Reply, Exposure | None]:
        """The generator's ``Expose`` for the planned image (from a client or :meth:`run`).

        Refused with ``WRONG_STATE`` unless an image is planned and the panel is armed,
        ``BUSY`` while an exposure is in flight or being stored. With ``sop``, refused
        (``WRONG_STATE``) unless that image is the one planned. On acceptance the image
        is Exposing and the exposure's watchdog runs; a device refusal fails it at once.
        """
        with self._lock:
            if self.phase in (P.InFlight, P.Storing):
                raise DiosError(BUSY, "the previous exposure is still in flight or being stored")
            if self.phase is not P.Planned or self._planned is None:
                raise DiosError(WRONG_STATE, "select the image to expose first")
            if sop is not None and self._planned.sop_instance_uid != sop:
                raise DiosError(WRONG_STATE, f"image {sop} is no longer the one selected")
            line = self.room.xray_enable
            if line is not None and not line.enabled:
                panel = self.room.detector.status_string
                raise DiosError(WRONG_STATE, f"the detector is not armed ({panel}): "
                                             "prepare it before exposing")
            ctx = self._planned
            self.records.mark_exposing(ctx.sop_instance_uid)
            exp = Exposure(req.reqTransaction or f"exp-{next(_ids)}", ctx,
                           req.reqClientID, seq_mark(), line.arm_number if line else 0)
            self._current = exp
            self._planned = None
            self.fsm.fire("expose")
        self._publish(topics.EXPOSURE_URI, EventKind.STATE, topics.EXPOSURE_STARTED, exp.sop,
                      req.reqTransaction, req.reqClientID, study_id=ctx.study_id,
                      exposure_id=exp.id, technique=dataclasses.asdict(ctx.technique))
        reply = self.bus.request(req)
        if not reply.ok:
            try:
                code = ResultCode.from_hex(reply.code)
            except (KeyError, ValueError):
                code = INTERNAL
            self.fail(exp, DiosError(code, f"Expose refused: {reply.description}"))
        else:
            self._watch(exp)
        return reply, exp

    def _watch(self, exp: Exposure) -> None:
        timer = threading.Timer(self.exposure_timeout, self.fail, (exp, DiosError(
            TIMEOUT, f"no frame arrived within {self.exposure_timeout:g} s of the exposure")))
        timer.daemon = True
        exp.timer = timer
        if not exp.outcome.done():
            timer.start()

    def fail(self, exp: Exposure, error: DiosError) -> bool:
        """Fail ``exp`` if it is still in flight; False (nothing changed) otherwise: an
        exposure whose frame is being stored is decided by the store."""
        with self._lock:
            if self._current is not exp or not self.fsm.can("fail"):
                return False
            self.fsm.fire("fail")
            self._current = None
            try:
                self.records.mark_expose_failed(exp.sop, error.description())
            except DiosError as err:
                log.warning("could not reset %s after a failed exposure: %s", exp.sop, err)
        self._failed(exp, error)
        self.stand_down(exp.id, exp.client)
        return True

    def _failed(self, exp: Exposure, error: DiosError) -> None:
        self.failed += 1
        self._publish(topics.EXPOSURE_URI, EventKind.FAULT, topics.EXPOSURE_FAILED,
                      error.code.hex, exp.id, exp.client, study_id=exp.ctx.study_id,
                      sop_instance_uid=exp.sop, code=error.code.hex,
                      description=error.description())
        exp.settle(error=error)

    def stand_down(self, tx: str = "", client: str = "task") -> None:
        """Abort whatever is still preparing, armed or exposing (best effort)."""
        for uri, busy in ((GENERATOR, ("PREPARE", "READY", "EXPOSURE")),
                          (DETECTOR, ("READY", "ACQUIRING", "READOUT"))):
            try:
                if self.bus.device(uri).status_string.rsplit("_", 1)[-1] in busy:
                    self.bus.call(uri, "Abort", "", tx, client)
            except DiosError:
                pass

    def run(self, sop: str, tx: str = "", client: str = "task",
            timeout: float | None = None, override: dict[str, Any] | None = None) -> Any:
        """One whole exposure of image ``sop``: plan, prepare, all ready, expose, store.

        Exposures are serialised (one room): a caller waits for the room up to
        ``timeout`` and gets ``BUSY`` after that. Returns the stored image (the study
        service's image dict), or raises the exposure's one failure.
        """
        timeout = self.exposure_timeout if timeout is None else timeout
        if not self._room_lock.acquire(timeout=timeout):
            raise DiosError(BUSY, "the X-ray room is busy")
        tx = tx or f"exp-{time.time_ns()}"
        exp: Exposure | None = None
        try:
            self.select(sop, tx, client, override, _run=True)
            gen, fpd = self.room.generator, self.room.detector
            self.progress("prepare", 10, tx, client, sop)
            check(self.bus.call(DETECTOR, "Prepare", "", tx, client))
            check(self.bus.call(GENERATOR, "Prepare", "", tx, client))
            gone = ("STANDBY", "ERROR", "DISCONNECTED", "INIT")
            wait_status(lambda: fpd.status_string, "DETECTOR_STATUS_READY", timeout,
                        "detector ready", fail_on=tuple(f"DETECTOR_STATUS_{s}" for s in gone))
            wait_status(lambda: gen.status_string, "GENERATOR_STATUS_READY", timeout,
                        "generator ready", fail_on=tuple(f"GENERATOR_STATUS_{s}" for s in gone))
            self.progress("expose", 30, tx, client, sop)
            reply, exp = self.expose_command(Request(GENERATOR, "Expose", "", tx, client), sop)
            check(reply)
            return self.outcome(exp, timeout)
        except DiosError:
            if exp is None:
                with self._lock:
                    if self._planned is not None and self._planned.sop_instance_uid == sop:
                        self._planned = None
                        self.fsm.fire_if("deselect")
                self.stand_down(tx, client)
            raise
        finally:
            self._room_lock.release()

    def outcome(self, exp: Exposure, timeout: float) -> Any:
        """Wait for ``exp``'s one outcome. After ``timeout`` without a frame the exposure
        fails (TIMEOUT); once its frame is being stored, the store's result is waited for
        (the reply never says TIMEOUT for an image that is then saved)."""
        try:
            return exp.outcome.result(timeout)
        except FutureTimeout:
            pass
        self.fail(exp, DiosError(TIMEOUT, f"no frame for image {exp.sop} within {timeout:g} s"))
        try:
            return exp.outcome.result(max(600.0, 10 * timeout))
        except FutureTimeout:
            raise DiosError(BUSY, f"image {exp.sop} is still being stored; its outcome will be "
                                  "announced as an event") from None

    # --- device events ------------------------------------------------------------------------
    def _mine(self, ev: Event) -> Exposure | None:
        """The exposure in flight that ``ev`` (published after it started) may concern."""
        exp = self._current
        if exp is None or ev.seq <= exp.start_seq:
            return None
        return exp

    def _on_event(self, ev: Event) -> None:
        if ev.kind == EventKind.IMAGE and ev.deviceUri == DETECTOR:
            frame = ev.data.get("frame")
            if isinstance(frame, Frame) and frame.kind == "exposure":
                self._on_frame(ev, frame)
            return
        exp = self._mine(ev)
        if exp is None:
            return
        if ev.kind == EventKind.STATE:
            # the panel stood down by a command: no frame will come for this exposure
            trigger = ev.data.get("trigger")
            if ev.deviceUri == DETECTOR and trigger in ("abort", "disconnect", "trigger"):
                self.fail(exp, DiosError(ABORTED, f"the detector was stood down ({trigger}) "
                                                  "before its frame"))
            return
        if ev.kind == EventKind.PARAM:
            if ev.deviceUri == DETECTOR and ev.name == "Window" and ev.value == "expired":
                why = f"the detector saw no X-rays ({ev.data.get('detail', 'window closed')})"
                self.fail(exp, DiosError(TIMEOUT, why))
            return
        if ev.kind == EventKind.FAULT:
            code = ev.data.get("code", "")
            try:
                err = DiosError(ResultCode.from_hex(code),
                                f"{ev.deviceUri}: {ev.data.get('description', ev.name)}")
            except (KeyError, ValueError):
                err = DiosError(INTERNAL, f"{ev.deviceUri} fault {code}")
            self.fail(exp, err)
            return
        if ev.kind == EventKind.EXPOSURE and ev.deviceUri == GENERATOR:
            if ev.data.get("aborted"):
                self.fail(exp, DiosError(ABORTED, "the exposure was aborted"))
                return
            rec = ev.data.get("record")
            if isinstance(rec, dict):
                names = ExposureRecord.__dataclass_fields__
                record = ExposureRecord(**{k: v for k, v in rec.items() if k in names})
                with self._lock:
                    if self._current is exp:
                        exp.record = record
                self._publish(topics.EXPOSURE_URI, EventKind.EXPOSURE, topics.EXPOSURE_ENDED,
                              exp.sop, exp.id, exp.client, study_id=exp.ctx.study_id,
                              record=dataclasses.asdict(record))

    def _on_frame(self, ev: Event, frame: Frame) -> None:
        with self._lock:
            exp = self._mine(ev)
            arm = ev.data.get("arm")
            if exp is not None and (not exp.arm or arm == exp.arm) and self.fsm.can("frame"):
                self.fsm.fire("frame")
                if exp.timer is not None:
                    exp.timer.cancel()
            else:
                exp = None
        if exp is None:
            self._keep_unassigned(ev, frame)
            return
        threading.Thread(target=self._store, args=(exp, frame, ev), daemon=True,
                         name=f"dios-store-{exp.id}").start()

    # --- storing ------------------------------------------------------------------------------
    def _store(self, exp: Exposure, frame: Frame, ev: Event) -> None:
        sop, tx, client = exp.sop, exp.id, exp.client
        stored: StoredFrame | None = None
        try:
            self.progress("process", 60, tx, client, sop)
            stored = self.sink.process(exp.ctx, frame, exp.record,
                                       self.room.detector.calibration)
            self.progress("store", 80, tx, client, sop)
            ctx = exp.ctx
            rel, prev = self.relative(ctx.dicom_path), self.relative(ctx.preview_path)
            with self._lock:
                image = self.records.mark_exposed(
                    sop, stored.acquisition, rel, prev, ei=stored.img_proc.get("ei"),
                    di=stored.img_proc.get("di"), img_proc=stored.img_proc)
                self.fsm.fire("stored")
                self._current = None
        except Exception as exc:  # noqa: BLE001 - every failure is this exposure's outcome
            if isinstance(exc, DiosError):
                err = exc
            else:
                incident = secrets.token_hex(4)
                log.exception("incident %s: storing the exposure of %s failed", incident, sop)
                err = DiosError(INTERNAL, f"incident {incident}")
            discard(exp.ctx)
            with self._lock:
                self.fsm.fire_if("store_failed")
                self._current = None
                try:
                    self.records.mark_expose_failed(sop, f"storing failed: {err.description()}")
                except DiosError as e2:
                    log.warning("could not reset %s after a failed store: %s", sop, e2)
            self._failed(exp, err)
            self._keep_unassigned(ev, frame)  # the dose was given: keep what it produced
            return
        self.stored += 1
        self.last_stored = stored
        self._publish(topics.IMAGE_URI, EventKind.IMAGE, topics.IMAGE_STORED, sop, tx, client,
                      study_id=exp.ctx.study_id, sop_instance_uid=sop,
                      view_id=exp.ctx.view.view_id, image_file_path=rel, ei=stored.result.ei,
                      di=stored.result.di,
                      store_ms=round((time.monotonic() - exp.started) * 1000.0, 2))
        self.progress("done", 100, tx, client, sop)
        exp.settle(image=image)

    def _keep_unassigned(self, ev: Event, frame: Frame) -> None:
        """A frame no exposure in flight may take: kept with its metadata, announced."""
        self.unassigned += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{ev.seq}"
        path = self.unassigned_dir / f"{name}.npy"
        meta = {"time": time.time(), "seq": ev.seq, "arm": ev.data.get("arm"),
                "transaction": ev.reqTransaction, "client": ev.reqClientID,
                "mode": frame.mode.name, "shape": list(frame.pixels.shape),
                "meta": {k: v for k, v in frame.meta.items()
                         if isinstance(v, (str, int, float, bool))}}
        try:
            atomic_write_with(path, lambda f: np.save(f, frame.pixels, allow_pickle=False))
            atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta).encode())
            where = self.relative(path)
        except OSError as exc:
            log.error("could not keep an unassigned frame: %s", exc)
            where = ""
        log.warning("a frame arrived that no exposure in flight may take: kept as %s", where)
        self._publish(topics.EXPOSURE_URI, EventKind.FAULT, topics.FRAME_UNASSIGNED,
                      WRONG_STATE.hex, ev.reqTransaction, ev.reqClientID, code=WRONG_STATE.hex,
                      description="a frame with no exposure in flight to take it: kept "
                                  "unassigned", path=where)

    def relative(self, path: Path | None) -> str:
        """``path`` (inside the data directory) as stored: relative, POSIX separators."""
        if path is None:
            return ""
        return path.resolve().relative_to(self.data_dir.resolve()).as_posix()


def check(reply: Reply) -> Reply:
    """The reply, or its own code raised as :class:`DiosError`."""
    return reply.raise_for_error()


def apply_technique(bus: Any, t: Technique, client: str = "task", transaction: str = "") -> Technique:
    """Send a technique to the generator; return what it accepted."""

    def setp(name: str, value: object) -> str:
        return check(bus.call(GENERATOR, f"SetParam_{name}", value, transaction, client)).result

    setp("Technique", t.mode)
    setp("Focus", t.focus)
    kv = float(setp("KV", f"{t.kv:g}"))
    if t.mode == 0:
        setp("MA", f"{t.ma:g}")
        setp("MS", f"{t.ms:g}")
    elif t.mode == 1:
        setp("MAS", f"{t.mas:g}")
    else:
        setp("AECField", t.aec_field)
        setp("AECDensity", t.aec_density)
        setp("MAS", f"{t.mas:g}")  # back-up mAs for AEC
    got = {p: float(check(bus.call(GENERATOR, f"GetParam_{p}", "", transaction, client)).result)
           for p in ("MA", "MS", "MAS")}
    return Technique(kv=kv, ma=got["MA"], ms=got["MS"], mas=got["MAS"], mode=t.mode,
                     focus=t.focus, aec_field=t.aec_field, aec_density=t.aec_density)
