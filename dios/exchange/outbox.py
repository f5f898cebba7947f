"""The durable outbox: stored images sent to storage nodes (C-STORE SCU), one row per image
and node, in the database (table ``dicom_outbox``).

States of a row
---------------
``Queued`` -> ``Sending`` -> ``Sent`` | ``Failed``; ``Queued`` again after a failure that
may pass (with ``next_attempt_at`` pushed back), and after a resend (``Sent`` and
``Failed`` rows). At most one row per image and node: queueing an image that a node has
acknowledged (``Sent``) again does nothing unless it is a resend, so an image goes to a node
twice only when someone asks for it.

Sending
-------
One worker thread per node with due rows (``Queued`` and ``next_attempt_at`` <= now), at
most ``max_workers`` at once (other nodes wait their turn); a worker ends when its node has
no queued row left. It claims up to ``batch`` rows (``Queued`` -> ``Sending``, in one
transaction, so that two workers never take the same row), opens one association for them
with presentation contexts for the DX SOP classes (Digital X-Ray Image Storage - For
Presentation and - For Processing) and each file's own SOP class, and sends the files:

* transfer syntaxes proposed: the file's own, explicit and implicit VR little endian, and
  the lossless compressed syntaxes pydicom can encode here (RLE Lossless; JPEG-LS and JPEG
  2000 lossless when their encoders are installed: :data:`LOSSLESS`), each in a context of
  its own so the peer may accept several;
* a file goes as stored when the peer accepted its syntax (or, for an uncompressed file,
  another uncompressed one: pynetdicom converts between them); else re-encoded to a
  lossless syntax the peer accepted; a compressed file the peer takes only uncompressed
  is decompressed;
* status ``0x0000`` or a warning (``0x0001``, ``0xBxxx``) -> ``Sent`` with ``sent_at``;
  a failure status (``0xA7xx``, ``0xA9xx``, ``0xCxxx`` ...), a rejected association, a
  file the peer takes in no syntax -> ``last_status``/``last_error`` and back to
  ``Queued`` with backoff, ``Failed`` once ``attempts`` reaches ``max_attempts``;
* peer down, no answer (timeout), association aborted or transiently rejected -> back to
  ``Queued`` with backoff, never ``Failed`` (the node's other due rows wait as long);
* backoff after the n-th attempt: ``retry_initial * 2 ** (n - 1)`` seconds, at most
  ``retry_max`` (``[dicom]``).

Durability
----------
Rows are committed before anything is sent and change state only after the peer's
response. A console killed while sending leaves rows ``Sending``; :meth:`Outbox.recover`
(at start) puts them back to ``Queued``. An image whose C-STORE the peer had completed
but whose response was lost with the kill is then sent a second time: storage SCPs
identify an instance by its SOP Instance UID and keep one copy (Orthanc, dcmtk's storescp
with unique names, a PACS). A row is never marked ``Sent`` without the peer's
acknowledgement.

Events
------
On the hub, URI ``DIOS/EXCHANGE/<node name>``, kind ``state``: ``send.queued``,
``send.sent``, ``send.failed`` (for good) and ``send.retry`` (backed off), value the row's
state, data ``study_id``, ``sop_instance_uid``, ``node``, ``node_id``, ``state``,
``attempts``, ``last_status``, ``last_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.encoders import (
    JPEG2000LosslessEncoder,
    JPEGLSLosslessEncoder,
    RLELosslessEncoder,
)
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association

from dios import topics
from dios.codes import (
    DICOM_ERROR,
    INVALID_FIELD,
    NOT_FOUND,
    TIMEOUT,
    DiosError,
    ResultCode,
)
from dios.config import DicomConfig
from dios.exchange.echo import Abort, close_association, make_ae, open_association
from dios.exchange.nodes import Node, NodeStore
from dios.store.db import Database

__all__ = [
    "DX_SOP_CLASSES", "EXCHANGE_URI", "LOSSLESS", "SEND_FAILED", "SEND_QUEUED", "SEND_RETRY",
    "SEND_SENT", "STATES", "Outbox", "OutboxRow", "Sender", "exchange_uri",
]

log = logging.getLogger("dios.exchange.outbox")

STATES: tuple[str, ...] = ("Queued", "Sending", "Sent", "Failed")

EXCHANGE_URI = topics.EXCHANGE_URI
SEND_QUEUED = topics.SEND_QUEUED
SEND_SENT = topics.SEND_SENT
SEND_FAILED = topics.SEND_FAILED
SEND_RETRY = topics.SEND_RETRY

#: Digital X-Ray Image Storage - For Presentation, - For Processing
DX_SOP_CLASSES: tuple[str, ...] = ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1")

UNCOMPRESSED: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Lossless compressed transfer syntaxes pydicom can encode on this machine (best first).
LOSSLESS: tuple[str, ...] = tuple(
    str(enc.UID) for enc in (JPEGLSLosslessEncoder, JPEG2000LosslessEncoder, RLELosslessEncoder)
    if enc.is_available)


def exchange_uri(node_name: str) -> str:
    """The URI of a node's send events."""
    return EXCHANGE_URI.format(node=node_name)


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")


def _is_success(status: int) -> bool:
    """Success or a warning status (the instance is stored)."""
    return status == 0x0000 or status == 0x0001 or (status & 0xF000) == 0xB000


@dataclass
class OutboxRow:
    """One image for one node (the table's columns)."""

    id: int
    sop_instance_uid: str
    study_id: str
    node_id: int
    state: str
    attempts: int
    next_attempt_at: float
    last_status: str
    last_error: str
    transfer_syntax: str
    created_at: str
    updated_at: str
    sent_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OutboxRow:
        return cls(id=int(row["id"]), sop_instance_uid=row["sop_instance_uid"],
                   study_id=row["study_id"], node_id=int(row["node_id"]), state=row["state"],
                   attempts=int(row["attempts"]), next_attempt_at=float(row["next_attempt_at"]),
                   last_status=row["last_status"], last_error=row["last_error"],
                   transfer_syntax=row["transfer_syntax"], created_at=row["created_at"],
                   updated_at=row["updated_at"], sent_at=row["sent_at"])

    def to_dict(self, node_name: str = "") -> dict[str, Any]:
        out = asdict(self)
        out["node"] = node_name
        return out


class Outbox:
    """The ``dicom_outbox`` table: queue, claim, settle, list."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    # -- queueing --------------------------------------------------------------------------
    def recover(self) -> int:
        """Rows a stopped console left ``Sending`` go back to ``Queued``; returns how many."""
        return self.db.execute(
            "UPDATE dicom_outbox SET state = 'Queued', updated_at = ? WHERE state = 'Sending'",
            [_iso(self.clock())])

    def enqueue(self, sop_uid: str, study_id: str, node_id: int,
                resend: bool = False) -> tuple[OutboxRow, bool]:
        """Queue one image for one node; ``(row, queued now)``.

        A row ``Queued`` or ``Sending`` stays as it is; a ``Failed`` one is queued again
        (attempts from zero); a ``Sent`` one only with ``resend``.
        """
        now = self.clock()
        with self.db.transaction() as tx:
            row = tx.query_one("SELECT * FROM dicom_outbox WHERE sop_instance_uid = ? "
                               "AND node_id = ?", [sop_uid, node_id])
            if row is None:
                tx.insert("dicom_outbox", {
                    "sop_instance_uid": sop_uid, "study_id": study_id, "node_id": node_id,
                    "state": "Queued", "attempts": 0, "next_attempt_at": 0.0,
                    "created_at": _iso(now), "updated_at": _iso(now)})
                changed = True
            elif row["state"] == "Failed" or (row["state"] == "Sent" and resend):
                tx.execute("UPDATE dicom_outbox SET state = 'Queued', attempts = 0, "
                           "next_attempt_at = 0, last_status = '', last_error = '', "
                           "updated_at = ? WHERE id = ?", [_iso(now), row["id"]])
                changed = True
            else:
                changed = False
            out = tx.query_one("SELECT * FROM dicom_outbox WHERE sop_instance_uid = ? "
                               "AND node_id = ?", [sop_uid, node_id])
        assert out is not None
        return OutboxRow.from_row(out), changed

    def claim(self, node_id: int, limit: int) -> list[OutboxRow]:
        """Take up to ``limit`` due rows of a node: ``Queued`` -> ``Sending``, oldest first."""
        now = self.clock()
        with self.db.transaction() as tx:
            rows = tx.query("SELECT * FROM dicom_outbox WHERE node_id = ? AND state = 'Queued' "
                            "AND next_attempt_at <= ? ORDER BY id LIMIT ?",
                            [node_id, now, limit])
            taken = []
            for row in rows:
                if tx.execute("UPDATE dicom_outbox SET state = 'Sending', updated_at = ? "
                              "WHERE id = ? AND state = 'Queued'", [_iso(now), row["id"]]) == 1:
                    row.update(state="Sending", updated_at=_iso(now))
                    taken.append(OutboxRow.from_row(row))
        return taken

    def next_due(self, node_id: int) -> float | None:
        """When the node's next queued row is due (None: nothing queued)."""
        row = self.db.query_one("SELECT MIN(next_attempt_at) AS t FROM dicom_outbox "
                                "WHERE node_id = ? AND state = 'Queued'", [node_id])
        return None if row is None or row["t"] is None else float(row["t"])

    def queued_nodes(self) -> list[int]:
        """The nodes that have queued rows."""
        return [int(r["node_id"]) for r in self.db.query(
            "SELECT DISTINCT node_id FROM dicom_outbox WHERE state = 'Queued' ORDER BY node_id")]

    # -- settling --------------------------------------------------------------------------
    def _settle(self, row: OutboxRow, changes: dict[str, Any]) -> OutboxRow:
        changes["updated_at"] = _iso(self.clock())
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self.db.transaction() as tx:
            tx.execute(f"UPDATE dicom_outbox SET {sets} WHERE id = ? AND state = 'Sending'",
                       [*changes.values(), row.id])
            got = tx.query_one("SELECT * FROM dicom_outbox WHERE id = ?", [row.id])
        return OutboxRow.from_row(got) if got is not None else row

    def sent(self, row: OutboxRow, status: int, transfer_syntax: str) -> OutboxRow:
        now = self.clock()
        return self._settle(row, {"state": "Sent", "attempts": row.attempts + 1,
                                  "last_status": f"0x{status:04X}", "last_error": "",
                                  "transfer_syntax": transfer_syntax, "sent_at": _iso(now)})

    def failed(self, row: OutboxRow, code: ResultCode, error: str, status: str = "",
               retry_in: float | None = None, count: bool = True) -> OutboxRow:
        """A failed try: back to ``Queued`` in ``retry_in`` seconds, or ``Failed`` (None)."""
        changes: dict[str, Any] = {"attempts": row.attempts + (1 if count else 0),
                                   "last_status": status,
                                   "last_error": f"{code.hex} {code.name}: {error}"[:1000]}
        if retry_in is None:
            changes["state"] = "Failed"
        else:
            changes.update(state="Queued", next_attempt_at=self.clock() + retry_in)
        return self._settle(row, changes)

    def release(self, row: OutboxRow) -> OutboxRow:
        """Not tried after all (the console is stopping): back to ``Queued`` as it was."""
        return self._settle(row, {"state": "Queued"})

    def defer_node(self, node_id: int, until: float) -> None:
        """Hold the node's other due rows back until ``until`` (its peer is down)."""
        self.db.execute("UPDATE dicom_outbox SET next_attempt_at = ? WHERE node_id = ? "
                        "AND state = 'Queued' AND next_attempt_at < ?", [until, node_id, until])

    def forget(self, study_id: str, sop_uids: list[str] | None = None) -> int:
        """Remove the rows of a deleted study (or of its deleted images)."""
        if sop_uids is None:
            return self.db.execute("DELETE FROM dicom_outbox WHERE study_id = ?", [study_id])
        n = 0
        with self.db.transaction() as tx:
            for sop in sop_uids:
                n += tx.execute("DELETE FROM dicom_outbox WHERE sop_instance_uid = ?", [sop])
        return n

    # -- reading ---------------------------------------------------------------------------
    def rows(self, state: str | None = None, study_id: str | None = None,
             node_id: int | None = None, sop_uid: str | None = None,
             limit: int = 500) -> list[OutboxRow]:
        """Rows by state, study, node or image (oldest first, at most ``limit``)."""
        if state is not None and state not in STATES:
            raise DiosError(INVALID_FIELD, f"state: one of {', '.join(STATES)}", field="state")
        where, params = self._where(state, study_id, node_id, sop_uid)
        return [OutboxRow.from_row(r) for r in self.db.query(
            f"SELECT * FROM dicom_outbox{where} ORDER BY id LIMIT ?", [*params, limit])]

    def counts(self, study_id: str | None = None, node_id: int | None = None,
               ) -> dict[str, int]:
        """How many rows are in each state."""
        where, params = self._where(None, study_id, node_id, None)
        out = dict.fromkeys(STATES, 0)
        for r in self.db.query(f"SELECT state, COUNT(*) AS n FROM dicom_outbox{where} "
                               "GROUP BY state", params):
            out[r["state"]] = int(r["n"])
        return out

    @staticmethod
    def _where(state: str | None, study_id: str | None, node_id: int | None,
               sop_uid: str | None) -> tuple[str, list[Any]]:
        terms, params = [], []
        for col, value in (("state", state), ("study_id", study_id), ("node_id", node_id),
                           ("sop_instance_uid", sop_uid)):
            if value is not None:
                terms.append(f"{col} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(terms)) if terms else "", params

    def image_states(self, sop_uid: str) -> list[str]:
        return [r["state"] for r in self.db.query(
            "SELECT state FROM dicom_outbox WHERE sop_instance_uid = ?", [sop_uid])]


# ------------------------------------------------------------------------------------------
# the sender
# ------------------------------------------------------------------------------------------


@dataclass
class _Item:
    row: OutboxRow
    path: Path
    meta: FileMetaDataset


class _Worker:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.wake = threading.Event()
        self.abort = Abort()
        self.thread: threading.Thread | None = None


#: Called with the rows a worker changed and the event name of each change.
Settled = Callable[[list[tuple[OutboxRow, str]]], None]


class Sender:
    """The worker threads that empty the outbox (see the module docstring).

    Parameters
    ----------
    outbox, nodes, config
        The table, the address book and the ``[dicom]`` settings (own AE title, timeouts,
        backoff).
    files
        The stored file of an image (None when the image or its file is gone).
    settled
        Told of every row a worker changed (after the change is committed), with the
        event name: ``send.sent``, ``send.failed`` or ``send.retry``.
    """

    def __init__(self, outbox: Outbox, nodes: NodeStore, config: DicomConfig,
                 files: Callable[[str], Path | None], settled: Settled, *, batch: int = 16,
                 max_workers: int = 8, max_attempts: int = 5) -> None:
        self.outbox = outbox
        self.nodes = nodes
        self.config = config
        self.files = files
        self.settled = settled
        self.batch = batch
        self.max_workers = max_workers
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._pending: list[int] = []
        self._closed = False
        self._started = False

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start workers for every node with queued rows."""
        with self._lock:
            self._started = True
        for node_id in self.outbox.queued_nodes():
            self.wake(node_id)

    def wake(self, node_id: int) -> None:
        """Rows were queued for ``node_id``: make sure a worker sends them."""
        with self._lock:
            if self._closed or not self._started:
                return
            worker = self._workers.get(node_id)
            if worker is not None:
                worker.wake.set()
                return
            if len(self._workers) >= self.max_workers:
                if node_id not in self._pending:
                    self._pending.append(node_id)
                return
            self._spawn(node_id)

    def _spawn(self, node_id: int) -> None:
        worker = _Worker(node_id)
        worker.thread = threading.Thread(target=self._run, args=(worker,), daemon=True,
                                         name=f"dios-dicom-send-{node_id}")
        self._workers[node_id] = worker
        worker.thread.start()

    def busy_nodes(self) -> list[int]:
        with self._lock:
            return sorted(self._workers)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: abort associations in progress (their rows go back to ``Queued``) and wait
        for the workers."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
            self._pending.clear()
        for w in workers:
            w.abort.abort()
            w.wake.set()
        deadline = time.monotonic() + timeout
        for w in workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(max(0.0, deadline - time.monotonic()))

    # -- the worker ------------------------------------------------------------------------
    def _run(self, worker: _Worker) -> None:
        try:
            while not self._closed:
                worker.wake.clear()
                try:
                    rows = self.outbox.claim(worker.node_id, self.batch)
                except DiosError as exc:  # the database is closing or failing
                    log.error("DICOM node %d: cannot read the outbox: %s", worker.node_id, exc)
                    worker.wake.wait(self.config.retry_initial)
                    continue
                if rows:
                    self._send(worker, rows)
                    continue
                due = self.outbox.next_due(worker.node_id)
                if due is None:
                    with self._lock:
                        if worker.wake.is_set() and not self._closed:
                            continue
                        self._workers.pop(worker.node_id, None)
                        if self._pending and not self._closed:
                            self._spawn(self._pending.pop(0))
                    return
                worker.wake.wait(min(max(due - self.outbox.clock(), 0.02), 5.0))
        except Exception:  # noqa: BLE001 - a worker's bug is logged, the rows stay queued
            log.exception("DICOM sender for node %d stopped", worker.node_id)
        finally:
            with self._lock:
                if self._workers.get(worker.node_id) is worker:
                    self._workers.pop(worker.node_id)

    def _backoff(self, attempts: int) -> float:
        cfg = self.config
        return min(cfg.retry_max, cfg.retry_initial * (2 ** max(0, attempts - 1)))

    def _send(self, worker: _Worker, rows: list[OutboxRow]) -> None:
        changes: list[tuple[OutboxRow, str]] = []
        try:
            self._send_batch(worker, rows, changes)
        finally:
            # whatever was not settled (a bug, the console stopping) goes back to Queued
            done = {r.id for r, _ in changes}
            for row in rows:
                if row.id not in done:
                    try:
                        self.outbox.release(row)
                    except DiosError:
                        pass
            if changes:
                self.settled(changes)

    def _fail(self, row: OutboxRow, code: ResultCode, error: str, status: str,
              changes: list[tuple[OutboxRow, str]], transient: bool) -> OutboxRow:
        attempts = row.attempts + 1
        if transient or attempts < self.max_attempts:
            new = self.outbox.failed(row, code, error, status, retry_in=self._backoff(attempts))
            changes.append((new, SEND_RETRY))
        else:
            new = self.outbox.failed(row, code, error, status, retry_in=None)
            changes.append((new, SEND_FAILED))
        return new

    def _send_batch(self, worker: _Worker, rows: list[OutboxRow],
                    changes: list[tuple[OutboxRow, str]]) -> None:
        try:
            node = self.nodes.get(worker.node_id)
        except DiosError:
            for row in rows:
                new = self.outbox.failed(row, NOT_FOUND, "the DICOM node was deleted")
                changes.append((new, SEND_FAILED))
            return
        items: list[_Item] = []
        for row in rows:
            path = self.files(row.sop_instance_uid)
            if path is None:
                new = self.outbox.failed(row, NOT_FOUND, "the image or its file is gone")
                changes.append((new, SEND_FAILED))
                continue
            try:
                meta = read_file_meta_info(path)
                _ = meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID
            except Exception as exc:  # noqa: BLE001 - an unreadable file fails its row only
                new = self.outbox.failed(row, DICOM_ERROR, f"the image file cannot be read: {exc}")
                changes.append((new, SEND_FAILED))
                continue
            items.append(_Item(row, path, meta))
        if not items:
            return
        ae = make_ae(self.config)
        for context in self._contexts(items):
            ae.add_requested_context(*context)
        assoc, failure = open_association(ae, node, self.config, worker.abort)
        if assoc is None:
            assert failure is not None
            if worker.abort.aborted:
                return  # stopping: the rows go back to Queued untouched
            for item in items:
                new = self._fail(item.row, failure.code, failure.description, "", changes,
                                 failure.transient)
            if failure.transient:
                self.outbox.defer_node(node.id, new.next_attempt_at)
            return
        try:
            self._store_all(worker, node, assoc, items, changes)
        finally:
            worker.abort.attach(None)
            close_association(assoc, release=assoc.is_established and not worker.abort.aborted)

    @staticmethod
    def _contexts(items: list[_Item]) -> list[tuple[str, list[str]]]:
        classes = list(DX_SOP_CLASSES)
        stored: dict[str, set[str]] = {}
        for item in items:
            sop_class = str(item.meta.MediaStorageSOPClassUID)
            if sop_class not in classes:
                classes.append(sop_class)
            stored.setdefault(sop_class, set()).add(str(item.meta.TransferSyntaxUID))
        out: list[tuple[str, list[str]]] = []
        for sop_class in classes:
            out.append((sop_class, list(UNCOMPRESSED)))
            out.extend((sop_class, [ts]) for ts in LOSSLESS)
            out.extend((sop_class, [ts]) for ts in sorted(stored.get(sop_class, ()))
                       if ts not in UNCOMPRESSED and ts not in LOSSLESS)
        return out

    def _store_all(self, worker: _Worker, node: Node, assoc: Association, items: list[_Item],
                   changes: list[tuple[OutboxRow, str]]) -> None:
        for number, item in enumerate(items, start=1):
            if self._closed or worker.abort.aborted:
                return
            if not assoc.is_established:
                for rest in items[number - 1:]:
                    self._fail(rest.row, DICOM_ERROR, f"{node.ae_title} ended the association",
                               "", changes, True)
                return
            try:
                ds, syntax = self._prepare(assoc, item)
            except ValueError as exc:
                self._fail(item.row, DICOM_ERROR, str(exc), "", changes, False)
                continue
            try:
                rsp = assoc.send_c_store(ds, msg_id=number % 65536)
            except (ValueError, AttributeError) as exc:
                self._fail(item.row, DICOM_ERROR, f"cannot encode the image: {exc}", "", changes,
                           False)
                continue
            except (OSError, RuntimeError) as exc:
                rsp, error = None, str(exc)
            else:
                error = ""
            status = rsp.get("Status") if rsp is not None else None
            if status is None:
                if worker.abort.aborted:
                    return
                lost = not assoc.is_established
                code = DICOM_ERROR if lost else TIMEOUT
                text = error or (f"{node.ae_title} aborted the association" if lost else
                                 f"no C-STORE response from {node.ae_title} within "
                                 f"{self.config.dimse_timeout:g} s")
                for rest in items[number - 1:]:
                    new = self._fail(rest.row, code, text, "", changes, True)
                self.outbox.defer_node(node.id, new.next_attempt_at)
                return
            status = int(status)
            if _is_success(status):
                changes.append((self.outbox.sent(item.row, status, syntax), SEND_SENT))
            else:
                comment = str(rsp.get("ErrorComment", "") or "")
                self._fail(item.row, DICOM_ERROR,
                           f"{node.ae_title} answered the C-STORE with status 0x{status:04X}"
                           + (f" ({comment})" if comment else ""), f"0x{status:04X}", changes,
                           False)

    @staticmethod
    def _prepare(assoc: Association, item: _Item) -> tuple[Dataset, str]:
        """The dataset to send and its transfer syntax (as stored when the peer allows)."""
        sop_class = str(item.meta.MediaStorageSOPClassUID)
        stored = str(item.meta.TransferSyntaxUID)
        accepted = [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == sop_class]
        ds = dcmread(item.path)
        if stored in accepted:
            return ds, stored
        plain = [ts for ts in UNCOMPRESSED if ts in accepted]
        if stored in UNCOMPRESSED and plain:
            return ds, plain[0]
        for syntax in LOSSLESS:
            if syntax in accepted:
                if stored not in UNCOMPRESSED:
                    ds.decompress()
                ds.compress(syntax)
                return ds, syntax
        if plain:
            ds.decompress()
            return ds, str(ds.file_meta.TransferSyntaxUID)
        raise ValueError(f"the peer accepted no transfer syntax for SOP class {sop_class}")
