"""The data layer on SQLite and on a real PostgreSQL server: migrations, dialect,
transactions, no lost update under concurrent writers, and nothing committed lost when
the writing process is killed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dios.codes import CATALOG_NOT_FOUND, CONFLICT, STORAGE_ERROR, DiosError
from dios.store import open_database
from dios.store.files import create_once, read_private
from dios.store.migrations import migrations
from tests.fixtures_postgres import _postgres_session, postgres_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


# -- a catalog with exactly the seed's example entries (shared with test_study) ----------
def _seed_view(view_id: str, zh: str, en: str, position: str = "AP") -> dict:
    return {"@type": "type.googleapis.com/dr.protocol.View", "internal_id": view_id,
            "view_id": view_id, "view_name": zh, "view_name_local": "", "view_other_name": en,
            "view_description": zh, "view_position": position, "application": "RAD",
            "anatomic_region": "SKULL", "patient_type": "Human", "body_part_id": "Human_SKULL",
            "modality": "DX", "work_station_id": 0, "apr_id": view_id, "img_proc_id": view_id,
            "sort": 1, "is_enabled": True, "product": "DROS", "is_pre_install": True}


_VIEWS = {
    "View_DX_T_A_SK_AP_00": ("颅骨前后位", "Skull AP", "AP"),
    "View_DX_T_A_SK_LAT_00": ("颅骨左侧位", "Skull LAT,left", "LAT"),
    "View_DX_T_A_SK_Axial_00": ("颅骨前后轴位", "Skull AP Axial", "AP"),
    "View_DX_T_A_SK_Special_04": ("颅骨汤氏位", "Skull Townes View", "AP"),
    "View_DX_T_A_SK_Special_05": ("颅骨斯氏位", "Skull Stenvers View", "OBL"),
}
_PROCEDURES = {"P0-0002": ("颅骨前后位 + 侧位", "Skull AP + LAT",
                           ["View_DX_T_A_SK_AP_00", "View_DX_T_A_SK_LAT_00"])}


class SeedCatalog:
    """The seed's example views and procedure, in zh (as the seed shows) and en."""

    def __init__(self) -> None:
        self.disabled: set[str] = set()

    def view(self, view_id: str, product: str, language: str) -> dict:
        if view_id not in _VIEWS:
            raise DiosError(CATALOG_NOT_FOUND, f"view {view_id}")
        zh, en, pos = _VIEWS[view_id]
        v = _seed_view(view_id, zh if language == "zh" else en, en, pos)
        v["product"] = product
        v["is_enabled"] = view_id not in self.disabled
        return v

    def procedure(self, procedure_id: str, product: str, language: str) -> dict:
        if procedure_id not in _PROCEDURES:
            raise DiosError(CATALOG_NOT_FOUND, f"procedure {procedure_id}")
        zh, en, _ = _PROCEDURES[procedure_id]
        name = zh if language == "zh" else en
        return {"id": "2", "procedure_id": procedure_id, "procedure_code": procedure_id,
                "procedure_name": name, "procedure_name_local": name,
                "procedure_other_name": en, "patient_type": "Human",
                "body_part_id": "Human_SKULL", "is_enabled": True, "product": product,
                "is_pre_install": True}

    def procedure_view_ids(self, procedure_id: str) -> list[str]:
        return list(_PROCEDURES[procedure_id][2])

    def icon_by_name(self, name: str) -> bytes:
        if name != "/Image/Position/Human/skull.ap.table.x.png":
            raise DiosError(CATALOG_NOT_FOUND, name)
        return b"\x89PNG\r\n\x1a\nicon"

    def view_icon(self, view_id: str, large: bool = False) -> bytes:
        if view_id not in _VIEWS:
            raise DiosError(CATALOG_NOT_FOUND, view_id)
        return b"\x89PNG\r\n\x1a\n" + view_id.encode()


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dios.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(url):
    d = open_database(url)
    yield d
    d.close()


def _make_table(db) -> None:
    with db.transaction() as tx:
        tx.execute(db.dialect.ddl("CREATE TABLE IF NOT EXISTS counters (id {pk}, name TEXT "
                                  "NOT NULL UNIQUE, value INTEGER NOT NULL, "
                                  "version INTEGER NOT NULL DEFAULT 1)"))


# -- migrations ---------------------------------------------------------------------------
def test_migrations_applied_once_and_recorded(url):
    db = open_database(url)
    n = len(migrations())
    assert n >= 1 and db.schema_version() == n
    rows = db.query("SELECT version, name FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, n + 1))
    db.close()
    again = open_database(url)  # reopening applies nothing more
    assert len(again.query("SELECT version FROM schema_version")) == n
    for table in ("users", "studies", "series", "images"):
        assert again.query(f"SELECT COUNT(*) AS c FROM {table}")[0]["c"] == 0
    again.close()


def test_concurrent_opens_migrate_exactly_once(url):
    errors: list[BaseException] = []
    dbs = []

    def opener():
        try:
            dbs.append(open_database(url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(dbs[0].query("SELECT version FROM schema_version")) == len(migrations())
    for d in dbs:
        d.close()


def test_newer_schema_is_refused(url):
    db = open_database(url)
    db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
               [999, "future", "2030-01-01"])
    db.close()
    with pytest.raises(DiosError) as e:
        open_database(url)
    assert e.value.code is STORAGE_ERROR and "newer" in e.value.detail


@pytest.mark.parametrize("bad", ["mysql://x@y/z", "sqlite://relative.db", "", "file:/tmp/x"])
def test_unsupported_url(bad):
    with pytest.raises(DiosError) as e:
        open_database(bad)
    assert e.value.code is STORAGE_ERROR


def test_sqlite_missing_directory(tmp_path):
    with pytest.raises(DiosError) as e:
        open_database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    assert e.value.code is STORAGE_ERROR


def test_sqlite_is_wal_with_full_sync(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'w.db'}")
    with db.transaction(readonly=True) as tx:
        assert tx.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
        assert tx.query_one("PRAGMA synchronous")["synchronous"] == 2  # FULL
        assert tx.query_one("PRAGMA foreign_keys")["foreign_keys"] == 1
    db.close()


def test_postgresql_unreachable_is_storage_error():
    with pytest.raises(DiosError) as e:
        open_database("postgresql://postgres@127.0.0.1:1/none")
    assert e.value.code is STORAGE_ERROR


# -- dialect and transactions ---------------------------------------------------------------
def test_roundtrip_unicode_and_percent(db):
    _make_table(db)
    with db.transaction() as tx:
        new_id = tx.insert("counters", {"name": "颅骨 100% ?", "value": 1}, returning="id")
    assert isinstance(new_id, int)
    row = db.query_one("SELECT * FROM counters WHERE name LIKE '%100%%' AND id = ?", [new_id])
    assert row["name"] == "颅骨 100% ?" and row["value"] == 1 and row["version"] == 1


def test_rollback_on_error_leaves_nothing(db):
    _make_table(db)
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.insert("counters", {"name": "a", "value": 1})
        raise RuntimeError("boom")
    assert db.query("SELECT * FROM counters") == []


def test_nested_transaction_joins_outer(db):
    _make_table(db)
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.insert("counters", {"name": "outer", "value": 1})
        with db.transaction() as inner:
            inner.insert("counters", {"name": "inner", "value": 2})
        raise RuntimeError("undo both")
    assert db.query("SELECT * FROM counters") == []


def test_integrity_error_propagates_and_rolls_back(db):
    _make_table(db)
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ["x", 1])
    with pytest.raises(db.integrity_errors), db.transaction() as tx:
        tx.insert("counters", {"name": "y", "value": 1})
        tx.insert("counters", {"name": "x", "value": 2})
    assert [r["name"] for r in db.query("SELECT name FROM counters ORDER BY name")] == ["x"]


def test_upsert(db):
    _make_table(db)
    with db.transaction() as tx:
        tx.upsert("counters", {"name": "k", "value": 1}, ["name"])
        tx.upsert("counters", {"name": "k", "value": 5}, ["name"])
    assert db.query("SELECT name, value FROM counters") == [{"name": "k", "value": 5}]


def test_update_versioned_detects_stale_version(db):
    _make_table(db)
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ["v", 0])
    row = db.query_one("SELECT * FROM counters WHERE name = ?", ["v"])
    with db.transaction() as tx:
        assert tx.update_versioned("counters", "id", row["id"], 1, {"value": 1}) == 2
    with pytest.raises(DiosError) as e, db.transaction() as tx:
        tx.update_versioned("counters", "id", row["id"], 1, {"value": 99})
    assert e.value.code is CONFLICT
    assert db.query_one("SELECT value, version FROM counters")["value"] == 1


def _hammer(db, worker, n_threads=6):
    errors: list[BaseException] = []

    def run():
        try:
            worker()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_no_lost_update_with_row_locks(db):
    _make_table(db)
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ["c", 0])
    rid = db.query_one("SELECT id FROM counters")["id"]

    def worker():
        for _ in range(20):
            with db.transaction() as tx:
                row = tx.lock("counters", "id", rid)
                tx.execute("UPDATE counters SET value = ? WHERE id = ?", [row["value"] + 1, rid])

    _hammer(db, worker)
    assert db.query_one("SELECT value FROM counters")["value"] == 6 * 20


def test_no_lost_update_optimistic_retry(db):
    _make_table(db)
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ["o", 0])
    rid = db.query_one("SELECT id FROM counters")["id"]
    conflicts = []

    def worker():
        for _ in range(15):
            while True:
                row = db.query_one("SELECT * FROM counters WHERE id = ?", [rid])
                try:
                    with db.transaction() as tx:
                        tx.update_versioned("counters", "id", rid, row["version"],
                                            {"value": row["value"] + 1})
                    break
                except DiosError as e:
                    assert e.code is CONFLICT
                    conflicts.append(1)

    _hammer(db, worker)
    row = db.query_one("SELECT * FROM counters WHERE id = ?", [rid])
    assert row["value"] == 6 * 15 and row["version"] == 1 + 6 * 15


def test_connection_per_thread(db):
    seen = []
    barrier = threading.Barrier(3)

    def worker():
        seen.append(id(db._conn()))
        barrier.wait()  # all three alive at once

    _hammer(db, worker, 3)
    assert len(set(seen)) == 3
    # the finished threads' connections are closed; the main thread's stays
    assert db.open_connections() == 1
    assert db.query("SELECT 1 AS x") == [{"x": 1}]


def test_closed_database_refuses(db):
    db.close()
    with pytest.raises(DiosError) as e:
        db.query("SELECT 1")
    assert e.value.code is STORAGE_ERROR


# -- private files ------------------------------------------------------------------------
def test_create_once_is_private_and_first_wins(tmp_path):
    p = tmp_path / "secret"
    data, created = create_once(p, b"first")
    assert created and data == b"first"
    assert (os.stat(p).st_mode & 0o777) == 0o600
    data, created = create_once(p, b"second")
    assert not created and data == b"first"
    os.chmod(p, 0o644)
    assert read_private(p) == b"first" and (os.stat(p).st_mode & 0o777) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["secret"]  # no temp file left


def test_create_once_race_has_one_winner(tmp_path):
    p = tmp_path / "sn"
    results = []
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        results.append(create_once(p, f"value-{i}".encode()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({data for data, _ in results}) == 1
    assert p.read_bytes() == results[0][0]


# -- killed while committing ------------------------------------------------------------------
_WRITER = r"""
import json, sys
from dios.store import open_database
from dios.study import StudyService
from dios.uids import UidFactory
from tests.test_store import SeedCatalog
db = open_database(sys.argv[1])
svc = StudyService(db, SeedCatalog(), UidFactory("1.2.826.0.1.3680043.10.1443"))
i = 0
while True:
    r = svc.register({"accession_number": f"ACC{i}", "patient_id": f"PID{i}",
                      "patient_name": f"Name {i}", "patient_size": "Large", "patient_age": "5Y",
                      "patient_dob": "2020-06-10T03:12:36.181739Z", "patient_type": "Human",
                      "modality": "DX", "study_type": "Normal", "comment": "x" * (i % 500),
                      "views": [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
                                {"view_id": "View_DX_T_A_SK_LAT_00", "procedure_id": "P0-0002"},
                                {"view_id": "View_DX_T_A_SK_Special_04", "procedure_id": ""}]})
    sops = [im["sop_instance_id"] for se in r["series"] for im in se["images"]]
    print(json.dumps([r["study_id"], i, sops]), flush=True)
    i += 1
"""


def _kill_round(url: str, after: int) -> list[list]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    committed: list[list] = []
    deadline = time.monotonic() + 60
    try:
        while len(committed) < after:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died early: {proc.stderr.read()[-2000:]}")
            committed.append(json.loads(line))
            assert time.monotonic() < deadline, "writer too slow"
        time.sleep(random.uniform(0.0, 0.05))  # land the kill anywhere in a commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout.read().splitlines():  # printed before the kill: committed
            if line.strip():
                committed.append(json.loads(line))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return committed


def _check_committed(url: str, committed: list[list]) -> None:
    from dios.study import StudyService
    from dios.uids import UidFactory

    db = open_database(url)
    svc = StudyService(db, SeedCatalog(), UidFactory("1.2.826.0.1.3680043.10.1443"))
    for study_id, i, sops in committed:
        s = svc.get(study_id)
        assert s["patient_id"] == f"PID{i}" and s["patient_name"] == f"Name {i}"
        assert s["comment"] == "x" * (i % 500)
        got = [im["sop_instance_id"] for se in s["series"] for im in se["images"]]
        assert got == sops
    # no torn study: every study in the database is complete
    n_images = db.query("SELECT study_id, COUNT(*) AS n FROM images GROUP BY study_id")
    assert all(r["n"] == 3 for r in n_images)
    assert len(n_images) == db.query_one("SELECT COUNT(*) AS n FROM studies")["n"]
    db.close()


@pytest.mark.slow
def test_kill_while_committing_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    open_database(url).close()
    committed: list[list] = []
    for after in (15, 40):
        committed += _kill_round(url, after)
        _check_committed(url, committed)
    con = sqlite3.connect(str(tmp_path / "kill.db"))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


@pytest.mark.slow
@pytest.mark.peer
def test_kill_while_committing_postgresql(postgres_url):  # noqa: F811
    open_database(postgres_url).close()
    committed = _kill_round(postgres_url, 20)
    _check_committed(postgres_url, committed)


def test_sqlite_database_and_data_tree_are_private(tmp_path):
    import stat

    from dios.store.files import make_private

    def mode(p) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    old = os.umask(0o022)  # a usual umask: the files must still be private
    try:
        data = tmp_path / "data"
        data.mkdir(mode=0o755)
        make_private(data, ("images", "previews"))
        assert [mode(data / d) for d in ("", "images", "previews")] == [0o700] * 3
        db = open_database(f"sqlite:///{data / 'dios.db'}")
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (x INTEGER)")
        assert mode(data / "dios.db") == 0o600
        assert mode(data / "dios.db-wal") == 0o600
        db.close()
        open_database(f"sqlite:///{data / 'dios.db'}").close()  # reopening keeps it
        assert mode(data / "dios.db") == 0o600
    finally:
        os.umask(old)
