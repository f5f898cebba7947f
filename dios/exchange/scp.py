"""The console's own DICOM SCP: verification, query/retrieve over its store, storage of priors.

Who may call
------------
Only a node of the address book with ``allow_incoming`` may associate, with its AE title
from its host (:meth:`~dios.exchange.nodes.NodeStore.find_caller`; a node given by host
name also matches the addresses that name resolves to). Anyone else is rejected
(rejected-permanent, calling AE title not recognised); a called AE title other than the
console's own (``[dicom] ae_title``) is rejected (called AE title not recognised); beyond
``max_associations`` at once the association is rejected transiently (local limit
exceeded). The ``[dicom]`` timeouts apply to every association (ACSE, DIMSE, network) and
to the associations a C-MOVE opens.

Services
--------
* **C-ECHO** (Verification).
* **C-FIND** on Patient Root (PATIENT, STUDY, SERIES, IMAGE levels) and Study Root (STUDY,
  SERIES, IMAGE) over the console's stored images (``storage_status`` Saved, with a file)
  and the instances other nodes stored here (table ``dicom_received``). Matching follows
  PS3.4 C.2.2.2: universal (empty value), single value, wildcards ``*`` and ``?`` on text
  (person names case-insensitively), UID lists (``\\``-separated), date and time ranges
  (``a-b``, ``a-``, ``-b``), value lists on ``ModalitiesInStudy`` and other code strings.
  Keys of a level below the query level are returned empty and do not take part; keys
  this module does not index are answered (and matched) from the matching instance's
  file header. Every requested key is returned, empty when there is no value; text goes
  out in the study's character set, ``ISO_IR 192`` (UTF-8) when it is not ASCII.
* **C-GET** and **C-MOVE** on both models: the same matching selects instances, whose
  files are sent as C-STORE sub-operations (on the same association for C-GET; to the
  move destination, which must be a node of the address book, found by AE title, for
  C-MOVE: an unknown destination is status ``0xA801``). A file that has gone missing is
  a failed sub-operation; the final response carries the sub-operation counts.
* **C-STORE** of incoming instances (moved priors): SOP Class/Instance UIDs must match the
  request and, like the Study and Series Instance UIDs, be valid UIDs before they name a
  file; the file is written atomically as ``<data_dir>/received/<study uid>/<sop uid>.dcm``
  and indexed in ``dicom_received``. An instance already held (received before, or one of
  the console's own images) is answered with success and nothing is replaced.

Bad requests (an identifier that cannot be decoded, an unknown or missing level, a level
the model does not have, a retrieval without the level's unique key) get a failure
status (``0xA900`` for C-FIND, an "unable to process" ``0xCxxx`` for C-GET and C-MOVE),
never a crash. Each association runs on its own thread (pynetdicom's); :meth:`DicomScp.close`
aborts those still open and waits for their threads.

Imports: pydicom, pynetdicom, :mod:`dios.atomic`, :mod:`dios.codes`, :mod:`dios.config`,
:mod:`dios.dicom.values`, :mod:`dios.store`, :mod:`dios.uids` and the node address book.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dios.atomic import atomic_write_bytes
from dios.codes import DICOM_ERROR, DiosError
from dios.config import DicomConfig
from dios.dicom.values import datetime_value, dicom_study_id, local_time
from dios.exchange.nodes import Node, NodeStore
from dios.store.db import Database
from dios.uids import uid_problem

__all__ = ["DicomScp", "QueryError"]

log = logging.getLogger("dios.exchange.scp")

# -- DIMSE statuses used here (PS3.4 C.4, PS3.7 C) ----------------------------------------
SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900  # Identifier does not match SOP Class (C-FIND)
UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
STORE_OUT_OF_RESOURCES = 0xA700
STORE_MISMATCH = 0xA900  # Data Set does not match SOP Class
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_PROCESSING_FAILURE = 0x0110

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: Query/retrieve SOP classes -> (information model, DIMSE service).
_MODELS: dict[str, tuple[str, str]] = {
    PatientRootQueryRetrieveInformationModelFind: ("PATIENT", "FIND"),
    PatientRootQueryRetrieveInformationModelGet: ("PATIENT", "GET"),
    PatientRootQueryRetrieveInformationModelMove: ("PATIENT", "MOVE"),
    StudyRootQueryRetrieveInformationModelFind: ("STUDY", "FIND"),
    StudyRootQueryRetrieveInformationModelGet: ("STUDY", "GET"),
    StudyRootQueryRetrieveInformationModelMove: ("STUDY", "MOVE"),
}

#: The level each indexed key belongs to (0 PATIENT .. 3 IMAGE).
_KEY_LEVEL: dict[str, int] = {
    **dict.fromkeys(("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                     "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                     "NumberOfPatientRelatedInstances"), 0),
    **dict.fromkeys(("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                     "StudyID", "StudyDescription", "ReferringPhysicianName",
                     "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                     "NumberOfStudyRelatedInstances"), 1),
    **dict.fromkeys(("SeriesInstanceUID", "Modality", "SeriesNumber", "BodyPartExamined",
                     "NumberOfSeriesRelatedInstances"), 2),
    **dict.fromkeys(("SOPInstanceUID", "SOPClassUID", "InstanceNumber"), 3),
}

#: The unique key of each level (what a retrieval must name).
_UNIQUE = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: Keys answered by the SCP itself, never from a file.
_COUNTS = {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
           "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
           "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
           "ModalitiesInStudy"}

_UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, "1.2.840.10008.1.2.2"}
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
_SEX = {"M": "M", "F": "F", "O": "O"}


class QueryError(ValueError):
    """A query or retrieval identifier the SCP cannot process (a failure status)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# --------------------------------------------------------------------------------------------
# instances: what the queries see
# --------------------------------------------------------------------------------------------


@dataclass
class _Instance:
    """One stored instance (the console's own or a received one) and its indexed keys."""

    values: dict[str, str]
    path: Path | None
    charset: str = ""
    source: str = "console"
    _header: Dataset | None = field(default=None, repr=False)
    _header_read: bool = field(default=False, repr=False)

    @property
    def sop_uid(self) -> str:
        return self.values["SOPInstanceUID"]

    def header(self) -> Dataset | None:
        """The file's attributes without pixel data (read once; None if unreadable)."""
        if not self._header_read:
            self._header_read = True
            if self.path is not None:
                try:
                    self._header = dcmread(self.path, stop_before_pixels=True)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is "no header"
                    log.warning("cannot read the header of %s: %s", self.path, exc)
        return self._header

    def element(self, keyword: str) -> DataElement | None:
        """The file header's element for ``keyword`` (None when absent)."""
        ds = self.header()
        if ds is None or keyword not in ds:
            return None
        return ds[keyword]

    def get(self, keyword: str) -> list[str]:
        """The values of ``keyword``: indexed, else from the file header ([] = none)."""
        if keyword in self.values:
            value = self.values[keyword]
            if keyword == "SOPClassUID" and not value:
                elem = self.element(keyword)
                value = str(elem.value) if elem is not None and elem.value else ""
                self.values[keyword] = value
            return [value] if value != "" else []
        elem = self.element(keyword)
        return _element_strings(elem)


def _element_strings(elem: DataElement | None) -> list[str]:
    if elem is None or elem.VR == "SQ" or elem.value is None or elem.value == "":
        return []
    values = elem.value if isinstance(elem.value, (MultiValue, list)) else [elem.value]
    return [str(v).strip() for v in values if str(v) != ""]


@dataclass
class _Entity:
    """The instances of one patient, study, series or image (what one response describes)."""

    instances: list[_Instance]

    @property
    def first(self) -> _Instance:
        return self.instances[0]

    def count(self, key: str) -> int:
        return len({i.values[key] for i in self.instances})

    def derived(self, keyword: str) -> list[str] | None:
        """The keys computed over the entity's instances (None: not one of them)."""
        if keyword == "ModalitiesInStudy":
            return sorted({m for i in self.instances for m in i.get("Modality")})
        counts = {"NumberOfPatientRelatedStudies": "StudyInstanceUID",
                  "NumberOfPatientRelatedSeries": "SeriesInstanceUID",
                  "NumberOfPatientRelatedInstances": "SOPInstanceUID",
                  "NumberOfStudyRelatedSeries": "SeriesInstanceUID",
                  "NumberOfStudyRelatedInstances": "SOPInstanceUID",
                  "NumberOfSeriesRelatedInstances": "SOPInstanceUID"}
        if keyword in counts:
            return [str(self.count(counts[keyword]))]
        return None

    def get(self, keyword: str) -> list[str]:
        derived = self.derived(keyword)
        return derived if derived is not None else self.first.get(keyword)


# --------------------------------------------------------------------------------------------
# matching (PS3.4 C.2.2.2)
# --------------------------------------------------------------------------------------------


def _glob(pattern: str, text: str) -> bool:
    """``*`` (any run) and ``?`` (one character) matching, in O(len(pattern) * len(text))
    whatever the pattern (no regular expression, so no catastrophic backtracking)."""
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _range_bounds(text: str, width: int) -> tuple[str, str]:
    low, _, high = text.partition("-")
    low = low.strip()
    high = high.strip()
    return low.ljust(width, "0") if low else "", high.ljust(width, "9") if high else ""


def _norm_time(value: str) -> str:
    return value.replace(":", "").split(".")[0]


def matches(vr: str, query: str, candidates: list[str]) -> bool:
    """Whether one key's query value matches an entity's values (PS3.4 C.2.2.2).

    Parameters
    ----------
    vr : str
        The key's value representation (``UI``, ``DA``, ``PN`` ...).
    query : str
        The identifier's value, as text; empty = universal matching.
    candidates : list of str
        The entity's values for the key (several for a multi-valued attribute).
    """
    query = query.strip()
    if query == "" or query == "*":
        return True
    values = [c.strip() for c in candidates]
    if vr == "UI":
        wanted = {q.strip() for q in query.split("\\")}
        return any(v in wanted for v in values)
    if vr in ("DA", "TM", "DT"):
        width = {"DA": 8, "TM": 6, "DT": 14}[vr]
        norm = _norm_time if vr == "TM" else (lambda s: s)
        for q in query.split("\\"):
            is_range = bool(re.fullmatch(r"[\d.]*-[\d.]*", q)) if vr == "DT" else "-" in q
            if is_range:
                low, high = _range_bounds(norm(q) if vr == "TM" else q, width)
                for v in values:
                    v = norm(v)[:width]
                    if v and (not low or v >= low[:len(v)]) and (not high or v <= high[:len(v)]):
                        return True
            elif any(norm(v) == norm(q.strip()) for v in values):
                return True
        return False
    case_insensitive = vr == "PN"
    alternatives = query.split("\\") if vr in ("CS", "AE", "IS", "US", "UL") else [query]
    for q in alternatives:
        q = q.strip()
        if "*" in q or "?" in q:
            if case_insensitive:
                if any(_glob(q.casefold(), v.casefold()) for v in values):
                    return True
            elif any(_glob(q, v) for v in values):
                return True
        elif case_insensitive:
            if any(v.casefold() == q.casefold() for v in values):
                return True
        elif q in values:
            return True
    return False


def _key_vr(elem: DataElement) -> str:
    try:
        vr = dictionary_VR(elem.tag)
    except KeyError:
        return str(elem.VR)
    return vr if " or " not in vr else str(elem.VR)


def _query_text(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list)):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


# --------------------------------------------------------------------------------------------
# the SCP
# --------------------------------------------------------------------------------------------


class DicomScp:
    """The console's storage and query/retrieve SCP (see the module docstring).

    Parameters
    ----------
    db : Database
        The console's database: studies, series, images, ``dicom_received``.
    nodes : NodeStore
        The address book: who may call in, where C-MOVE sends to.
    config : DicomConfig
        Own AE title, the address to listen on (port 0: no listener) and the timeouts.
    data_dir : path
        The console's data directory: image paths in the store are relative to it;
        received instances go under its ``received/``.
    max_associations : int
        Associations served at once; more are rejected (transient, local limit exceeded).
    """

    def __init__(self, db: Database, nodes: NodeStore, config: DicomConfig,
                 data_dir: str | os.PathLike[str], *, max_associations: int = 10) -> None:
        if not isinstance(max_associations, int) or max_associations < 1:
            raise ValueError("max_associations must be a positive integer")
        self.db = db
        self.nodes = nodes
        self.config = config
        self.data_dir = Path(data_dir).resolve()
        self.received_dir = self.data_dir / "received"
        self.max_associations = max_associations
        self._ae: AE | None = None
        self._server: Any = None
        self._lock = threading.Lock()
        self._storing: set[str] = set()

    # -- life cycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the SCP listens on (0 when it does not)."""
        if self._server is None:
            return 0
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def _make_ae(self) -> AE:
        cfg = self.config
        ae = AE(ae_title=cfg.ae_title)
        ae.acse_timeout = cfg.acse_timeout
        ae.dimse_timeout = cfg.dimse_timeout
        ae.network_timeout = cfg.network_timeout
        ae.connection_timeout = cfg.connect_timeout
        ae.maximum_associations = self.max_associations
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for uid in _MODELS:
            ae.add_supported_context(uid)
        for cx in AllStoragePresentationContexts:
            # SCP of storage for C-STORE, and the SCU role asked by C-GET requestors
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES,
                                     scu_role=True, scp_role=True)
        return ae

    def start(self) -> DicomScp:
        """Listen on ``config.host``:``config.port`` (nothing when the port is 0).

        Raises ``DICOM_ERROR`` when the address cannot be bound (state unchanged).
        """
        if self._server is not None or self.config.port == 0:
            return self
        ae = self._make_ae()
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_STORE, self._on_store),
        ]
        try:
            server = ae.start_server((self.config.host, self.config.port), block=False,
                                     evt_handlers=handlers)
        except OSError as exc:
            ae.shutdown()
            raise DiosError(DICOM_ERROR, f"cannot listen on {self.config.host}:"
                            f"{self.config.port}: {exc.strerror or exc}") from None
        self._ae, self._server = ae, server
        log.info("DICOM SCP %s listening on %s:%d", self.config.ae_title, self.config.host,
                 self.port)
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop listening, abort the associations still open and wait for their threads.

        An association being refused is left to finish its refusal (aborting it then is
        not a valid transition); one that lingers past a few seconds has its connection
        closed.
        """
        ae, server, self._ae, self._server = self._ae, self._server, None, None
        if ae is None:
            return
        server.shutdown()  # no new associations
        for assoc in list(ae.active_associations):
            if assoc.is_established:
                with contextlib.suppress(Exception):
                    assoc.abort()
        deadline = time.monotonic() + timeout
        grace = min(deadline, time.monotonic() + 5.0)
        for assoc in list(ae.active_associations):
            assoc.join(max(0.0, grace - time.monotonic()))
        for assoc in list(ae.active_associations):
            sock = getattr(assoc.dul, "socket", None)
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
            assoc.join(max(0.0, deadline - time.monotonic()))
        ae.shutdown()

    def __enter__(self) -> DicomScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- who may call ----------------------------------------------------------------------
    def caller(self, ae_title: str, host: str) -> Node | None:
        """The node allowed to call in with ``ae_title`` from address ``host`` (or None)."""
        node = self.nodes.find_caller(ae_title, host)
        if node is not None:
            return node
        for candidate in self.nodes.list():
            if not candidate.allow_incoming or candidate.ae_title != ae_title:
                continue
            try:
                ipaddress.ip_address(candidate.host)
                continue  # an address that did not match above
            except ValueError:
                pass
            try:
                infos = socket.getaddrinfo(candidate.host, None, proto=socket.IPPROTO_TCP)
            except OSError:
                continue
            if any(info[4][0] == host for info in infos):
                return candidate
        return None

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        host = str(assoc.requestor.address)
        if called != self.config.ae_title:
            log.warning("association from %s at %s refused: called AE title %r is not %r",
                        calling, host, called, self.config.ae_title)
            assoc.acse.send_reject(0x01, 0x01, 0x07)
            assoc.kill()
            return
        try:
            node = self.caller(calling, host)
        except Exception:  # noqa: BLE001 - the store failing is a transient refusal
            log.exception("checking the caller %s at %s failed", calling, host)
            assoc.acse.send_reject(0x02, 0x01, 0x01)
            assoc.kill()
            return
        if node is None:
            log.warning("association from unknown caller %s at %s refused", calling, host)
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.kill()
            return
        log.info("association from %s (%s) at %s", calling, node.name, host)

    # -- C-ECHO ------------------------------------------------------------------------------
    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    # -- the store as instances ---------------------------------------------------------------
    def _abs(self, path: str) -> Path | None:
        """A stored path (relative to the data directory) as an absolute path inside it."""
        if not path:
            return None
        p = Path(path)
        if not p.is_absolute():
            p = self.data_dir / p
        real = p.resolve()
        if self.data_dir not in real.parents:
            log.warning("stored path %s is outside the data directory; ignored", path)
            return None
        return real

    @staticmethod
    def _uid_filter(identifier: Dataset, keyword: str) -> list[str] | None:
        """The UIDs a unique key asks for (None: no restriction)."""
        if keyword not in identifier:
            return None
        text = _query_text(identifier[keyword]).strip()
        if not text or "*" in text or "?" in text:
            return None
        uids = [u.strip() for u in text.split("\\") if u.strip()]
        return uids if len(uids) <= 500 else None  # a long list: matched after the read

    def _instances(self, identifier: Dataset, level: int) -> list[_Instance]:
        """The stored instances, narrowed in SQL by the exact unique keys given."""
        wanted: dict[str, list[str]] = {}
        for rank, keyword in enumerate(_UNIQUE):
            if rank > level:
                break
            if keyword == "PatientID":
                if keyword in identifier:
                    text = _query_text(identifier[keyword]).strip()
                    if text and "*" not in text and "?" not in text and "\\" not in text:
                        wanted[keyword] = [text]
                continue
            uids = self._uid_filter(identifier, keyword)
            if uids is not None:
                wanted[keyword] = uids
        return self._console_instances(wanted) + self._received_instances(wanted)

    def _console_instances(self, wanted: dict[str, list[str]]) -> list[_Instance]:
        sql = ("SELECT i.sop_instance_id, i.secondary_sop_uid, i.series_instance_uid, "
               "i.study_instance_uid, i.image_file_path, i.sort AS instance_number, "
               "s.sort AS series_number, s.body_part, st.patient_id, st.patient_name, "
               "st.patient_dob, st.patient_sex, st.study_id, st.accession_number, "
               "st.study_description, st.ref_physician, st.study_start_datetime, "
               "st.specific_character_set, st.modality "
               "FROM images i JOIN series s ON s.series_instance_uid = i.series_instance_uid "
               "JOIN studies st ON st.study_id = i.study_id "
               "WHERE i.storage_status = 'Saved' AND i.image_file_path <> ''")
        params: list[Any] = []
        columns = {"PatientID": ["st.patient_id"],
                   "StudyInstanceUID": ["i.study_instance_uid"],
                   "SeriesInstanceUID": ["i.series_instance_uid"],
                   "SOPInstanceUID": ["i.sop_instance_id", "i.secondary_sop_uid"]}
        for keyword, values in wanted.items():
            marks = ", ".join("?" * len(values))
            sql += " AND (" + " OR ".join(f"{col} IN ({marks})" for col in columns[keyword]) + ")"
            params += values * len(columns[keyword])
        sql += " ORDER BY st.study_start_datetime, st.study_id, s.sort, i.sort"
        out = []
        for row in self.db.query(sql, params):
            moment = None
            with contextlib.suppress(ValueError, TypeError):
                moment = datetime_value(row["study_start_datetime"], "study_start_datetime")
            if moment is not None:
                moment = local_time(moment)
            dob = None
            with contextlib.suppress(ValueError, TypeError):
                dob = datetime_value(row["patient_dob"], "patient_dob")
            sop = row["secondary_sop_uid"] or row["sop_instance_id"]
            values = {
                "PatientID": row["patient_id"] or "",
                "PatientName": row["patient_name"] or "",
                "PatientBirthDate": dob.strftime("%Y%m%d") if dob else "",
                "PatientSex": _SEX.get(row["patient_sex"] or "", ""),
                "StudyInstanceUID": row["study_instance_uid"],
                "StudyDate": moment.strftime("%Y%m%d") if moment else "",
                "StudyTime": moment.strftime("%H%M%S") if moment else "",
                "AccessionNumber": row["accession_number"] or "",
                "StudyID": dicom_study_id(row["study_id"]),
                "StudyDescription": row["study_description"] or "",
                "ReferringPhysicianName": row["ref_physician"] or "",
                "SeriesInstanceUID": row["series_instance_uid"],
                "Modality": row["modality"] or "DX",
                "SeriesNumber": str(int(row["series_number"] or 1)),
                "SOPInstanceUID": sop,
                "SOPClassUID": "",
                "InstanceNumber": str(int(row["instance_number"] or 1)),
            }
            out.append(_Instance(values, self._abs(row["image_file_path"]),
                                 row["specific_character_set"] or "", "console"))
        return out

    def _received_instances(self, wanted: dict[str, list[str]]) -> list[_Instance]:
        sql = "SELECT * FROM dicom_received WHERE 1 = 1"
        params: list[Any] = []
        columns = {"PatientID": "patient_id", "StudyInstanceUID": "study_instance_uid",
                   "SeriesInstanceUID": "series_instance_uid",
                   "SOPInstanceUID": "sop_instance_uid"}
        for keyword, values in wanted.items():
            sql += f" AND {columns[keyword]} IN ({', '.join('?' * len(values))})"
            params += values
        sql += " ORDER BY study_date, study_instance_uid, series_instance_uid, received_at"
        out = []
        for row in self.db.query(sql, params):
            values = {
                "PatientID": row["patient_id"], "PatientName": row["patient_name"],
                "StudyInstanceUID": row["study_instance_uid"], "StudyDate": row["study_date"],
                "SeriesInstanceUID": row["series_instance_uid"], "Modality": row["modality"],
                "SOPInstanceUID": row["sop_instance_uid"], "SOPClassUID": row["sop_class_uid"],
            }
            out.append(_Instance(values, self._abs(row["path"]), "", "received"))
        return out

    # -- matching an identifier ------------------------------------------------------------------
    @staticmethod
    def _level(identifier: Dataset, root: str) -> int:
        if "QueryRetrieveLevel" not in identifier:
            raise QueryError(IDENTIFIER_MISMATCH, "QueryRetrieveLevel is missing")
        level = _query_text(identifier["QueryRetrieveLevel"]).strip().upper()
        if level not in LEVELS:
            raise QueryError(IDENTIFIER_MISMATCH, f"unknown QueryRetrieveLevel {level!r}")
        if root == "STUDY" and level == "PATIENT":
            raise QueryError(IDENTIFIER_MISMATCH, "the Study Root model has no PATIENT level")
        return LEVELS.index(level)

    def match(self, identifier: Dataset, root: str = "STUDY") -> tuple[int, list[_Entity]]:
        """The entities (patients, studies, series or images) ``identifier`` selects.

        Raises :class:`QueryError` for an identifier the SCP cannot process.
        """
        try:
            level = self._level(identifier, root)
            keys = [(elem, _key_vr(elem), keyword_for_tag(elem.tag))
                    for elem in identifier if elem.tag.group not in (0x0000, 0x0002)
                    and elem.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet")]
            queries = [(kw, vr, _query_text(elem)) for elem, vr, kw in keys
                       if kw and vr != "SQ" and _KEY_LEVEL.get(kw, level) <= level]
        except QueryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed identifier is a failure status
            raise QueryError(UNABLE_TO_PROCESS, f"the identifier cannot be decoded: {exc}") \
                from None
        instances = self._instances(identifier, level)
        group_key = _UNIQUE[level]
        groups: dict[str, list[_Instance]] = {}
        for inst in instances:
            groups.setdefault(inst.values[group_key], []).append(inst)
        entities = []
        for members in groups.values():
            entity = _Entity(members)
            if all(matches(vr, text, entity.get(kw)) for kw, vr, text in queries
                   if text.strip() not in ("", "*")):
                entities.append(entity)
        return level, entities

    def response(self, identifier: Dataset, level: int, entity: _Entity) -> Dataset:
        """The C-FIND response for ``entity``: every requested key, with its value."""
        ds = Dataset()
        ds.QueryRetrieveLevel = LEVELS[level]
        non_ascii = False
        for elem in identifier:
            if elem.tag.group in (0x0000, 0x0002) or elem.keyword in (
                    "QueryRetrieveLevel", "SpecificCharacterSet"):
                continue
            vr = _key_vr(elem)
            keyword = keyword_for_tag(elem.tag)
            if not keyword or elem.tag.is_private:
                ds.add_new(elem.tag, elem.VR, None)
                continue
            if vr == "SQ":
                ds.add_new(elem.tag, "SQ", [])
                continue
            if _KEY_LEVEL.get(keyword, level) > level:
                ds.add_new(elem.tag, vr, None)
                continue
            if keyword in _COUNTS or keyword in entity.first.values:
                values = entity.get(keyword)
                value: Any = None if not values else values[0] if len(values) == 1 else values
                ds.add_new(elem.tag, vr, value)
            else:
                source = entity.first.element(keyword)
                if source is None or source.VR == "SQ":
                    ds.add_new(elem.tag, vr, None)
                else:
                    ds.add_new(elem.tag, source.VR, source.value)
            if vr in _TEXT_VRS:
                non_ascii = non_ascii or not all(s.isascii() for s in _element_strings(ds[elem.tag]))
        if "RetrieveAETitle" not in ds:
            ds.RetrieveAETitle = self.config.ae_title
        if non_ascii:
            wanted = entity.first.charset
            codec = python_encoding.get(wanted)  # the study's set (single-byte or GB18030)
            charset = "ISO_IR 192"
            if codec and wanted != "ISO_IR 192":
                try:
                    for e in ds:
                        if e.VR in _TEXT_VRS:
                            for s in _element_strings(e):
                                s.encode(codec)
                    charset = wanted
                except (UnicodeEncodeError, LookupError):
                    charset = "ISO_IR 192"
            ds.SpecificCharacterSet = charset
        return ds

    # -- C-FIND ------------------------------------------------------------------------------
    def _model(self, event: evt.Event) -> tuple[str, str]:
        return _MODELS.get(str(event.context.abstract_syntax), ("STUDY", "FIND"))

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        root, _ = self._model(event)
        try:
            identifier = event.identifier
            level, entities = self.match(identifier, root)
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
            yield _status(exc.status, str(exc)), None
            return
        except Exception:  # noqa: BLE001 - a failure status, never a crash
            log.exception("C-FIND failed")
            yield _status(UNABLE_TO_PROCESS, "unable to process the query"), None
            return
        for entity in entities:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                ds = self.response(identifier, level, entity)
            except Exception:  # noqa: BLE001
                log.exception("C-FIND response failed")
                yield _status(UNABLE_TO_PROCESS, "unable to process the query"), None
                return
            yield PENDING, ds

    # -- C-GET / C-MOVE ----------------------------------------------------------------------
    def _retrieve(self, event: evt.Event) -> list[_Instance]:
        """The instances a C-GET or C-MOVE names (raises :class:`QueryError`)."""
        root, _ = self._model(event)
        try:
            identifier = event.identifier
        except Exception as exc:  # noqa: BLE001
            raise QueryError(UNABLE_TO_PROCESS, f"the identifier cannot be decoded: {exc}") \
                from None
        level = self._level(identifier, root)
        unique = _UNIQUE[level]
        if unique not in identifier or not _query_text(identifier[unique]).strip():
            raise QueryError(IDENTIFIER_MISMATCH, f"a {LEVELS[level]} retrieval needs {unique}")
        _, entities = self.match(identifier, root)
        seen: set[str] = set()
        out = []
        for entity in entities:
            for inst in entity.instances:
                if inst.sop_uid not in seen:
                    seen.add(inst.sop_uid)
                    out.append(inst)
        return out

    @staticmethod
    def _load(inst: _Instance) -> Dataset:
        """The instance's dataset to send; a stand-in that fails its sub-operation if the
        file cannot be read."""
        if inst.path is not None:
            try:
                return dcmread(inst.path)
            except Exception as exc:  # noqa: BLE001 - a failed sub-operation
                log.warning("cannot read %s for retrieval: %s", inst.path, exc)
        failed = Dataset()
        failed.SOPInstanceUID = inst.sop_uid
        return failed

    def _on_get(self, event: evt.Event) -> Iterator[Any]:
        try:
            instances = self._retrieve(event)
        except QueryError as exc:
            log.warning("C-GET from %s refused: %s", event.assoc.requestor.ae_title, exc)
            raise
        yield len(instances)
        for inst in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, self._load(inst)

    def _on_move(self, event: evt.Event) -> Iterator[Any]:
        destination = str(event.move_destination or "").strip()
        node = next((n for n in self.nodes.list() if n.ae_title == destination), None)
        if node is None:
            log.warning("C-MOVE from %s to unknown destination %r",
                        event.assoc.requestor.ae_title, destination)
            yield None, None
            return
        try:
            instances = self._retrieve(event)
        except QueryError as exc:
            log.warning("C-MOVE from %s refused: %s", event.assoc.requestor.ae_title, exc)
            yield node.host, node.port, {}
            raise
        yield node.host, node.port, {"contexts": self._contexts_for(instances)}
        yield len(instances)
        for inst in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, self._load(inst)

    @staticmethod
    def _contexts_for(instances: list[_Instance]) -> list[Any]:
        """Presentation contexts for sending ``instances``: each SOP class in its files'
        transfer syntaxes, plus the uncompressed ones (at most 128 contexts)."""
        syntaxes: dict[str, list[str]] = {}
        for inst in instances:
            if inst.path is None:
                continue
            try:
                meta = read_file_meta_info(inst.path)
            except Exception:  # noqa: BLE001 - the sub-operation will fail on its own
                continue
            sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
            ts = str(meta.get("TransferSyntaxUID", ""))
            if not sop_class:
                continue
            lst = syntaxes.setdefault(sop_class, [])
            if ts and ts not in lst:
                lst.append(ts)
        contexts = []
        for sop_class, lst in list(syntaxes.items())[:128]:
            if not lst or any(t in _UNCOMPRESSED for t in lst):
                lst += [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                        if t not in lst]
            contexts.append(build_context(sop_class, lst))
        if not contexts:
            contexts.append(build_context(Verification))
        return contexts

    # -- C-STORE -----------------------------------------------------------------------------
    def _held(self, sop_uid: str) -> bool:
        if self.db.query_one("SELECT 1 AS x FROM dicom_received WHERE sop_instance_uid = ?",
                             [sop_uid]):
            return True
        return bool(self.db.query_one(
            "SELECT 1 AS x FROM images WHERE (sop_instance_id = ? OR secondary_sop_uid = ?) "
            "AND storage_status = 'Saved'", [sop_uid, sop_uid]))

    def _on_store(self, event: evt.Event) -> int | Dataset:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop_uid = str(ds.get("SOPInstanceUID", "") or "")
            sop_class = str(ds.get("SOPClassUID", "") or "")
            study_uid = str(ds.get("StudyInstanceUID", "") or "")
            series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        except Exception as exc:  # noqa: BLE001 - undecodable data set
            log.warning("C-STORE from %s: the data set cannot be decoded: %s", calling, exc)
            return _status(STORE_CANNOT_UNDERSTAND, "the data set cannot be decoded")
        request = event.request
        if (sop_uid != str(request.AffectedSOPInstanceUID)
                or sop_class != str(request.AffectedSOPClassUID)):
            return _status(STORE_MISMATCH, "SOP Class/Instance UID differ from the request")
        for name, uid in (("SOPInstanceUID", sop_uid), ("SOPClassUID", sop_class),
                          ("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
            problem = uid_problem(uid)
            if problem:
                log.warning("C-STORE from %s refused: %s %r %s", calling, name, uid, problem)
                return _status(STORE_MISMATCH, f"{name} {problem}")
        with self._lock:
            if sop_uid in self._storing:
                return SUCCESS  # the same instance is being stored by another association
            self._storing.add(sop_uid)
        try:
            if self._held(sop_uid):
                log.info("C-STORE from %s: %s already held, kept", calling, sop_uid)
                return SUCCESS
            directory = self.received_dir / study_uid
            path = directory / f"{sop_uid}.dcm"
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                atomic_write_bytes(path, event.encoded_dataset())
            except OSError as exc:
                log.error("C-STORE from %s: cannot write %s: %s", calling, path, exc)
                return _status(STORE_OUT_OF_RESOURCES, "the instance cannot be written")
            row = {
                "sop_instance_uid": sop_uid, "sop_class_uid": sop_class,
                "study_instance_uid": study_uid, "series_instance_uid": series_uid,
                "patient_id": _text(ds, "PatientID"), "patient_name": _text(ds, "PatientName"),
                "study_date": _text(ds, "StudyDate"), "modality": _text(ds, "Modality"),
                "path": path.relative_to(self.data_dir).as_posix(), "calling_ae": calling,
                "received_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
            try:
                with self.db.transaction() as tx:
                    tx.insert("dicom_received", row)
            except self.db.integrity_errors:
                return SUCCESS  # stored meanwhile by another console of this database
            except Exception:  # noqa: BLE001 - the file without its row is removed
                log.exception("C-STORE from %s: indexing %s failed", calling, sop_uid)
                path.unlink(missing_ok=True)
                return _status(STORE_PROCESSING_FAILURE, "the instance cannot be indexed")
            log.info("C-STORE from %s: %s stored (study %s)", calling, sop_uid, study_uid)
            return SUCCESS
        finally:
            with self._lock:
                self._storing.discard(sop_uid)


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:  # noqa: BLE001 - a value that cannot be decoded is left empty
        return ""
    if isinstance(value, (MultiValue, list)):
        return "\\".join(str(v) for v in value)[:1024]
    return str(value or "")[:1024]


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds

