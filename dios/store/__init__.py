"""Persistence: the data layer shared by the auth, study and task services.

What lives here: :func:`open_database` (SQLite in WAL mode by default, PostgreSQL for sites
where several consoles share one database), the dialect layer that hides the differences
between the two (placeholders, upsert, auto-increment keys, row locks), the numbered
schema migrations applied at open (``migrations``), and small helpers for private files in
the data directory (``files``: secrets, serial number).

May import: the standard library, ``psycopg`` (only when a PostgreSQL URL is opened),
``dios.codes`` and ``dios.atomic``. Never the services, the shim, the bus or devices.
"""

from dios.store.db import Database, Dialect, open_database

__all__ = ["Database", "Dialect", "open_database"]
