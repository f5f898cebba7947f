"""The study service: studies, series and images, persisted, with the seed's reply shapes.

A study is registered with its views: the views of one procedure form one series, a view
chosen directly (empty ``procedure_id``) forms a series of its own, and every view gets
one image. Names and descriptions come from the protocol catalog in the caller's
language. Later requests append views (new series), retake an image (a new image for the
same view in the same series; the old one is kept, judged ``Rejected``), delete images,
judge, complete and lock.

Every mutation runs in one database transaction that first locks the study's row, then
checks, then writes: concurrent requests on one study are serialised, nothing is half
done, and an error leaves the stored state exactly as it was. ``update`` also takes the
``expected_version`` a client read (``CONFLICT`` when stale), for optimistic concurrency.

The acquisition lifecycle drives the exposure statuses through
:meth:`StudyService.mark_exposing`, :meth:`~StudyService.mark_exposed` (from Exposing only)
and :meth:`~StudyService.mark_expose_failed`; an imported file lands with
:meth:`~StudyService.mark_imported` (from Unexposed only). It reads what it needs for the
DICOM file with :meth:`~StudyService.image_context`. Status fields only move along
:data:`dios.study.model.TRANSITIONS`.

After each commit the change is published on the engine's event hub as a named lifecycle
event on ``DIOS/STUDY/<study_id>`` (:mod:`dios.topics`: ``study.registered``,
``study.updated``, ``study.completed``, ``study.deleted``, ``image.updated``,
``image.deleted``, ``images.created``), the same envelope every subscriber gets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dios.codes import (
    CATALOG_NOT_FOUND,
    CONFLICT,
    DUPLICATE,
    IMAGE_NOT_FOUND,
    INVALID_FIELD,
    INVALID_TRANSITION,
    MISSING_FIELD,
    STORAGE_ERROR,
    STUDY_LOCKED,
    STUDY_NOT_FOUND,
    DiosError,
)
from dios.store.db import Database, Transaction
from dios.study.model import (
    CREATED_IMAGE_FIELDS,
    IMAGE_FIELDS,
    INITIAL,
    JSON_IMAGE_FIELDS,
    RECOVERY,
    SERIES_FIELDS,
    STUDY_BOOL_FIELDS,
    STUDY_FIELDS,
    STUDY_STATUSES,
    check_transition,
)
from dios.study.validation import (
    FIELD_RULES,
    parse_iso_datetime,
    validate_study_fields,
    validate_views,
)
from dios.uids import UidFactory, uid_problem

if TYPE_CHECKING:
    from dios.catalog.service import CatalogService
    from dios.events import EventHub

log = logging.getLogger("dios.study")

__all__ = ["StudyService"]

TYPE = "type.googleapis.com/dr.study."


def _empty() -> dict[str, Any]:
    """``google.protobuf.Empty`` as the seed shows it (a fresh dict each time)."""
    return {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}}


PRODUCTS = ("DROS", "VETDROS")
#: Status fields for which asking for the current value again is a harmless no-op.
_IDEMPOTENT = frozenset({"judged_status", "study_status", "study_lock"})
_MAX_PAGE_SIZE = 200


def iso_utc(dt: datetime) -> str:
    """``2025-06-25T06:33:39.420606Z``: the seed's date-time format."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, datetime):
        return iso_utc(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _as_language(language: Any) -> str:
    return "zh" if isinstance(language, str) and language.lower().startswith("zh") else "en"


class StudyService:
    """Studies, series and images over a :class:`~dios.store.db.Database`.

    Parameters
    ----------
    db : Database
        Where studies live.
    catalog : CatalogService
        Checks views and procedures and names them (``view(view_id, product, language)``,
        ``procedure(procedure_id, product, language)``).
    uids : UidFactory
        Makes study, series and SOP instance UIDs under the organisation root.
    product : str
        ``DROS`` or ``VETDROS``: the default product of new studies.
    data_dir : path, optional
        Image files inside it are removed when their study or image is deleted (files
        elsewhere are never touched).
    clock : callable, optional
        Returns the current time as an aware ``datetime`` (tests inject one).
    tz : tzinfo, optional
        The site's time zone for study ids and date-range searches (default: local).
    hub : EventHub, optional
        Where committed changes are published (the engine's hub; a private one if None).
    """

    def __init__(self, db: Database, catalog: CatalogService, uids: UidFactory, *, product: str = "DROS",
                 data_dir: str | os.PathLike[str] | None = None,
                 clock: Callable[[], datetime] | None = None, tz: tzinfo | None = None,
                 station: str = "", hub: EventHub | None = None) -> None:
        if product not in PRODUCTS:
            raise ValueError(f"product must be one of {PRODUCTS}")
        self.db = db
        self.catalog = catalog
        self.uids = uids
        self.product = product
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        #: this console's station name: recorded on images it exposes (see :meth:`recover`)
        self.station = station
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tz = tz or datetime.now().astimezone().tzinfo
        self._id_lock = threading.Lock()
        self._last_id_ms = 0
        if hub is None:
            from dios.events import EventHub

            hub = EventHub()
        self.hub = hub

    # -- events ----------------------------------------------------------------------------
    def _emit(self, kind: str, **data: Any) -> None:
        """Publish a committed change (never raises: the change is already committed)."""
        from dios.messages import Event, EventKind
        from dios.topics import study_uri

        study_id = str(data.get("study_id", ""))
        try:
            self.hub.publish(Event(study_uri(study_id), EventKind.STATE, kind, study_id, data))
        except Exception:  # noqa: BLE001 - a publication never undoes a committed change
            log.exception("publishing %s failed", kind)

    # -- time and ids ----------------------------------------------------------------------
    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def _new_study_id(self) -> str:
        """``YYYYMMDDhhmmssfff`` in site time, strictly increasing within the process."""
        with self._id_lock:
            ms = int(self._now().timestamp() * 1000)
            ms = max(ms, self._last_id_ms + 1)
            self._last_id_ms = ms
        local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(self._tz)
        return local.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"

    # -- row access ------------------------------------------------------------------------
    @staticmethod
    def _check_id(value: Any, name: str = "study_id") -> str:
        if value is None or value == "":
            raise DiosError(MISSING_FIELD, name, field=name)
        if not isinstance(value, str) or len(value) > 64:
            raise DiosError(INVALID_FIELD, f"{name} must be a string of at most 64 characters",
                            field=name)
        return value

    def _study_row(self, tx: Transaction, study_id: Any, lock: bool = False) -> dict[str, Any]:
        study_id = self._check_id(study_id)
        row = (tx.lock("studies", "study_id", study_id) if lock else
               tx.query_one("SELECT * FROM studies WHERE study_id = ?", [study_id]))
        if row is None:
            raise DiosError(STUDY_NOT_FOUND, study_id, study_id=study_id)
        return row

    def _image_row(self, tx: Transaction, sop_uid: Any) -> dict[str, Any]:
        sop_uid = self._check_id(sop_uid, "instance_uid")
        row = tx.query_one("SELECT * FROM images WHERE sop_instance_id = ?", [sop_uid])
        if row is None:
            raise DiosError(IMAGE_NOT_FOUND, sop_uid, instance_uid=sop_uid)
        return row

    def _lock_image(self, tx: Transaction, sop_uid: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Lock the image's study, then read the image (stable while the lock is held)."""
        first = self._image_row(tx, sop_uid)
        study = self._study_row(tx, first["study_id"], lock=True)
        return study, self._image_row(tx, sop_uid)

    @staticmethod
    def _unlocked(study: dict[str, Any]) -> None:
        if study["study_lock"] == "Locked":
            raise DiosError(STUDY_LOCKED, study["study_id"], study_id=study["study_id"])

    # -- shaping ---------------------------------------------------------------------------
    @staticmethod
    def _study_top(row: dict[str, Any]) -> dict[str, Any]:
        return {f: (bool(row[f]) if f in STUDY_BOOL_FIELDS else row[f]) for f in STUDY_FIELDS}

    @staticmethod
    def _series_dict(row: dict[str, Any]) -> dict[str, Any]:
        out = {f: row[f] for f in SERIES_FIELDS}
        out["is_pre_install"] = bool(out["is_pre_install"])
        return out

    @staticmethod
    def _image_dict(row: dict[str, Any], fields: tuple[str, ...] = IMAGE_FIELDS) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields:
            v = row[f]
            if f in JSON_IMAGE_FIELDS:
                v = None if v is None else json.loads(v)
            elif f == "is_pre_install":
                v = bool(v)
            out[f] = v
        return out

    def _assemble(self, tx: Transaction, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Full study dicts (with series and images) for ``rows``, in their order."""
        if not rows:
            return []
        ids = [r["study_id"] for r in rows]
        marks = ", ".join("?" for _ in ids)
        series = tx.query(f"SELECT * FROM series WHERE study_id IN ({marks}) "
                          "ORDER BY sort, series_instance_uid", ids)
        images = tx.query(f"SELECT * FROM images WHERE study_id IN ({marks}) "
                          "ORDER BY sort, sop_instance_id", ids)
        by_series: dict[str, list[dict[str, Any]]] = {}
        for im in images:
            by_series.setdefault(im["series_instance_uid"], []).append(self._image_dict(im))
        by_study: dict[str, list[dict[str, Any]]] = {}
        for se in series:
            d = self._series_dict(se)
            d["images"] = by_series.get(se["series_instance_uid"], [])
            by_study.setdefault(se["study_id"], []).append(d)
        out = []
        for r in rows:
            d = self._study_top(r)
            d["series"] = by_study.get(r["study_id"], [])
            out.append(d)
        return out

    def _full(self, tx: Transaction, study_id: str, type_name: str) -> dict[str, Any]:
        row = self._study_row(tx, study_id)
        return {"@type": TYPE + type_name, **self._assemble(tx, [row])[0]}

    def _created_reply(self, tx: Transaction, sop_uids: list[str]) -> dict[str, Any]:
        """``dr.study.CreateImageReply``: the series holding ``sop_uids`` with just those."""
        marks = ", ".join("?" for _ in sop_uids)
        images = tx.query(f"SELECT * FROM images WHERE sop_instance_id IN ({marks}) ORDER BY sort",
                          sop_uids)
        series_uids: list[str] = []
        for im in images:
            if im["series_instance_uid"] not in series_uids:
                series_uids.append(im["series_instance_uid"])
        out = []
        for su in series_uids:
            se = tx.query_one("SELECT * FROM series WHERE series_instance_uid = ?", [su])
            d = self._series_dict(se)
            d["images"] = [self._image_dict(im, CREATED_IMAGE_FIELDS) for im in images
                           if im["series_instance_uid"] == su]
            out.append(d)
        out.sort(key=lambda s: s["sort"])
        return {"@type": TYPE + "CreateImageReply", "series": out}

    # -- catalog ---------------------------------------------------------------------------
    def _catalog_call(self, where: str, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        try:
            got = fn(*args)
        except DiosError as exc:
            raise DiosError(exc.code, f"{where}: {exc.detail or exc.code.description}",
                            field=where) from exc
        if not isinstance(got, dict):
            raise DiosError(CATALOG_NOT_FOUND, f"{where}: {args[0]}", field=where)
        return got

    def _resolve_views(self, views: list[tuple[str, str]], product: str, language: str,
                       name: str = "views") -> list[list[tuple[dict[str, Any], dict | None]]]:
        """Check every view (and procedure) against the catalog; group them into series."""
        groups: dict[str, list[tuple[dict[str, Any], dict | None]]] = {}
        procedures: dict[str, dict[str, Any]] = {}
        for i, (view_id, procedure_id) in enumerate(views):
            view = self._catalog_call(f"{name}[{i}].view_id", self.catalog.view, view_id,
                                      product, language)
            if view.get("is_enabled") is False:
                raise DiosError(INVALID_FIELD, f"{name}[{i}].view_id: view {view_id} is disabled",
                                field=f"{name}[{i}].view_id")
            proc = None
            if procedure_id:
                if procedure_id not in procedures:
                    procedures[procedure_id] = self._catalog_call(
                        f"{name}[{i}].procedure_id", self.catalog.procedure, procedure_id,
                        product, language)
                proc = procedures[procedure_id]
                members = getattr(self.catalog, "procedure_view_ids", None)
                if members is not None and view_id not in members(procedure_id):
                    raise DiosError(INVALID_FIELD, f"{name}[{i}].view_id: {view_id} is not a view "
                                    f"of procedure {procedure_id}", field=f"{name}[{i}].view_id")
                key = "P:" + procedure_id
            else:
                key = f"V:{i}"
            groups.setdefault(key, []).append((view, proc))
        return list(groups.values())

    def _insert_groups(self, tx: Transaction, study: dict[str, Any],
                       groups: list[list[tuple[dict[str, Any], dict | None]]],
                       now: str) -> list[str]:
        """Insert one series per group and one image per view; return the new SOP UIDs."""
        sid = study["study_id"]
        agg = tx.query_one("SELECT COALESCE(MAX(sort), 0) AS m FROM series WHERE study_id = ?",
                           [sid])
        series_sort = int(agg["m"]) if agg else 0
        agg = tx.query_one("SELECT COALESCE(MAX(sort), 0) AS m FROM images WHERE study_id = ?",
                           [sid])
        image_sort = int(agg["m"]) if agg else 0
        created: list[str] = []
        for group in groups:
            first_view, proc = group[0]
            series_sort += 1
            series_uid = self.uids.series()
            tx.insert("series", {
                "series_instance_uid": series_uid, "study_id": sid,
                "study_instance_uid": study["study_instance_uid"],
                "procedure_id": proc.get("procedure_id", "") if proc else "",
                "body_part": (proc or first_view).get("body_part_id", "")
                or first_view.get("body_part_id", ""),
                "performed_datetime": None,
                "performed_protocol_code_meaning": proc.get("procedure_name", "") if proc else "",
                "performed_protocol_code_value": (proc.get("procedure_code")
                                                  or proc.get("procedure_id", "")) if proc else "",
                "sort": series_sort, "product": study["product"],
                "is_pre_install": int(bool((proc or first_view).get("is_pre_install", True))),
                "created_at": now})
            for view, _ in group:
                image_sort += 1
                sop = self.uids.instance()
                tx.insert("images", {
                    "sop_instance_id": sop, "series_instance_uid": series_uid,
                    "study_instance_uid": study["study_instance_uid"], "study_id": sid,
                    "secondary_sop_uid": "", "view_id": view.get("view_id", ""),
                    "view_description": view.get("view_description") or view.get("view_name", ""),
                    "image_status": INITIAL["image_status"], "image_file_path": "",
                    "preview_path": "", "acquisition_mode": view.get("application") or "RAD",
                    "acquisition_context": None, "img_proc_context": None,
                    "expose_status": INITIAL["expose_status"],
                    "judged_status": INITIAL["judged_status"],
                    "send_status": INITIAL["send_status"],
                    "storage_status": INITIAL["storage_status"], "sort": image_sort,
                    "product": study["product"],
                    "is_pre_install": int(bool(view.get("is_pre_install", True))),
                    "created_at": now, "updated_at": now})
                created.append(sop)
        return created

    def _touch_study(self, tx: Transaction, study: dict[str, Any], **changes: Any) -> None:
        changes["updated_at"] = iso_utc(self._now())
        tx.update_versioned("studies", "study_id", study["study_id"], study["version"], changes)
        study.update(changes)
        study["version"] += 1

    def _move(self, field: str, old: str, new: str, what: str) -> bool:
        """Check a status move; False when it is an idempotent repeat (nothing to do)."""
        if old == new and field in _IDEMPOTENT:
            return False
        check_transition(field, old, new, what)
        return True

    def _reopen(self, study: dict[str, Any], changes: dict[str, Any]) -> None:
        """Work on a study's images moves it Arrived/Completed -> InProgress."""
        if study["study_status"] != "InProgress":
            check_transition("study_status", study["study_status"], "InProgress",
                             study["study_id"])
            changes["study_status"] = "InProgress"
            changes["study_end_datetime"] = None

    # -- register, update, read ------------------------------------------------------------
    def register(self, request: dict[str, Any], *, product: str | None = None,
                 language: str = "en", source: str = "", user: str = "") -> dict[str, Any]:
        """Register a study with its views; return ``dr.study.Study``.

        ``source`` (the client kind: Electron, Browser, Android) is recorded as
        ``reg_source``; ``user`` (the logged-in user) becomes ``operator_name`` when the
        request names no operator.

        Raises ``MISSING_FIELD``/``INVALID_FIELD`` (naming the field) for bad patient data
        or views, ``CATALOG_NOT_FOUND`` for a view or procedure the catalog lacks.
        """
        product = product or self.product
        if product not in PRODUCTS:
            raise DiosError(INVALID_FIELD, f"product must be one of {', '.join(PRODUCTS)}",
                            field="product")
        language = _as_language(language)
        cols = validate_study_fields(request, "register")
        views = validate_views(request.get("views"))
        cols["reg_source"] = source[:64] if isinstance(source, str) else ""
        if not cols.get("operator_name") and isinstance(user, str):
            cols["operator_name"] = user[:64]
        groups = self._resolve_views(views, product, language)
        now_dt = self._now()
        now = iso_utc(now_dt)
        for _attempt in range(5):
            study = {**cols, "study_id": self._new_study_id(),
                     "study_instance_uid": self.uids.study(), "study_start_datetime": now,
                     "study_status": INITIAL["study_status"], "study_lock": INITIAL["study_lock"],
                     "specific_character_set": "ISO_IR 192", "product": product,
                     "created_at": now, "updated_at": now}
            try:
                with self.db.transaction() as tx:
                    tx.insert("studies", study)
                    created = self._insert_groups(tx, study, groups, now)
                    reply = self._full(tx, study["study_id"], "Study")
            except self.db.integrity_errors as exc:
                # Another console took the same millisecond: take the next id.
                log.info("study id %s taken (%s); retrying", study["study_id"], exc)
                continue
            self._emit("study.registered", study_id=study["study_id"], images=created)
            return reply
        raise DiosError(DUPLICATE, "could not allocate a unique study id")

    #: The patient/study fields a worklist item gives a study (they win over the request's).
    WORKLIST_FIELDS: tuple[str, ...] = (
        "accession_number", "patient_id", "patient_name", "patient_dob", "patient_age",
        "patient_sex", "sex_neutered", "ref_physician", "patient_type", "owner_name",
        "variety", "weight", "length")

    def register_from_worklist(self, item: dict[str, Any], request: dict[str, Any], *,
                               product: str | None = None, language: str = "en",
                               user: str = "") -> dict[str, Any]:
        """Register a study from a modality worklist item; return ``dr.study.Study``.

        ``item`` is a worklist item in the study's field names (as the exchange's worklist
        query maps it: :data:`WORKLIST_FIELDS`, ``study_instance_uid``, ``modality``,
        ``study_description`` - the requested procedure -,
        ``scheduled_procedure_step_start_date`` and ``mwl``, the worklist attributes as
        text). The study keeps the worklist's Study Instance UID and gets ``reg_source``
        ``MWL``. ``request`` carries the ``views`` and the fields the worklist does not
        give (``patient_size``, default ``Medium``; ``study_type``, default ``Normal``;
        ``operator_id``, ``comment`` ...). Birth date, age and accession number are Type 2
        in a worklist: empty when the RIS has none.

        Raises ``DUPLICATE`` when a study with that Study Instance UID exists (the item was
        registered already), ``INVALID_FIELD``/``MISSING_FIELD`` naming the field.
        """
        if not isinstance(item, dict):
            raise DiosError(INVALID_FIELD, "item must be an object", field="item")
        if not isinstance(request, dict):
            raise DiosError(INVALID_FIELD, "the request must be an object")
        product = product or self.product
        if product not in PRODUCTS:
            raise DiosError(INVALID_FIELD, f"product must be one of {', '.join(PRODUCTS)}",
                            field="product")
        study_uid = item.get("study_instance_uid")
        problem = uid_problem(study_uid)
        if problem:
            raise DiosError(MISSING_FIELD if not study_uid else INVALID_FIELD,
                            f"item.study_instance_uid {problem}", field="item.study_instance_uid")
        merged: dict[str, Any] = {"patient_size": "Medium", "study_type": "Normal",
                                  "modality": "DX", "patient_type": "Human"}
        merged.update({k: v for k, v in request.items() if k in FIELD_RULES})
        for name in self.WORKLIST_FIELDS:
            if item.get(name) not in (None, "", 0):
                merged[name] = item[name]
        if item.get("modality") in ("DX", "CR"):
            merged["modality"] = item["modality"]
        placeholders = {"patient_dob": "2000-01-01", "patient_age": "1Y",
                        "accession_number": "-"}
        blank = [k for k in placeholders if merged.get(k) in (None, "")]
        cols = validate_study_fields({**merged, **{k: placeholders[k] for k in blank}},
                                     "register")
        for name in blank:
            cols[name] = ""
        extra: dict[str, Any] = {}
        for name, limit in (("study_description", 64), ("mwl", 8192)):
            value = item.get(name) or ""
            if not isinstance(value, str) or len(value) > limit or any(
                    ord(c) < 0x20 for c in value):
                raise DiosError(INVALID_FIELD, f"item.{name}: text of at most {limit} "
                                "characters on one line", field=f"item.{name}")
            extra[name] = value
        start = item.get("scheduled_procedure_step_start_date") or None
        if start is not None:
            try:
                if not isinstance(start, str):
                    raise ValueError(start)
                start = parse_iso_datetime(start).date().isoformat()
            except ValueError:
                raise DiosError(INVALID_FIELD, "item.scheduled_procedure_step_start_date: "
                                "an ISO date", field="item.scheduled_procedure_step_start_date"
                                ) from None
        views = validate_views(request.get("views"))
        if not cols.get("operator_name") and isinstance(user, str):
            cols["operator_name"] = user[:64]
        groups = self._resolve_views(views, product, _as_language(language))
        now = iso_utc(self._now())
        for _attempt in range(5):
            study = {**cols, **extra, "study_id": self._new_study_id(),
                     "study_instance_uid": study_uid, "reg_source": "MWL",
                     "scheduled_procedure_step_start_date": start,
                     "study_start_datetime": now, "study_status": INITIAL["study_status"],
                     "study_lock": INITIAL["study_lock"],
                     "specific_character_set": "ISO_IR 192", "product": product,
                     "created_at": now, "updated_at": now}
            try:
                with self.db.transaction() as tx:
                    taken = tx.query_one("SELECT study_id FROM studies WHERE "
                                         "study_instance_uid = ?", [study_uid])
                    if taken is not None:
                        raise DiosError(DUPLICATE, f"study {taken['study_id']} was registered "
                                        f"from worklist item {study_uid} already",
                                        field="item.study_instance_uid",
                                        study_id=taken["study_id"])
                    tx.insert("studies", study)
                    created = self._insert_groups(tx, study, groups, now)
                    reply = self._full(tx, study["study_id"], "Study")
            except self.db.integrity_errors as exc:
                # the same millisecond or the same item at once elsewhere: look again
                log.info("study %s / %s taken (%s); retrying", study["study_id"], study_uid, exc)
                continue
            self._emit("study.registered", study_id=study["study_id"], images=created)
            return reply
        raise DiosError(DUPLICATE, "could not allocate a unique study id")

    def update(self, study_id: str, request: dict[str, Any], *,
               expected_version: int | None = None, user: str = "") -> dict[str, Any]:
        """Change patient/study fields; return ``dr.study.Study``.

        Fields absent from ``request`` keep their values. ``CONFLICT`` when
        ``expected_version`` is given and the study changed since; ``STUDY_LOCKED`` for a
        locked study.
        """
        cols = validate_study_fields(request, "update")
        if expected_version is None and isinstance(request, dict):
            expected_version = request.get("expected_version")
        if expected_version is not None and (not isinstance(expected_version, int)
                                             or isinstance(expected_version, bool)):
            raise DiosError(INVALID_FIELD, "expected_version must be an integer",
                            field="expected_version")
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            self._unlocked(study)
            if expected_version is not None and expected_version != study["version"]:
                raise DiosError(CONFLICT, f"study {study_id} is at version {study['version']}, "
                                f"not {expected_version}", version=study["version"])
            self._touch_study(tx, study, **cols)
            reply = self._full(tx, study_id, "Study")
        self._emit("study.updated", study_id=study_id)
        return reply

    def get(self, study_id: str) -> dict[str, Any]:
        """One study with its series and images: ``dr.study.StudyReply``."""
        with self.db.transaction(readonly=True) as tx:
            return self._full(tx, study_id, "StudyReply")

    def study_version(self, study_id: str) -> int:
        """The study's row version (for ``update(..., expected_version=)``)."""
        with self.db.transaction(readonly=True) as tx:
            return int(self._study_row(tx, study_id)["version"])

    def list_studies(self, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """Search and page: ``dr.study.StudyList`` ``{count, page, page_size, studies}``.

        Query keys (all optional): ``keyword`` (patient id, name or accession number),
        ``patient_id``, ``patient_name`` (also matches the English name),
        ``accession_number`` (substrings, case-insensitive), ``date_from``/``date_to``
        (ISO dates, inclusive, site time, on the study start), ``study_status`` (one value
        or a list), ``product``, ``page`` (from 1), ``page_size`` (1..200, default 20).
        ``count`` is the number of matches over all pages. Newest first.
        """
        q = dict(query or {})
        where: list[str] = []
        params: list[Any] = []

        def text(name: str) -> str | None:
            v = q.get(name)
            if v is None or v == "":
                return None
            if not isinstance(v, str) or len(v) > 64:
                raise DiosError(INVALID_FIELD, f"{name} must be a string of at most 64 characters",
                                field=name)
            return "%" + v.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        like = "LOWER({}) LIKE ? ESCAPE '\\'"
        if (kw := text("keyword")) is not None:
            where.append("(" + " OR ".join(like.format(c) for c in (
                "patient_id", "patient_name", "patient_english_name", "accession_number")) + ")")
            params += [kw] * 4
        if (v := text("patient_id")) is not None:
            where.append(like.format("patient_id"))
            params.append(v)
        if (v := text("patient_name")) is not None:
            where.append(f"({like.format('patient_name')} OR {like.format('patient_english_name')})")
            params += [v, v]
        if (v := text("accession_number")) is not None:
            where.append(like.format("accession_number"))
            params.append(v)
        for name, op, shift in (("date_from", ">=", 0), ("date_to", "<", 1)):
            v = q.get(name)
            if v is None or v == "":
                continue
            try:
                day = parse_iso_datetime(v).date() if isinstance(v, str) else None
            except ValueError:
                day = None
            if day is None:
                raise DiosError(INVALID_FIELD, f"{name} must be an ISO date (YYYY-MM-DD)", field=name)
            start = datetime(day.year, day.month, day.day, tzinfo=self._tz) + timedelta(days=shift)
            where.append(f"study_start_datetime {op} ?")
            params.append(iso_utc(start))
        status = q.get("study_status")
        if status not in (None, "", []):
            statuses = [status] if isinstance(status, str) else status
            if not isinstance(statuses, list) or not all(s in STUDY_STATUSES for s in statuses):
                raise DiosError(INVALID_FIELD, f"study_status must be among {', '.join(STUDY_STATUSES)}",
                                field="study_status")
            where.append(f"study_status IN ({', '.join('?' for _ in statuses)})")
            params += statuses
        product = q.get("product")
        if product not in (None, ""):
            if product not in PRODUCTS:
                raise DiosError(INVALID_FIELD, "product must be DROS or VETDROS", field="product")
            where.append("product = ?")
            params.append(product)
        page = self._int_param(q.get("page", 1), "page", 1, 1_000_000)
        size = self._int_param(q.get("page_size", 20), "page_size", 1, _MAX_PAGE_SIZE)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self.db.transaction(readonly=True) as tx:
            total = tx.query_one(f"SELECT COUNT(*) AS n FROM studies{clause}", params)
            rows = tx.query(f"SELECT * FROM studies{clause} ORDER BY study_start_datetime DESC, "
                            "study_id DESC LIMIT ? OFFSET ?", [*params, size, (page - 1) * size])
            studies = self._assemble(tx, rows)
        return {"@type": TYPE + "StudyList", "count": int(total["n"]) if total else 0,
                "page": page, "page_size": size, "studies": studies}

    def search(self, *, product: str | None = None, **query: Any) -> dict[str, Any]:
        """:meth:`list_studies` with keyword arguments (``product`` filters when given)."""
        if product:
            query["product"] = product
        return self.list_studies(query)

    @staticmethod
    def _int_param(value: Any, name: str, low: int, high: int) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise DiosError(INVALID_FIELD, f"{name} must be an integer in {low}..{high}", field=name)
        return value

    def stat(self, study_id: str | None = None) -> dict[str, Any]:
        """``dr.study.Stat``: for one study its images (total, exposed); without a study id
        the studies (total, those with at least one exposed image)."""
        with self.db.transaction(readonly=True) as tx:
            if study_id is None:
                total = tx.query_one("SELECT COUNT(*) AS n FROM studies", [])
                exposed = tx.query_one("SELECT COUNT(DISTINCT study_id) AS n FROM images "
                                       "WHERE expose_status = 'Exposed'", [])
            else:
                self._study_row(tx, study_id)
                total = tx.query_one("SELECT COUNT(*) AS n FROM images WHERE study_id = ?",
                                     [study_id])
                exposed = tx.query_one("SELECT COUNT(*) AS n FROM images WHERE study_id = ? "
                                       "AND expose_status = 'Exposed'", [study_id])
        return {"@type": TYPE + "Stat", "total": int(total["n"]), "exposed": int(exposed["n"])}

    # -- deletion --------------------------------------------------------------------------
    def _abs(self, path: str) -> Path:
        p = Path(path)
        if not p.is_absolute() and self.data_dir is not None:
            p = self.data_dir / p
        return p

    def _remove_files(self, paths: Iterable[str]) -> None:
        if self.data_dir is None:
            return
        for p in paths:
            if not p:
                continue
            real = self._abs(p).resolve()
            if self.data_dir not in real.parents:
                continue
            with contextlib.suppress(FileNotFoundError):
                real.unlink()

    def delete_studies(self, study_ids: Any) -> dict[str, Any]:
        """Delete studies (all or nothing); return ``dr.study.Stat`` of what remains.

        ``STUDY_NOT_FOUND`` / ``STUDY_LOCKED`` for any of them deletes none.
        """
        if not isinstance(study_ids, list) or not study_ids:
            raise DiosError(MISSING_FIELD if study_ids in (None, []) else INVALID_FIELD,
                            "study_ids must be a non-empty array of study ids", field="study_ids")
        if len(study_ids) > 1000:
            raise DiosError(INVALID_FIELD, "at most 1000 studies at once", field="study_ids")
        ids = sorted({self._check_id(s) for s in study_ids})
        files: list[str] = []
        with self.db.transaction() as tx:
            for sid in ids:
                self._unlocked(self._study_row(tx, sid, lock=True))
            for sid in ids:
                for im in tx.query("SELECT image_file_path, preview_path FROM images "
                                   "WHERE study_id = ?", [sid]):
                    files += [im["image_file_path"], im["preview_path"]]
                tx.execute("DELETE FROM images WHERE study_id = ?", [sid])
                tx.execute("DELETE FROM series WHERE study_id = ?", [sid])
                tx.execute("DELETE FROM studies WHERE study_id = ?", [sid])
        self._remove_files(files)
        for sid in ids:
            self._emit("study.deleted", study_id=sid)
        return self.stat()

    def delete_images(self, study_id: str, sop_uids: Any) -> dict[str, Any]:
        """Delete images of one study (series left empty go too); ``google.protobuf.Empty``.

        ``IMAGE_NOT_FOUND`` if one is not an image of the study; ``INVALID_TRANSITION``
        for an image being exposed right now.
        """
        if not isinstance(sop_uids, list) or not sop_uids:
            raise DiosError(MISSING_FIELD if sop_uids in (None, []) else INVALID_FIELD,
                            "sop_instance_uids must be a non-empty array", field="sop_instance_uids")
        uids = list(dict.fromkeys(self._check_id(u, "sop_instance_uids") for u in sop_uids))
        files: list[str] = []
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            self._unlocked(study)
            rows = []
            for u in uids:
                row = tx.query_one("SELECT * FROM images WHERE sop_instance_id = ? AND study_id = ?",
                                   [u, study_id])
                if row is None:
                    raise DiosError(IMAGE_NOT_FOUND, f"{u} is not an image of study {study_id}",
                                    instance_uid=u)
                if row["expose_status"] == "Exposing":
                    raise DiosError(INVALID_TRANSITION, f"{u} is being exposed", instance_uid=u)
                rows.append(row)
            for row in rows:
                files += [row["image_file_path"], row["preview_path"]]
                tx.execute("DELETE FROM images WHERE sop_instance_id = ?", [row["sop_instance_id"]])
            tx.execute("DELETE FROM series WHERE study_id = ? AND NOT EXISTS (SELECT 1 FROM images "
                       "WHERE images.series_instance_uid = series.series_instance_uid)", [study_id])
            self._touch_study(tx, study)
        self._remove_files(files)
        self._emit("image.deleted", study_id=study_id, images=uids)
        return _empty()

    # -- more views, retake ----------------------------------------------------------------
    def append_images(self, study_id: str, views: Any, *, language: str = "en") -> dict[str, Any]:
        """Add views to a study (new series); return ``dr.study.CreateImageReply``."""
        parsed = validate_views(views)
        language = _as_language(language)
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            self._unlocked(study)
            groups = self._resolve_views(parsed, study["product"], language)
            now = iso_utc(self._now())
            created = self._insert_groups(tx, study, groups, now)
            changes: dict[str, Any] = {"is_appended": 1}
            if study["study_status"] == "Completed":
                self._reopen(study, changes)
            self._touch_study(tx, study, **changes)
            reply = self._created_reply(tx, created)
        self._emit("images.created", study_id=study_id, images=created)
        return reply

    def retake(self, sop_uid: str, *, language: str = "en") -> dict[str, Any]:
        """A new image for the same view in the same series; the old one is kept and judged
        ``Rejected``. Only an exposed image is retaken. ``dr.study.CreateImageReply``."""
        with self.db.transaction() as tx:
            study, old = self._lock_image(tx, sop_uid)
            self._unlocked(study)
            if old["expose_status"] != "Exposed":
                raise DiosError(INVALID_TRANSITION, f"{sop_uid} is {old['expose_status']}: only an "
                                "exposed image is retaken", field="expose_status")
            now = iso_utc(self._now())
            if self._move("judged_status", old["judged_status"], "Rejected", sop_uid):
                tx.update_versioned("images", "sop_instance_id", sop_uid, old["version"],
                                    {"judged_status": "Rejected", "updated_at": now})
            agg = tx.query_one("SELECT COALESCE(MAX(sort), 0) AS m FROM images WHERE study_id = ?",
                               [study["study_id"]])
            new_uid = self.uids.instance()
            tx.insert("images", {
                "sop_instance_id": new_uid, "series_instance_uid": old["series_instance_uid"],
                "study_instance_uid": old["study_instance_uid"], "study_id": old["study_id"],
                "secondary_sop_uid": "", "view_id": old["view_id"],
                "view_description": old["view_description"],
                "image_status": INITIAL["image_status"], "image_file_path": "",
                "preview_path": "", "acquisition_mode": old["acquisition_mode"],
                "acquisition_context": None, "img_proc_context": None,
                "expose_status": INITIAL["expose_status"],
                "judged_status": INITIAL["judged_status"], "send_status": INITIAL["send_status"],
                "storage_status": INITIAL["storage_status"], "sort": int(agg["m"]) + 1,
                "product": old["product"], "is_pre_install": old["is_pre_install"],
                "retake_of": sop_uid, "created_at": now, "updated_at": now})
            changes: dict[str, Any] = {}
            if study["study_status"] == "Completed":
                self._reopen(study, changes)
            self._touch_study(tx, study, **changes)
            reply = self._created_reply(tx, [new_uid])
        self._emit("images.created", study_id=study["study_id"], images=[new_uid], retake_of=sop_uid)
        return reply

    # -- judge, status, lock ---------------------------------------------------------------
    def judge(self, sop_uid: str, accept: Any) -> dict[str, Any]:
        """Accept or reject an exposed image; ``google.protobuf.Empty``."""
        if isinstance(accept, str) and accept.lower() in ("true", "false"):
            accept = accept.lower() == "true"
        if not isinstance(accept, bool):
            raise DiosError(MISSING_FIELD if accept is None else INVALID_FIELD,
                            "accept must be a boolean", field="accept")
        new = "Accepted" if accept else "Rejected"
        with self.db.transaction() as tx:
            study, image = self._lock_image(tx, sop_uid)
            self._unlocked(study)
            if image["expose_status"] != "Exposed":
                raise DiosError(INVALID_TRANSITION, f"{sop_uid} is {image['expose_status']}: only "
                                "an exposed image is judged", field="judged_status")
            if self._move("judged_status", image["judged_status"], new, sop_uid):
                tx.update_versioned("images", "sop_instance_id", sop_uid, image["version"],
                                    {"judged_status": new, "updated_at": iso_utc(self._now())})
        self._emit("image.updated", study_id=study["study_id"], instance_uid=sop_uid,
                   judged_status=new)
        return _empty()

    def set_study_status(self, study_id: str, study_status: Any) -> dict[str, Any]:
        """Move a study to ``InProgress`` or ``Completed``; ``google.protobuf.Empty``."""
        if study_status in (None, ""):
            raise DiosError(MISSING_FIELD, "study_status", field="study_status")
        if study_status not in ("InProgress", "Completed"):
            raise DiosError(INVALID_FIELD, "study_status must be InProgress or Completed",
                            field="study_status")
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            self._unlocked(study)
            if self._move("study_status", study["study_status"], study_status, study_id):
                end = iso_utc(self._now()) if study_status == "Completed" else None
                self._touch_study(tx, study, study_status=study_status, study_end_datetime=end)
        self._emit("study.completed" if study_status == "Completed" else "study.updated",
                   study_id=study_id, study_status=study_status)
        return _empty()

    def set_status(self, study_id: str, study_status: Any) -> dict[str, Any]:
        """Alias of :meth:`set_study_status`."""
        return self.set_study_status(study_id, study_status)

    def set_lock(self, study_id: str, study_lock: Any) -> dict[str, Any]:
        """Lock or unlock a study (``Locked``/``Unlocked``, or a boolean ``locked``);
        ``google.protobuf.Empty``."""
        if isinstance(study_lock, bool):
            study_lock = "Locked" if study_lock else "Unlocked"
        if study_lock in (None, ""):
            raise DiosError(MISSING_FIELD, "study_lock", field="study_lock")
        if study_lock not in ("Locked", "Unlocked"):
            raise DiosError(INVALID_FIELD, "study_lock must be Locked or Unlocked", field="study_lock")
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            if self._move("study_lock", study["study_lock"], study_lock, study_id):
                self._touch_study(tx, study, study_lock=study_lock)
        self._emit("study.updated", study_id=study_id, study_lock=study_lock)
        return _empty()

    # -- exposure (called by the task service) ---------------------------------------------
    def mark_exposing(self, sop_uid: str) -> dict[str, Any]:
        """An exposure for this image starts: Unexposed -> Exposing (study -> InProgress)."""
        with self.db.transaction() as tx:
            study, image = self._lock_image(tx, sop_uid)
            self._unlocked(study)
            check_transition("expose_status", image["expose_status"], "Exposing", sop_uid)
            check_transition("image_status", image["image_status"], "EXPOSING", sop_uid)
            tx.update_versioned("images", "sop_instance_id", sop_uid, image["version"], {
                "expose_status": "Exposing", "image_status": "EXPOSING",
                "exposing_station": self.station, "updated_at": iso_utc(self._now())})
            changes: dict[str, Any] = {}
            self._reopen(study, changes)
            if changes:
                self._touch_study(tx, study, **changes)
            out = self._image_dict(self._image_row(tx, sop_uid))
        self._emit("image.updated", study_id=study["study_id"], instance_uid=sop_uid,
                   expose_status="Exposing")
        return out

    def mark_expose_failed(self, sop_uid: str, reason: str = "") -> dict[str, Any]:
        """The exposure failed or was aborted: Exposing -> Unexposed (ready to retry)."""
        with self.db.transaction() as tx:
            study, image = self._lock_image(tx, sop_uid)
            check_transition("expose_status", image["expose_status"], "Unexposed", sop_uid)
            check_transition("image_status", image["image_status"], "QUEUING", sop_uid)
            tx.update_versioned("images", "sop_instance_id", sop_uid, image["version"], {
                "expose_status": "Unexposed", "image_status": "QUEUING",
                "updated_at": iso_utc(self._now())})
            out = self._image_dict(self._image_row(tx, sop_uid))
        log.info("exposure of %s failed: %s", sop_uid, reason or "no reason given")
        self._emit("image.updated", study_id=study["study_id"], instance_uid=sop_uid,
                   expose_status="Unexposed", reason=reason)
        return out

    def mark_exposed(self, sop_uid: str, acquisition: dict[str, Any] | None = None,
                     file_path: str | None = None, preview_path: str = "",
                     ei: float | None = None, di: float | None = None,
                     img_proc: dict[str, Any] | None = None, secondary_sop_uid: str = "", *,
                     image_file_path: str | None = None,
                     acquisition_context: dict[str, Any] | None = None,
                     img_proc_context: dict[str, Any] | None = None) -> dict[str, Any]:
        """The exposure's file is stored: Exposing -> Exposed and storage -> Saved, atomically.

        Accepted only from Exposing (the state the acquisition lifecycle put the image in
        when its exposure started); any other state is ``INVALID_TRANSITION``, so an
        exposure reported failed (back to Unexposed) can never be saved afterwards, and an
        exposure lands in exactly one image. ``file_path`` (and ``preview_path`` if given)
        must already exist: the caller writes them atomically first; a relative path is
        relative to the data directory and stored as given. ``image_file_path``,
        ``acquisition_context`` and ``img_proc_context`` are the keyword spellings of
        ``file_path``, ``acquisition`` and ``img_proc``.
        """
        return self._mark_saved(sop_uid, "Exposing", acquisition, file_path, preview_path, ei,
                                di, img_proc, secondary_sop_uid, image_file_path,
                                acquisition_context, img_proc_context)

    def mark_imported(self, sop_uid: str, file_path: str, preview_path: str = "", *,
                      acquisition: dict[str, Any] | None = None,
                      img_proc: dict[str, Any] | None = None,
                      secondary_sop_uid: str = "") -> dict[str, Any]:
        """An image imported from a file (an upload): Unexposed -> Exposed/Saved.

        Accepted only from Unexposed, on an unlocked study; the same file rules as
        :meth:`mark_exposed`.
        """
        return self._mark_saved(sop_uid, "Unexposed", acquisition, file_path, preview_path,
                                None, None, img_proc, secondary_sop_uid, None, None, None)

    def _mark_saved(self, sop_uid: str, expected: str, acquisition: dict[str, Any] | None,
                    file_path: str | None, preview_path: str, ei: float | None,
                    di: float | None, img_proc: dict[str, Any] | None, secondary_sop_uid: str,
                    image_file_path: str | None, acquisition_context: dict[str, Any] | None,
                    img_proc_context: dict[str, Any] | None) -> dict[str, Any]:
        file_path = image_file_path if file_path is None else file_path
        acquisition = acquisition_context if acquisition is None else acquisition
        img_proc = img_proc_context if img_proc is None else img_proc
        for name, path in (("file_path", file_path), ("preview_path", preview_path)):
            if not isinstance(path, str) or (name == "file_path" and not path):
                raise DiosError(INVALID_FIELD, f"{name} must be a path", field=name)
            if path and not self._abs(path).is_file():
                raise DiosError(STORAGE_ERROR, f"{name} {path} does not exist", field=name)
        values: dict[str, Any] = {}
        for name, v in (("ei", ei), ("di", di)):
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int | float) and not hasattr(v, "item"):
                    raise DiosError(INVALID_FIELD, f"{name} must be a number", field=name)
                v = float(v)
                if not math.isfinite(v):
                    raise DiosError(INVALID_FIELD, f"{name} must be finite", field=name)
            values[name] = v
        try:
            acq = None if acquisition is None else json.dumps(acquisition, default=_json_default)
            proc = None if img_proc is None else json.dumps(img_proc, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise DiosError(INVALID_FIELD, f"acquisition context is not JSON: {exc}",
                            field="acquisition") from exc
        if not isinstance(secondary_sop_uid, str) or len(secondary_sop_uid) > 64:
            raise DiosError(INVALID_FIELD, "secondary_sop_uid must be a UID", field="secondary_sop_uid")
        with self.db.transaction() as tx:
            study, image = self._lock_image(tx, sop_uid)
            if image["expose_status"] != expected:
                raise DiosError(INVALID_TRANSITION, f"image {sop_uid} is "
                                f"{image['expose_status']}, not {expected}",
                                instance_uid=sop_uid)
            if expected != "Exposing":
                self._unlocked(study)  # an exposure in flight always lands; imports do not
            check_transition("expose_status", image["expose_status"], "Exposed", sop_uid)
            check_transition("storage_status", image["storage_status"], "Saved", sop_uid)
            check_transition("image_status", image["image_status"], "EXPOSED", sop_uid)
            now = iso_utc(self._now())
            tx.update_versioned("images", "sop_instance_id", sop_uid, image["version"], {
                "expose_status": "Exposed", "storage_status": "Saved", "image_status": "EXPOSED",
                "image_file_path": file_path, "preview_path": preview_path,
                "acquisition_context": acq, "img_proc_context": proc, "ei": values["ei"],
                "di": values["di"], "secondary_sop_uid": secondary_sop_uid, "exposed_at": now,
                "updated_at": now})
            tx.execute("UPDATE series SET performed_datetime = ? WHERE series_instance_uid = ? "
                       "AND performed_datetime IS NULL", [now, image["series_instance_uid"]])
            changes: dict[str, Any] = {}
            if study["study_status"] == "Arrived":
                self._reopen(study, changes)
            self._touch_study(tx, study, **changes)
            out = self._image_dict(self._image_row(tx, sop_uid))
        self._emit("image.updated", study_id=study["study_id"], instance_uid=sop_uid,
                   expose_status="Exposed", storage_status="Saved")
        return out

    def set_send_status(self, sop_uid: str, send_status: str) -> dict[str, Any]:
        """Move ``send_status`` (Sending, Sent, SendFailed); only a saved image is sent."""
        with self.db.transaction() as tx:
            study, image = self._lock_image(tx, sop_uid)
            if image["storage_status"] != "Saved":
                raise DiosError(INVALID_TRANSITION, f"{sop_uid} is not saved", field="send_status")
            check_transition("send_status", image["send_status"], send_status, sop_uid)
            tx.update_versioned("images", "sop_instance_id", sop_uid, image["version"], {
                "send_status": send_status, "updated_at": iso_utc(self._now())})
            out = self._image_dict(self._image_row(tx, sop_uid))
        self._emit("image.updated", study_id=study["study_id"], instance_uid=sop_uid,
                   send_status=send_status)
        return out

    def set_exported(self, study_id: str, exported: bool) -> bool:
        """Set the study's ``is_exported`` (every stored image sent); True when it changed.
        A locked study is changed too: it records where its images went, not its content."""
        if not isinstance(exported, bool):
            raise DiosError(INVALID_FIELD, "is_exported must be true or false",
                            field="is_exported")
        with self.db.transaction() as tx:
            study = self._study_row(tx, study_id, lock=True)
            if bool(study["is_exported"]) == exported:
                return False
            self._touch_study(tx, study, is_exported=int(exported))
        self._emit("study.updated", study_id=study["study_id"], is_exported=exported)
        return True

    # -- start-up recovery ---------------------------------------------------------------
    def recover(self) -> dict[str, list[str]]:
        """Reconcile what a killed server left behind; call once at start, before exposing.

        An image still ``Exposing`` had its exposure interrupted: it goes back to
        ``Unexposed`` (``image_status`` QUEUING) along :data:`dios.study.model.RECOVERY`,
        ready to be exposed again. Files in the data directory's ``images/`` and
        ``previews/`` that no image references (an exposure killed between writing its
        file and committing it, temporary files of an interrupted atomic write) are
        removed; nothing outside those two directories is touched. Returns
        ``{"reset": [sop uids], "removed": [file paths]}``.

        Only exposures of this console's :attr:`station` are reset, so that consoles
        sharing one database do not reset each other's exposure in progress.
        """
        reset: list[str] = []
        with self.db.transaction() as tx:
            rows = tx.query("SELECT sop_instance_id, study_id, expose_status, image_status, "
                            "version FROM images WHERE (expose_status = 'Exposing' "
                            "OR image_status = 'EXPOSING') AND exposing_station = ? "
                            "ORDER BY sop_instance_id", [self.station])
            now = iso_utc(self._now())
            for row in rows:
                changes: dict[str, Any] = {"updated_at": now}
                for field, (old, new) in RECOVERY.items():
                    if row[field] == old:
                        check_transition(field, old, new, row["sop_instance_id"])
                        changes[field] = new
                tx.update_versioned("images", "sop_instance_id", row["sop_instance_id"],
                                    row["version"], changes)
                reset.append(row["sop_instance_id"])
        removed = self._remove_orphan_files()
        for sop in reset:
            log.warning("image %s was being exposed when the server stopped: back to Unexposed",
                        sop)
        if removed:
            log.warning("removed %d unreferenced image/preview file(s)", len(removed))
        for row in rows:
            self._emit("image.updated", study_id=row["study_id"],
                       instance_uid=row["sop_instance_id"], expose_status="Unexposed",
                       reason="recovered at start")
        return {"reset": reset, "removed": removed}

    def _remove_orphan_files(self) -> list[str]:
        if self.data_dir is None:
            return []
        referenced: set[Path] = set()
        with self.db.transaction(readonly=True) as tx:
            for row in tx.query("SELECT image_file_path, preview_path FROM images", []):
                for p in (row["image_file_path"], row["preview_path"]):
                    if p:
                        referenced.add(self._abs(p).resolve())
        removed: list[str] = []
        for sub in ("images", "previews"):
            top = self.data_dir / sub
            if not top.is_dir():
                continue
            for path in sorted(top.rglob("*")):
                if path.is_symlink() or not path.is_file():
                    continue
                real = path.resolve()
                if real in referenced or top not in real.parents:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(str(path))
        return removed

    # -- reads for the task service --------------------------------------------------------
    def image(self, sop_uid: str) -> dict[str, Any]:
        """One image in the seed's ``dr.study.Study`` image shape."""
        with self.db.transaction(readonly=True) as tx:
            return self._image_dict(self._image_row(tx, sop_uid))

    def image_path(self, sop_uid: str) -> Path:
        """The absolute path of image ``sop_uid``'s stored file (``image_file_path`` is
        kept relative to the data directory); ``INVALID_TRANSITION`` while it has none."""
        with self.db.transaction(readonly=True) as tx:
            rel = self._image_row(tx, sop_uid)["image_file_path"]
        if not rel:
            raise DiosError(INVALID_TRANSITION, f"image {sop_uid} has no stored file yet",
                            instance_uid=sop_uid)
        return self._abs(rel).resolve()

    def study_of_image(self, sop_uid: str) -> dict[str, Any]:
        """The full study (``dr.study.StudyReply``) that holds image ``sop_uid``."""
        with self.db.transaction(readonly=True) as tx:
            return self._full(tx, self._image_row(tx, sop_uid)["study_id"], "StudyReply")

    def image_context(self, sop_uid: str) -> dict[str, Any]:
        """Everything needed to write the image's DICOM file.

        ``{"study": top-level study fields, "patient": patient fields (with
        ``dicom_patient_sex`` M/F/O/"" and ``sex_neutered`` ALTERED/UNALTERED/"" derived
        from CM/SF), "series": series fields, "image": image fields plus ``image_status``,
        ``preview_path``, ``ei``, ``di``, ``retake_of``, ``exposed_at``, "view": the
        catalog's view (None if the catalog no longer has it)}``.
        """
        with self.db.transaction(readonly=True) as tx:
            im = self._image_row(tx, sop_uid)
            st = self._study_row(tx, im["study_id"])
            se = tx.query_one("SELECT * FROM series WHERE series_instance_uid = ?",
                              [im["series_instance_uid"]])
        image = self._image_dict(im)
        for k in ("image_status", "preview_path", "ei", "di", "retake_of", "exposed_at"):
            image[k] = im[k]
        sex = st["patient_sex"]
        dicom_sex = {"CM": "M", "SF": "F", "U": ""}.get(sex, sex)
        neutered = st["sex_neutered"] or ("ALTERED" if sex in ("CM", "SF") else "")
        patient = {k: st[k] for k in (
            "patient_id", "patient_name", "patient_english_name", "patient_former_name",
            "patient_dob", "patient_age", "patient_sex", "pregnancy_status", "patient_size",
            "weight", "length", "thickness", "patient_type", "owner_name", "chip_number",
            "variety", "other_patient_ids", "other_patient_names")}
        patient.update(dicom_patient_sex=dicom_sex, sex_neutered=neutered,
                       is_anaesthesia=bool(st["is_anaesthesia"]),
                       is_sedation=bool(st["is_sedation"]))
        try:
            view = self.catalog.view(im["view_id"], st["product"], "en")
        except DiosError:
            view = None
        return {"study": self._study_top(st), "patient": patient,
                "series": self._series_dict(se) if se else None, "image": image, "view": view}
