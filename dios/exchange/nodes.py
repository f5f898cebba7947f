"""Remote DICOM nodes: AE title, address, roles, and what the console does with them.

A node is one remote application entity: a PACS, a RIS/worklist broker, an archive, an
imaging cloud's DICOM gateway. Its ``roles`` say which services the console uses with it:

==============  =============================================================
role            the console ...
==============  =============================================================
``storage``     sends stored images to it (C-STORE); ``auto_send`` queues every
                stored image for it, otherwise images go when sent from the API
``commitment``  asks it to commit what was sent (storage commitment, N-ACTION)
``worklist``    queries its modality worklist (C-FIND)
``mpps``        reports procedure steps to it (N-CREATE / N-SET)
``query``       finds and fetches priors from it (C-FIND, C-MOVE, C-GET)
==============  =============================================================

``allow_incoming``: the node may also call the console's own SCP (echo, find, move, get,
store) with its AE title from its host; unknown callers are refused.

Nodes are stored in the database (table ``dicom_nodes``), edited with a version check
(``CONFLICT`` on a stale version) and validated here: an AE title is 1-16 characters of
the DICOM default repertoire without backslash or control characters and not only spaces;
a host is a name or an address without spaces; a port is 1-65535.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from dios.codes import (
    CONFLICT,
    DUPLICATE,
    INVALID_FIELD,
    MISSING_FIELD,
    NOT_FOUND,
    DiosError,
)
from dios.store.db import Database
from dios.uids import ae_title_problem

__all__ = ["ROLES", "Node", "NodeStore", "check_ae_title"]

#: The services a node may take part in (see the module docstring).
ROLES: tuple[str, ...] = ("storage", "commitment", "worklist", "mpps", "query")

_HOST = re.compile(r"[A-Za-z0-9._:\-\[\]]{1,253}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


def check_ae_title(value: Any, field_name: str = "ae_title") -> str:
    """An AE title: 1-16 characters, DICOM default repertoire, no backslash, not blank."""
    if value is None or value == "":
        raise DiosError(MISSING_FIELD, field_name, field=field_name)
    problem = ae_title_problem(value)
    if problem:
        raise DiosError(INVALID_FIELD, f"{field_name}: {problem}", field=field_name)
    return str(value).strip()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Node:
    """One remote application entity."""

    id: int
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    roles: tuple[str, ...] = ()
    auto_send: bool = False
    allow_incoming: bool = False
    description: str = ""
    version: int = 1
    created_at: str = ""
    updated_at: str = ""

    def has(self, role: str) -> bool:
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["roles"] = list(self.roles)
        return out

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Node:
        return cls(id=int(row["id"]), name=row["name"], ae_title=row["ae_title"],
                   host=row["host"], port=int(row["port"]), tls=bool(row["tls"]),
                   roles=tuple(json.loads(row["roles"] or "[]")),
                   auto_send=bool(row["auto_send"]), allow_incoming=bool(row["allow_incoming"]),
                   description=row["description"], version=int(row["version"]),
                   created_at=row["created_at"], updated_at=row["updated_at"])


def _validate(args: dict[str, Any], partial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def present(name: str) -> bool:
        if name in args and args[name] is not None and args[name] != "":
            return True
        if not partial and name in ("name", "ae_title", "host", "port"):
            raise DiosError(MISSING_FIELD, name, field=name)
        return False

    if present("name"):
        name = args["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not name.strip():
            raise DiosError(INVALID_FIELD, "name: 1 to 64 printable characters", field="name")
        out["name"] = name.strip()
    if present("ae_title"):
        out["ae_title"] = check_ae_title(args["ae_title"])
    if present("host"):
        host = args["host"]
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            raise DiosError(INVALID_FIELD, "host: a host name or an IP address", field="host")
        out["host"] = host
    if present("port"):
        port = args["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise DiosError(INVALID_FIELD, "port: 1 to 65535", field="port")
        out["port"] = port
    for flag in ("tls", "auto_send", "allow_incoming"):
        if present(flag):
            if not isinstance(args[flag], bool):
                raise DiosError(INVALID_FIELD, f"{flag}: true or false", field=flag)
            out[flag] = int(args[flag])
    if present("roles"):
        roles = args["roles"]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise DiosError(INVALID_FIELD, "roles: an array of role names", field="roles")
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise DiosError(INVALID_FIELD, f"roles: unknown {unknown}; use {list(ROLES)}",
                            field="roles")
        out["roles"] = json.dumps([r for r in ROLES if r in roles])
    if present("description"):
        text = args["description"]
        if not isinstance(text, str) or len(text) > 1024:
            raise DiosError(INVALID_FIELD, "description: at most 1024 characters",
                            field="description")
        out["description"] = text
    if out.get("tls"):
        raise DiosError(INVALID_FIELD, "tls: not supported by this console yet", field="tls")
    return out


class NodeStore:
    """The nodes in the database: list, get, create, update (versioned), delete."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, role: str | None = None) -> list[Node]:
        """Every node (with ``role``: those that have it), by name."""
        nodes = [Node.from_row(r) for r in self.db.query(
            "SELECT * FROM dicom_nodes ORDER BY name")]
        return [n for n in nodes if role is None or n.has(role)]

    def get(self, node_id: Any) -> Node:
        if not isinstance(node_id, int) or isinstance(node_id, bool):
            raise DiosError(INVALID_FIELD, "id: an integer", field="id")
        row = self.db.query_one("SELECT * FROM dicom_nodes WHERE id = ?", [node_id])
        if row is None:
            raise DiosError(NOT_FOUND, f"DICOM node {node_id}", field="id")
        return Node.from_row(row)

    def find_caller(self, ae_title: str, host: str) -> Node | None:
        """The node allowed to call in with ``ae_title`` from ``host`` (None: unknown)."""
        for node in self.list():
            if node.allow_incoming and node.ae_title == ae_title and node.host == host:
                return node
        return None

    def create(self, args: dict[str, Any]) -> Node:
        values = _validate(args, partial=False)
        now = _now()
        values.setdefault("roles", "[]")
        try:
            with self.db.transaction() as tx:
                node_id = tx.insert("dicom_nodes", {**values, "created_at": now,
                                                    "updated_at": now}, returning="id")
        except self.db.integrity_errors as exc:
            raise DiosError(DUPLICATE, f"a node named {values['name']!r} exists",
                            field="name") from exc
        return self.get(int(node_id))

    def update(self, node_id: Any, args: dict[str, Any]) -> Node:
        """Change the given fields; ``version`` (the node's current one) is required."""
        node = self.get(node_id)
        version = args.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise DiosError(MISSING_FIELD, "version", field="version")
        values = _validate({k: v for k, v in args.items() if k not in ("id", "version")},
                           partial=True)
        if not values:
            return node
        try:
            with self.db.transaction() as tx:
                tx.update_versioned("dicom_nodes", "id", node.id, version,
                                    {**values, "updated_at": _now()})
        except self.db.integrity_errors as exc:
            raise DiosError(DUPLICATE, f"a node named {values.get('name')!r} exists",
                            field="name") from exc
        return self.get(node.id)

    def delete(self, node_id: Any, version: Any = None) -> None:
        node = self.get(node_id)
        if version is not None and version != node.version:
            raise DiosError(CONFLICT, f"DICOM node {node.id}: version {version} is stale")
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM dicom_nodes WHERE id = ?", [node.id])
