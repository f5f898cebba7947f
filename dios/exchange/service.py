"""The exchange service: the DICOM network side as the API and ``dios serve`` see it.

:class:`ExchangeService` holds the node address book, verification ("test connection"),
and the durable outbox with its sender (:mod:`dios.exchange.outbox`). It is given the
database, the ``[dicom]`` settings, the event hub and the study service; it never calls
the acquisition: it listens on the hub.

* ``image.stored`` (``DIOS/TASK/Image``): the image is queued for every node with the
  ``storage`` role and ``auto_send`` (the handler runs on its subscription's thread and
  only writes rows: an exposure never waits for a PACS).
* ``study.deleted`` / ``image.deleted`` (``DIOS/STUDY/<id>``): their rows leave the outbox.

Each image's ``send_status`` follows its rows: ``Sending`` while any node still has it
queued or in flight, ``Sent`` when every node it was queued for acknowledged it,
``SendFailed`` when one gave up for good and none is left in flight; a study's
``is_exported`` is true when every stored image of it is ``Sent``.

Send events: see :mod:`dios.exchange.outbox` (``DIOS/EXCHANGE/<node name>``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dios import topics
from dios.codes import (
    IMAGE_NOT_FOUND,
    INVALID_FIELD,
    INVALID_TRANSITION,
    MISSING_FIELD,
    STUDY_NOT_FOUND,
    DiosError,
)
from dios.config import DicomConfig
from dios.exchange.echo import echo
from dios.exchange.nodes import Node, NodeStore
from dios.exchange.outbox import (
    SEND_QUEUED,
    STATES,
    Outbox,
    OutboxRow,
    Sender,
    exchange_uri,
)
from dios.exchange.scp import DicomScp
from dios.messages import Event, EventKind
from dios.store.db import Database

if TYPE_CHECKING:
    from dios.events import EventHub, Subscription

__all__ = ["ExchangeService", "StudyUpdates"]

log = logging.getLogger("dios.exchange.service")

#: The most rows one queue listing returns.
MAX_LIST = 1000


class StudyUpdates(Protocol):
    """What the exchange needs of the study service."""

    def set_send_status(self, sop_uid: str, send_status: str) -> dict[str, Any]: ...

    def set_exported(self, study_id: str, exported: bool) -> bool: ...


class ExchangeService:
    """Nodes, echo and the outbox (see the module docstring).

    Parameters
    ----------
    db : Database
        The console's database (tables ``dicom_nodes``, ``dicom_outbox``, ``images``).
    config : DicomConfig
        Own AE title, timeouts, backoff.
    data_dir : Path
        Where the image files' relative paths start.
    hub : EventHub, optional
        Events in (stored images, deletions) and out (send events).
    study : StudyUpdates, optional
        Keeps ``send_status`` and ``is_exported`` current.
    """

    def __init__(self, db: Database, config: DicomConfig, data_dir: Path,
                 hub: EventHub | None = None, study: StudyUpdates | None = None, *,
                 batch: int = 16, max_workers: int = 8, max_attempts: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.config = config
        self.data_dir = Path(data_dir)
        self.hub = hub
        self.study = study
        self.nodes = NodeStore(db)
        self.outbox = Outbox(db, clock)
        self.sender = Sender(self.outbox, self.nodes, config, self._file, self._settled,
                             batch=batch, max_workers=max_workers, max_attempts=max_attempts)
        self._subs: list[Subscription] = []
        self._status_lock = threading.Lock()
        self._started = False
        #: the console's own storage and query/retrieve SCP ([dicom] port; 0: none)
        self.scp = DicomScp(db, self.nodes, config, self.data_dir,
                            max_associations=config.max_associations)

    # -- life --------------------------------------------------------------------------------
    def start(self) -> ExchangeService:
        """Put rows a stopped console left ``Sending`` back to ``Queued``, listen on the hub
        and start sending what is queued."""
        if self._started:
            return self
        self._started = True
        recovered = self.outbox.recover()
        if recovered:
            log.warning("%d image(s) were being sent when the console stopped: queued again "
                        "(a peer may receive them twice; it keeps one copy by SOP Instance UID)",
                        recovered)
        if self.hub is not None:
            self._subs.append(self.hub.subscribe(topics.IMAGE_URI, self._on_image_event))
            self._subs.append(self.hub.subscribe(topics.STUDY_URI.format(study_id="*"),
                                                 self._on_study_event))
        self.sender.start()
        try:
            self.scp.start()
        except DiosError:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the SCP, stop listening and sending (rows in flight go back to ``Queued``)."""
        self.scp.close()
        for sub in self._subs:
            sub.close(drain=5.0)
        self._subs = []
        self.sender.close()

    # -- nodes -----------------------------------------------------------------------------
    def list_nodes(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes.list()]}

    def get_node(self, node_id: Any) -> dict[str, Any]:
        return self.nodes.get(node_id).to_dict()

    def create_node(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.nodes.create(args).to_dict()

    def update_node(self, node_id: Any, args: dict[str, Any]) -> dict[str, Any]:
        """Change the given fields; ``version`` (the node's current one) is required."""
        if args.get("version") is None:
            raise DiosError(MISSING_FIELD, "version", field="version")
        node = self.nodes.update(node_id, args)
        self.sender.wake(node.id)  # its address may have changed: try the queue again
        return node.to_dict()

    def delete_node(self, node_id: Any, version: Any = None) -> None:
        """Delete a node and its outbox rows."""
        node = self.nodes.get(node_id)
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise DiosError(INVALID_FIELD, "version: an integer", field="version")
        sops = [r.sop_instance_uid for r in self.outbox.rows(node_id=node.id, limit=10**9)]
        self.nodes.delete(node.id, version)
        self.db.execute("DELETE FROM dicom_outbox WHERE node_id = ?", [node.id])
        self._refresh_status(sops)

    def echo_node(self, node_id: Any) -> dict[str, Any]:
        """C-ECHO the node ("test connection"): the result, never an error for the network."""
        node = self.nodes.get(node_id)
        return {"node_id": node.id, "node": node.name, "ae_title": node.ae_title,
                **echo(node, self.config).to_dict()}

    # -- sending ---------------------------------------------------------------------------
    def send(self, node_id: Any, study_id: Any = None, sop_instance_uids: Any = None,
             resend: Any = False) -> dict[str, Any]:
        """Queue a study's stored images, or the given images, for a storage node.

        Rows already queued or in flight stay; failed ones are queued again; sent ones only
        with ``resend``. Everything is checked before anything is queued.
        """
        if node_id is None:
            raise DiosError(MISSING_FIELD, "node_id", field="node_id")
        if not isinstance(node_id, int) or isinstance(node_id, bool):
            raise DiosError(INVALID_FIELD, "node_id: an integer", field="node_id")
        node = self.nodes.get(node_id)
        if not node.has("storage"):
            raise DiosError(INVALID_FIELD, f"node_id: node {node.name!r} has no storage role",
                            field="node_id")
        if not isinstance(resend, bool):
            raise DiosError(INVALID_FIELD, "resend: true or false", field="resend")
        images = self._images_to_send(study_id, sop_instance_uids)
        rows: list[dict[str, Any]] = []
        queued = 0
        for sop, sid in images:
            row, changed = self.outbox.enqueue(sop, sid, node.id, resend=resend)
            rows.append(row.to_dict(node.name))
            if changed:
                queued += 1
                self._publish(node, row, SEND_QUEUED)
        self._refresh_status([sop for sop, _ in images])
        if queued:
            self.sender.wake(node.id)
        return {"node_id": node.id, "node": node.name, "queued": queued,
                "unchanged": len(images) - queued, "rows": rows}

    def _images_to_send(self, study_id: Any, sops: Any) -> list[tuple[str, str]]:
        if (study_id is None or study_id == "") == (sops is None or sops == []):
            raise DiosError(MISSING_FIELD, "study_id or sop_instance_uids (one of them)",
                            field="study_id")
        if sops is None or sops == []:
            if not isinstance(study_id, str) or len(study_id) > 64:
                raise DiosError(INVALID_FIELD, "study_id: a study id", field="study_id")
            if self.db.query_one("SELECT study_id FROM studies WHERE study_id = ?",
                                 [study_id]) is None:
                raise DiosError(STUDY_NOT_FOUND, study_id, field="study_id")
            return [(r["sop_instance_id"], study_id) for r in self.db.query(
                "SELECT sop_instance_id FROM images WHERE study_id = ? AND "
                "storage_status = 'Saved' ORDER BY sort, sop_instance_id", [study_id])]
        if (not isinstance(sops, list) or len(sops) > 1000
                or not all(isinstance(s, str) and 0 < len(s) <= 64 for s in sops)):
            raise DiosError(INVALID_FIELD, "sop_instance_uids: an array of up to 1000 UIDs",
                            field="sop_instance_uids")
        out = []
        for sop in dict.fromkeys(sops):
            row = self.db.query_one("SELECT study_id, storage_status FROM images "
                                    "WHERE sop_instance_id = ?", [sop])
            if row is None:
                raise DiosError(IMAGE_NOT_FOUND, sop, field="sop_instance_uids")
            if row["storage_status"] != "Saved":
                raise DiosError(INVALID_TRANSITION, f"{sop} is not stored yet",
                                field="sop_instance_uids")
            out.append((sop, row["study_id"]))
        return out

    def queue(self, state: Any = None, study_id: Any = None, node_id: Any = None,
              limit: Any = None) -> dict[str, Any]:
        """Outbox rows (oldest first) and the count in each state, filtered."""
        if state is not None and state not in STATES:
            raise DiosError(INVALID_FIELD, f"state: one of {', '.join(STATES)}", field="state")
        if node_id is not None:
            self.nodes.get(node_id)
        if study_id is not None and (not isinstance(study_id, str) or len(study_id) > 64):
            raise DiosError(INVALID_FIELD, "study_id: a study id", field="study_id")
        if limit is None:
            limit = 200
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
            raise DiosError(INVALID_FIELD, f"limit: 1 to {MAX_LIST}", field="limit")
        names = self._node_names()
        rows = self.outbox.rows(state, study_id, node_id, None, limit)
        return {"counts": self.outbox.counts(study_id, node_id),
                "rows": [r.to_dict(names.get(r.node_id, "")) for r in rows]}

    def image_results(self, sop_uid: Any) -> dict[str, Any]:
        """One image's send status and its result at each node."""
        if not isinstance(sop_uid, str) or not 0 < len(sop_uid) <= 64:
            raise DiosError(INVALID_FIELD, "instance_uid: a UID", field="instance_uid")
        image = self.db.query_one("SELECT study_id, send_status FROM images "
                                  "WHERE sop_instance_id = ?", [sop_uid])
        if image is None:
            raise DiosError(IMAGE_NOT_FOUND, sop_uid, field="instance_uid")
        names = self._node_names()
        return {"sop_instance_uid": sop_uid, "study_id": image["study_id"],
                "send_status": image["send_status"],
                "results": [r.to_dict(names.get(r.node_id, ""))
                            for r in self.outbox.rows(sop_uid=sop_uid)]}

    # -- hub -------------------------------------------------------------------------------
    def _on_image_event(self, event: Event) -> None:
        if event.name != topics.IMAGE_STORED:
            return
        data = event.data or {}
        sop, study_id = data.get("sop_instance_uid"), data.get("study_id")
        if not isinstance(sop, str) or not isinstance(study_id, str):
            return
        targets = [n for n in self.nodes.list("storage") if n.auto_send]
        for node in targets:
            row, changed = self.outbox.enqueue(sop, study_id, node.id)
            if changed:
                self._publish(node, row, SEND_QUEUED)
        if targets:
            self._refresh_status([sop])
            for node in targets:
                self.sender.wake(node.id)

    def _on_study_event(self, event: Event) -> None:
        data = event.data or {}
        study_id = data.get("study_id")
        if not isinstance(study_id, str):
            return
        if event.name == topics.STUDY_DELETED:
            self.outbox.forget(study_id)
        elif event.name == topics.IMAGE_DELETED:
            images = data.get("images")
            if isinstance(images, list):
                self.outbox.forget(study_id, [s for s in images if isinstance(s, str)])

    # -- the sender's reports --------------------------------------------------------------
    def _file(self, sop_uid: str) -> Path | None:
        row = self.db.query_one("SELECT image_file_path, storage_status FROM images "
                                "WHERE sop_instance_id = ?", [sop_uid])
        if row is None or row["storage_status"] != "Saved" or not row["image_file_path"]:
            return None
        path = Path(row["image_file_path"])
        if not path.is_absolute():
            path = self.data_dir / path
        return path if path.is_file() else None

    def _settled(self, changes: list[tuple[OutboxRow, str]]) -> None:
        names: dict[int, Node] = {}
        for row, name in changes:
            node = names.get(row.node_id)
            if node is None:
                try:
                    node = names[row.node_id] = self.nodes.get(row.node_id)
                except DiosError:
                    continue
            self._publish(node, row, name)
        self._refresh_status(list(dict.fromkeys(r.sop_instance_uid for r, _ in changes)))

    def _publish(self, node: Node, row: OutboxRow, name: str) -> None:
        if self.hub is None:
            return
        data = {"study_id": row.study_id, "sop_instance_uid": row.sop_instance_uid,
                "node": node.name, "node_id": node.id, "state": row.state,
                "attempts": row.attempts, "last_status": row.last_status,
                "last_error": row.last_error}
        try:
            self.hub.publish(Event(exchange_uri(node.name), EventKind.STATE, name, row.state,
                                   data))
        except Exception:  # noqa: BLE001 - an event never undoes a committed change
            log.exception("publishing %s failed", name)

    def _node_names(self) -> dict[int, str]:
        return {n.id: n.name for n in self.nodes.list()}

    def _refresh_status(self, sops: list[str]) -> None:
        """Bring each image's ``send_status`` (and its study's ``is_exported``) in line with
        its outbox rows."""
        if self.study is None or not sops:
            return
        studies: set[str] = set()
        with self._status_lock:
            for sop in sops:
                states = self.outbox.image_states(sop)
                if not states:
                    continue
                if any(s in ("Queued", "Sending") for s in states):
                    target = "Sending"
                elif all(s == "Sent" for s in states):
                    target = "Sent"
                else:
                    target = "SendFailed"
                image = self.db.query_one("SELECT study_id, send_status FROM images "
                                          "WHERE sop_instance_id = ?", [sop])
                if image is None:
                    continue
                studies.add(image["study_id"])
                current = image["send_status"]
                if current == target:
                    continue
                try:
                    if target != "Sending" and current != "Sending":
                        self.study.set_send_status(sop, "Sending")
                    self.study.set_send_status(sop, target)
                except DiosError as exc:
                    log.warning("send status of %s not updated: %s", sop, exc)
            for study_id in studies:
                self._refresh_exported(study_id)

    def _refresh_exported(self, study_id: str) -> None:
        assert self.study is not None
        study = self.db.query_one("SELECT is_exported FROM studies WHERE study_id = ?",
                                  [study_id])
        if study is None:
            return
        statuses = [r["send_status"] for r in self.db.query(
            "SELECT send_status FROM images WHERE study_id = ? AND storage_status = 'Saved'",
            [study_id])]
        exported = bool(statuses) and all(s == "Sent" for s in statuses)
        if bool(study["is_exported"]) != exported:
            try:
                self.study.set_exported(study_id, exported)
            except DiosError as exc:
                log.warning("is_exported of study %s not updated: %s", study_id, exc)
