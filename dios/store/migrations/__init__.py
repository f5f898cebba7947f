"""Numbered schema migrations, applied in order when a database is opened.

Each migration is a module ``mNNNN_<name>.py`` in this package with a ``SQL`` string
(statements separated by ``;`` at line ends, with the dialect tokens ``{pk}`` and
``{blob}``) and optionally an ``upgrade(tx)`` function run after the SQL. A migration is
never edited once released: a schema change is a new module with the next number.

The applied versions are recorded in ``schema_version``. All pending migrations run in one
transaction under a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL), so consoles starting together against one shared database apply each
migration exactly once, and a failed migration leaves the schema as it was.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType

from dios.codes import STORAGE_ERROR, DiosError

log = logging.getLogger("dios.store")

_NAME = re.compile(r"m(\d{4})_([a-z0-9_]+)")
#: A fixed key for PostgreSQL's advisory lock held while migrating.
_PG_LOCK_KEY = 0x44494F53  # "DIOS"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    module: ModuleType


def migrations() -> list[Migration]:
    """Every migration shipped with the engine, in version order."""
    found: list[Migration] = []
    for info in pkgutil.iter_modules(__path__):
        m = _NAME.fullmatch(info.name)
        if not m:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(Migration(int(m.group(1)), m.group(2), module))
    found.sort(key=lambda x: x.version)
    versions = [x.version for x in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration numbers must be 1..n without gaps, got {versions}")
    return found


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in re.split(r";\s*\n", sql + "\n") if s.strip()]


def apply_migrations(db) -> list[int]:  # noqa: ANN001 - Database (import cycle)
    """Apply the pending migrations of ``db``; return the versions applied now."""
    known = migrations()
    applied_now: list[int] = []
    with db.transaction() as tx:
        if db.dialect.name == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", [_PG_LOCK_KEY])
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                   "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        row = tx.query_one("SELECT MAX(version) AS v FROM schema_version")
        current = int(row["v"] or 0) if row else 0
        if current > len(known):
            raise DiosError(STORAGE_ERROR, f"database schema version {current} is newer than "
                            f"this engine's ({len(known)}); upgrade the engine")
        for m in known[current:]:
            for stmt in _statements(db.dialect.ddl(m.module.SQL)):
                tx.execute(stmt)
            upgrade = getattr(m.module, "upgrade", None)
            if upgrade is not None:
                upgrade(tx)
            tx.insert("schema_version", {"version": m.version, "name": m.name,
                                         "applied_at": datetime.now(UTC).isoformat()})
            applied_now.append(m.version)
    if applied_now:
        log.info("database %r: applied migrations %s", db, applied_now)
    return applied_now
