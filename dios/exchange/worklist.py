"""The modality worklist: C-FIND SCU on the Modality Worklist Information Model, and the
registration of a study from a worklist item.

:func:`query` asks a node with the ``worklist`` role for the scheduled procedure steps
that match :class:`WorklistFilters` (scheduled date range, modality, station AE title,
patient name with ``*``/``?`` wildcards, patient ID, accession number, Study Instance
UID). The request identifier carries the matching keys and every return key the console
uses: the Scheduled Procedure Step Sequence (modality, station AE title and name, start
date and time, step ID and description, performing physician, location, status), the
Requested Procedure ID and Description, Study Instance UID, Accession Number, Referring
Physician, the patient (name, ID, birth date, sex, weight, size) and, for animals,
Patient Species Description, Patient Breed Description, Patient's Sex Neutered and
Responsible Person; the Specific Character Set is ``ISO_IR 192`` when a matching key is
not ASCII.

Every reply item is decoded with pydicom in the item's own Specific Character Set
(``GB18030``, ``ISO_IR 192``, ``ISO_IR 100`` ... a Chinese name from a Chinese RIS comes
through intact) and mapped to the seed's study fields (``study_instance_uid``,
``accession_number``, ``ref_physician``, ``patient_name``, ``patient_dob`` ...) plus the
worklist's own attributes (``requested_procedure_id``, ``scheduled_step`` ...). An item
without a usable Study Instance UID, Patient ID, Patient Name or scheduled step, or with
a malformed value (a date that is not a date, text that does not decode), is skipped and
reported in ``skipped`` with the reason; it never fails the whole query.

At most ``limit`` items are read (default :data:`DEFAULT_LIMIT`, at most
:data:`MAX_LIMIT`); when the node has more, the query is cancelled (C-CANCEL) and the
reply says ``truncated: true``. A node that cannot be reached is ``PEER_UNREACHABLE``, one
that rejects or aborts the association or answers with a failure status is
``DICOM_ERROR``, one that stops answering is ``TIMEOUT`` (after the ``[dicom]``
``dimse_timeout``); a query never changes anything on the console.

:func:`register_from_worklist` hands an item (sent back by the client, or found again on
the node by its Study Instance UID or accession number: :func:`fetch_item`) to the study
service, which registers the study with the worklist's Study Instance UID and
``reg_source`` ``MWL``; the same item registered twice is ``DUPLICATE``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dios.codes import (
    DICOM_ERROR,
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_FOUND,
    TIMEOUT,
    DiosError,
)
from dios.config import DicomConfig
from dios.exchange.echo import Abort, close_association, make_ae, open_association
from dios.exchange.nodes import Node
from dios.uids import uid_problem

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "REG_SOURCE", "StudyRegistrar", "WorklistFilters",
           "WorklistResult", "fetch_item", "identifier", "map_item", "query",
           "register_from_worklist"]

#: Items read when the caller names no limit.
DEFAULT_LIMIT = 500
#: The most items one query may ask for.
MAX_LIMIT = 10_000
#: ``reg_source`` of a study registered from a worklist item.
REG_SOURCE = "MWL"

_PENDING = (0xFF00, 0xFF01)
_CANCELLED = 0xFE00
#: Replies still read (and dropped) after a C-CANCEL before the association is aborted.
_AFTER_CANCEL = 1000
_DATE = re.compile(r"\d{8}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_NAME_TEXT = re.compile(r"[^\x00-\x1f\x7f\\]{1,64}")
_CODE_TEXT = re.compile(r"[A-Za-z0-9 _]{1,16}")
_HUMAN = {"", "HUMAN"}

#: Top-level return keys of the request identifier (matching keys are filled in).
_TOP_KEYS = ("AccessionNumber", "ReferringPhysicianName", "PatientName", "PatientID",
             "PatientBirthDate", "PatientSex", "PatientWeight", "PatientSize",
             "PatientSpeciesDescription", "PatientBreedDescription", "PatientSexNeutered",
             "ResponsiblePerson", "ResponsiblePersonRole", "StudyInstanceUID",
             "RequestedProcedureID", "RequestedProcedureDescription",
             "RequestedProcedurePriority")
#: Return keys of the Scheduled Procedure Step Sequence item.
_SPS_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledStationName",
             "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime",
             "ScheduledProcedureStepID", "ScheduledProcedureStepDescription",
             "ScheduledPerformingPhysicianName", "ScheduledProcedureStepLocation",
             "ScheduledProcedureStepStatus")


def _text_filter(args: dict[str, Any], name: str, max_len: int, pattern: re.Pattern[str],
                 what: str) -> str:
    value = args.get(name)
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        raise DiosError(INVALID_FIELD, f"{name}: {what}", field=name)
    return value


def _date_filter(args: dict[str, Any], name: str) -> str:
    """A date filter as DICOM ``YYYYMMDD`` (accepts ``YYYY-MM-DD`` and ``YYYYMMDD``)."""
    value = args.get(name)
    if value is None or value == "":
        return ""
    if isinstance(value, str) and (_ISO_DATE.fullmatch(value) or _DATE.fullmatch(value)):
        digits = value.replace("-", "")
        try:
            date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            pass
        else:
            return digits
    raise DiosError(INVALID_FIELD, f"{name}: a date, YYYY-MM-DD", field=name)


@dataclass(frozen=True)
class WorklistFilters:
    """What a worklist query matches on; empty strings match anything.

    ``date_from``/``date_to``: the scheduled start date range (inclusive, ``YYYYMMDD``;
    one of them alone is an open range). ``patient_name`` may hold DICOM wildcards ``*``
    and ``?``. ``limit``: the most items to read (1..:data:`MAX_LIMIT`).
    """

    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    station_ae_title: str = ""
    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_request(cls, args: dict[str, Any]) -> WorklistFilters:
        """Check a request's filters; ``INVALID_FIELD`` names the first bad one."""
        if not isinstance(args, dict):
            raise DiosError(INVALID_FIELD, "the request must be an object")
        limit = args.get("limit")
        if limit is None:
            limit = DEFAULT_LIMIT
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise DiosError(INVALID_FIELD, f"limit: an integer in 1..{MAX_LIMIT}", field="limit")
        date_from, date_to = _date_filter(args, "date_from"), _date_filter(args, "date_to")
        if date_from and date_to and date_from > date_to:
            raise DiosError(INVALID_FIELD, "date_to: before date_from", field="date_to")
        uid = args.get("study_instance_uid") or ""
        if uid and uid_problem(uid):
            raise DiosError(INVALID_FIELD, f"study_instance_uid: {uid_problem(uid)}",
                            field="study_instance_uid")
        station = args.get("station_ae_title") or ""
        if station:
            from dios.exchange.nodes import check_ae_title

            station = check_ae_title(station, "station_ae_title")
        return cls(
            date_from=date_from, date_to=date_to,
            modality=_text_filter(args, "modality", 16, _CODE_TEXT, "a modality like DX")
            .strip().upper(),
            station_ae_title=station,
            patient_name=_text_filter(args, "patient_name", 64, _NAME_TEXT,
                                      "at most 64 characters, no backslash"),
            patient_id=_text_filter(args, "patient_id", 64, _NAME_TEXT,
                                    "at most 64 characters, no backslash"),
            accession_number=_text_filter(args, "accession_number", 16, _NAME_TEXT,
                                          "at most 16 characters, no backslash"),
            study_instance_uid=uid, limit=limit)

    def date_range(self) -> str:
        """The DICOM DA matching value of the date filters (``""``: any date)."""
        if not self.date_from and not self.date_to:
            return ""
        if self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from}-{self.date_to}"


def identifier(filters: WorklistFilters) -> Dataset:
    """The C-FIND request identifier for ``filters`` (matching and return keys)."""
    ds = Dataset()
    texts = (filters.patient_name, filters.patient_id, filters.accession_number)
    ds.SpecificCharacterSet = "" if all(t.isascii() for t in texts) else "ISO_IR 192"
    for key in _TOP_KEYS:
        setattr(ds, key, "")
    ds.PatientName = filters.patient_name
    ds.PatientID = filters.patient_id
    ds.AccessionNumber = filters.accession_number
    ds.StudyInstanceUID = filters.study_instance_uid
    sps = Dataset()
    for key in _SPS_KEYS:
        setattr(sps, key, "")
    sps.Modality = filters.modality
    sps.ScheduledStationAETitle = filters.station_ae_title
    sps.ScheduledProcedureStepStartDate = filters.date_range()
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


# --- reply items -----------------------------------------------------------------------------
class _Malformed(Exception):
    """A reply item the console cannot use (the message is the reason)."""


def _str(ds: Dataset, keyword: str, *, required: bool = False) -> str:
    """The value of ``keyword`` as text, decoded in the dataset's character set."""
    try:
        value = ds.get(keyword)
        if value is not None and not isinstance(value, (str, bytes)) and hasattr(
                value, "__iter__") and not hasattr(value, "components"):
            value = "\\".join(str(v) for v in value)
        text = "" if value is None else str(value)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad values
        raise _Malformed(f"{keyword}: cannot be read ({exc})") from None
    if "\ufffd" in text:  # pydicom replaces what the character set cannot decode
        charset = ds.get("SpecificCharacterSet") or "the default repertoire"
        raise _Malformed(f"{keyword}: not valid text in {charset}")
    text = text.strip().rstrip("=").strip() if keyword.endswith("Name") else text.strip()
    if required and not text:
        raise _Malformed(f"{keyword} is missing or empty")
    if any(ord(c) < 0x20 and c != "\t" for c in text):
        raise _Malformed(f"{keyword}: contains control characters")
    return text


def _iso_date(ds: Dataset, keyword: str) -> str:
    text = _str(ds, keyword)
    if not text:
        return ""
    if not _DATE.fullmatch(text):
        raise _Malformed(f"{keyword}: {text!r} is not a date (YYYYMMDD)")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:])).isoformat()
    except ValueError:
        raise _Malformed(f"{keyword}: {text!r} is not a date") from None


def _iso_time(ds: Dataset, keyword: str) -> str:
    text = _str(ds, keyword).replace(":", "")
    if not text:
        return ""
    if not _TIME.fullmatch(text) or int(text[:2]) > 23 or (
            len(text) >= 4 and int(text[2:4]) > 59) or (len(text) >= 6 and int(text[4:6]) > 60):
        raise _Malformed(f"{keyword}: {text!r} is not a time (HHMMSS)")
    text = (text.split(".")[0] + "0000")[:6]
    return f"{text[:2]}:{text[2:4]}:{text[4:6]}"


def _number(ds: Dataset, keyword: str, scale: float, high: float) -> int:
    text = _str(ds, keyword)
    if not text:
        return 0
    try:
        value = float(text) * scale
    except ValueError:
        raise _Malformed(f"{keyword}: {text!r} is not a number") from None
    if not 0 <= value <= high:
        raise _Malformed(f"{keyword}: {text!r} is out of range")
    return int(round(value))


def patient_age(dob: str, on: date) -> str:
    """The DICOM age (``5Y``, ``7M``, ``3W``, ``10D``) of a patient born on ``dob`` (ISO)."""
    if not dob:
        return ""
    born = date.fromisoformat(dob)
    if born > on:
        return ""
    days = (on - born).days
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    if months >= 24:
        return f"{months // 12}Y"
    if months >= 1:
        return f"{months}M"
    return f"{days // 7}W" if days >= 28 else f"{days}D"


def map_item(ds: Dataset, today: date | None = None) -> dict[str, Any]:
    """One reply identifier in the seed's study fields plus the worklist's attributes.

    Raises ``ValueError`` with the reason when the item cannot be used (see the module
    docstring).
    """
    try:
        return _map(ds, today or datetime.now(UTC).astimezone().date())
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _map(ds: Dataset, today: date) -> dict[str, Any]:
    charset = _str(ds, "SpecificCharacterSet")
    uid = _str(ds, "StudyInstanceUID", required=True)
    problem = uid_problem(uid)
    if problem:
        raise _Malformed(f"StudyInstanceUID {uid!r} {problem}")
    seq = ds.get("ScheduledProcedureStepSequence")
    if not isinstance(seq, Sequence) or len(seq) == 0:
        raise _Malformed("ScheduledProcedureStepSequence is missing or empty")
    sps = seq[0]
    step = {
        "scheduled_procedure_step_id": _str(sps, "ScheduledProcedureStepID"),
        "scheduled_procedure_step_description": _str(sps, "ScheduledProcedureStepDescription"),
        "modality": _str(sps, "Modality").upper(),
        "scheduled_station_ae_title": _str(sps, "ScheduledStationAETitle"),
        "scheduled_station_name": _str(sps, "ScheduledStationName"),
        "start_date": _iso_date(sps, "ScheduledProcedureStepStartDate"),
        "start_time": _iso_time(sps, "ScheduledProcedureStepStartTime"),
        "performing_physician": _str(sps, "ScheduledPerformingPhysicianName"),
        "location": _str(sps, "ScheduledProcedureStepLocation"),
        "status": _str(sps, "ScheduledProcedureStepStatus"),
    }
    dob = _iso_date(ds, "PatientBirthDate")
    sex = _str(ds, "PatientSex").upper()
    if sex not in ("", "M", "F", "O"):
        raise _Malformed(f"PatientSex: {sex!r} is not M, F or O")
    species = _str(ds, "PatientSpeciesDescription")
    neutered = _str(ds, "PatientSexNeutered").upper()
    if neutered not in ("", "ALTERED", "UNALTERED"):
        raise _Malformed(f"PatientSexNeutered: {neutered!r} is not ALTERED or UNALTERED")
    animal = species.upper() not in _HUMAN
    return {
        "study_instance_uid": uid,
        "specific_character_set": charset,
        "accession_number": _str(ds, "AccessionNumber"),
        "ref_physician": _str(ds, "ReferringPhysicianName"),
        "patient_id": _str(ds, "PatientID", required=True),
        "patient_name": _str(ds, "PatientName", required=True),
        "patient_age": patient_age(dob, step["start_date"] and date.fromisoformat(
            step["start_date"]) or today),
        "patient_dob": dob,
        "patient_sex": sex,
        "sex_neutered": neutered if animal else "",
        "weight": _number(ds, "PatientWeight", 1.0, 5000),
        "length": _number(ds, "PatientSize", 100.0, 1000),
        "patient_type": species if animal else "Human",
        "owner_name": _str(ds, "ResponsiblePerson") if animal else "",
        "variety": _str(ds, "PatientBreedDescription") if animal else "",
        "reg_source": REG_SOURCE,
        "study_description": _str(ds, "RequestedProcedureDescription"),
        "scheduled_procedure_step_start_date": step["start_date"] or None,
        "modality": step["modality"],
        "requested_procedure_id": _str(ds, "RequestedProcedureID"),
        "requested_procedure_description": _str(ds, "RequestedProcedureDescription"),
        "requested_procedure_priority": _str(ds, "RequestedProcedurePriority"),
        "scheduled_step": step,
    }


def _keys(ds: Dataset) -> dict[str, str]:
    """Identifying values of an unusable item, as far as they can be read (for the report)."""
    out = {}
    for key, name in (("StudyInstanceUID", "study_instance_uid"),
                      ("AccessionNumber", "accession_number"), ("PatientID", "patient_id")):
        try:
            out[name] = _str(ds, key)
        except _Malformed:
            out[name] = ""
    return out


# --- the query ---------------------------------------------------------------------------------
@dataclass
class WorklistResult:
    """What a query found: the usable items, the skipped ones, whether it was cut short."""

    node: Node
    items: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    truncated: bool
    limit: int
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"@type": "type.googleapis.com/dios.dicom.Worklist", "node_id": self.node.id,
                "node": self.node.name, "ae_title": self.node.ae_title,
                "count": len(self.items), "limit": self.limit, "truncated": self.truncated,
                "elapsed_ms": self.elapsed_ms, "items": self.items, "skipped": self.skipped}


def query(node: Node, config: DicomConfig, filters: WorklistFilters,
          abort: Abort | None = None) -> WorklistResult:
    """Query ``node``'s modality worklist as ``config.ae_title`` (see the module docstring).

    Raises ``DiosError``: ``INVALID_FIELD`` when the node has no ``worklist`` role,
    ``PEER_UNREACHABLE`` / ``DICOM_ERROR`` / ``TIMEOUT`` for the network.
    """
    if not node.has("worklist"):
        raise DiosError(INVALID_FIELD, f"node {node.name!r} has no worklist role",
                        field="node_id")
    ae = make_ae(config)
    ae.add_requested_context(ModalityWorklistInformationFind)
    started = time.monotonic()
    assoc, failure = open_association(ae, node, config, abort)
    if assoc is None:
        assert failure is not None
        raise DiosError(failure.code, failure.description, node_id=node.id)
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    truncated = False
    received = 0
    release = True
    where = f"{node.ae_title} at {node.host}:{node.port}"
    try:
        msg_id = 1
        last = time.monotonic()
        for status, ident in assoc.send_c_find(identifier(filters),
                                               ModalityWorklistInformationFind, msg_id=msg_id):
            code = status.get("Status") if status is not None else None
            if code is None:  # no answer in time, or the association went down
                release = False
                if abort is not None and abort.aborted:
                    raise DiosError(DICOM_ERROR, f"{where}: stopped by the console")
                silent = time.monotonic() - last
                if assoc.is_aborted and silent < config.dimse_timeout * 0.9:
                    raise DiosError(DICOM_ERROR, f"{where} aborted the association during "
                                    "the worklist query", node_id=node.id)
                raise DiosError(TIMEOUT, f"{where} did not answer the worklist query within "
                                f"{config.dimse_timeout:g} s", node_id=node.id)
            last = time.monotonic()
            code = int(code)
            if code in _PENDING:
                received += 1
                if truncated:
                    if received > filters.limit + _AFTER_CANCEL:
                        release = False  # the peer ignores the cancel: stop it
                        break
                    continue  # sent before the peer saw the cancel: dropped
                if len(items) + len(skipped) >= filters.limit:
                    truncated = True
                    assoc.send_c_cancel(msg_id, query_model=ModalityWorklistInformationFind)
                    continue
                if ident is None:
                    skipped.append({"index": received - 1, "reason": "no identifier"})
                    continue
                try:
                    items.append(map_item(ident))
                except ValueError as exc:
                    skipped.append({"index": received - 1, "reason": str(exc), **_keys(ident)})
                continue
            if code == 0x0000 or (code == _CANCELLED and truncated):
                break
            comment = status.get("ErrorComment", "")
            raise DiosError(DICOM_ERROR, f"{where} answered the worklist query with status "
                            f"0x{code:04X}{': ' + str(comment) if comment else ''}",
                            node_id=node.id, status=f"0x{code:04X}")
    finally:
        close_association(assoc, release=release and assoc.is_established)
    return WorklistResult(node, items, skipped, truncated, filters.limit,
                          round((time.monotonic() - started) * 1000.0, 2))


def fetch_item(node: Node, config: DicomConfig, study_instance_uid: str = "",
               accession_number: str = "") -> dict[str, Any]:
    """The one worklist item of ``study_instance_uid`` (or ``accession_number``) on ``node``.

    ``NOT_FOUND`` when the node has none (or only unusable ones: the reason is given),
    ``INVALID_FIELD`` when an accession number matches items of different studies.
    """
    if not study_instance_uid and not accession_number:
        raise DiosError(MISSING_FIELD, "study_instance_uid or accession_number",
                        field="study_instance_uid")
    filters = WorklistFilters.from_request({"study_instance_uid": study_instance_uid,
                                            "accession_number": accession_number,
                                            "limit": MAX_LIMIT})
    found = query(node, config, filters)
    # some SCPs (dcmtk's wlmscpfs) do not match on Study Instance UID: match here as well
    items = [i for i in found.items
             if (not study_instance_uid or i["study_instance_uid"] == study_instance_uid)
             and (not accession_number or i["accession_number"] == accession_number)]
    key = study_instance_uid or accession_number
    if not items:
        why = ""
        for skipped in found.skipped:
            if accession_number and skipped.get("accession_number") == accession_number or \
                    study_instance_uid and skipped.get("study_instance_uid") == study_instance_uid:
                why = f" ({skipped['reason']})"
                break
        raise DiosError(NOT_FOUND, f"no usable worklist item {key} on {node.name}{why}",
                        field="study_instance_uid" if study_instance_uid else "accession_number")
    studies = {i["study_instance_uid"] for i in items}
    if len(studies) > 1:
        raise DiosError(INVALID_FIELD, f"accession number {accession_number} names "
                        f"{len(studies)} studies on {node.name}; give the study_instance_uid",
                        field="accession_number")
    return items[0]


# --- registration ---------------------------------------------------------------------------------
class StudyRegistrar(Protocol):
    """What registration needs of the study service."""

    def register_from_worklist(self, item: dict[str, Any], request: dict[str, Any], *,
                               product: str | None = None, language: str = "en",
                               user: str = "") -> dict[str, Any]: ...


def mwl_record(item: dict[str, Any], node: Node | None = None) -> str:
    """The study's ``mwl`` value: the worklist attributes the study came from (JSON text)."""
    step = item.get("scheduled_step") if isinstance(item.get("scheduled_step"), dict) else {}
    record = {
        "node": node.name if node is not None else str(item.get("node", ""))[:64],
        "ae_title": node.ae_title if node is not None else str(item.get("ae_title", ""))[:16],
        "requested_procedure_id": item.get("requested_procedure_id", ""),
        "requested_procedure_description": item.get("requested_procedure_description", ""),
        "scheduled_procedure_step_id": step.get("scheduled_procedure_step_id", ""),
        "scheduled_procedure_step_description":
            step.get("scheduled_procedure_step_description", ""),
        "scheduled_station_ae_title": step.get("scheduled_station_ae_title", ""),
        "scheduled_station_name": step.get("scheduled_station_name", ""),
        "start_date": step.get("start_date", ""),
        "start_time": step.get("start_time", ""),
        "modality": step.get("modality", ""),
        "performing_physician": step.get("performing_physician", ""),
        "specific_character_set": item.get("specific_character_set", ""),
    }
    for name, value in record.items():
        if not isinstance(value, str) or len(value) > 256:
            raise DiosError(INVALID_FIELD, f"item.{name}: text of at most 256 characters",
                            field=f"item.{name}")
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def register_from_worklist(study: StudyRegistrar, request: dict[str, Any], *,
                           node: Node | None = None, config: DicomConfig | None = None,
                           product: str | None = None, language: str = "en",
                           user: str = "") -> dict[str, Any]:
    """Register a study from a worklist item; return ``dr.study.Study``.

    ``request``: ``views`` (as ``study.register`` takes them), and either ``item`` (an
    item as :func:`query` returned it) or ``study_instance_uid`` / ``accession_number``
    to find the item again on ``node`` (then ``node`` and ``config`` are needed). The
    patient/study fields the worklist does not carry (``patient_size``, ``study_type``,
    ``weight`` ...) may be given beside them.
    """
    if not isinstance(request, dict):
        raise DiosError(INVALID_FIELD, "the request must be an object")
    item = request.get("item")
    if item is None:
        if node is None or config is None:
            raise DiosError(MISSING_FIELD, "item (or node_id with study_instance_uid)",
                            field="item")
        uid = request.get("study_instance_uid") or ""
        accession = request.get("accession_number") or ""
        for name, value in (("study_instance_uid", uid), ("accession_number", accession)):
            if not isinstance(value, str):
                raise DiosError(INVALID_FIELD, f"{name}: a string", field=name)
        item = fetch_item(node, config, uid, accession)
    elif not isinstance(item, dict):
        raise DiosError(INVALID_FIELD, "item: an object, as the worklist query returned it",
                        field="item")
    item = dict(item)
    item["mwl"] = mwl_record(item, node)
    rest = {k: v for k, v in request.items()
            if k not in ("item", "node_id", "study_instance_uid", "accession_number")}
    return study.register_from_worklist(item, rest, product=product, language=language,
                                        user=user)
