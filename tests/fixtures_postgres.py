"""A real PostgreSQL server for the tests, from Debian's packages, on loopback.

The first test that asks for ``postgres_url`` starts one server for the whole session
(``initdb`` + ``pg_ctl`` as the ``postgres`` user, since PostgreSQL refuses to run as
root, in a temporary directory, on a free port, ``listen_addresses='127.0.0.1'``); each
test gets a fresh database on it. The server is stopped when the session ends. If
PostgreSQL cannot be installed or started the test FAILS loudly; it is never skipped.

Use it with ``from tests.fixtures_postgres import postgres_url  # noqa: F401``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from tests.peers import ensure_debian_packages

_lock = threading.Lock()
_server: PostgresServer | None = None


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        ensure_debian_packages(["postgresql"], ["pg_ctlcluster"])
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL binaries missing under /usr/lib/postgresql/*/bin after "
                    "installing Debian package 'postgresql'")
    bindir = os.path.dirname(found[-1])
    ensure_debian_packages(["postgresql"], [os.path.join(bindir, "initdb"),
                                             os.path.join(bindir, "pg_ctl")])
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        runner = shutil.which("runuser")
        cmd = [runner, "-u", "postgres", "--", *args] if runner else \
            ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(args)]
    else:
        cmd = args
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class PostgresServer:
    """One throw-away PostgreSQL cluster."""

    def __init__(self) -> None:
        self.bindir = _pg_bin()
        self.dir = tempfile.mkdtemp(prefix="dios-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("user 'postgres' missing although PostgreSQL is installed")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
        init = _as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U",
                             "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                             "--locale=C"], timeout=600)
        if init.returncode != 0:
            pytest.fail(f"initdb failed: {init.stderr or init.stdout}")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.dir} -c max_connections=200 "
                "-c fsync=off -c full_page_writes=off")
        start = _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts,
                              "-l", os.path.join(self.dir, "log"), "-w", "-t", "300", "start"],
                             timeout=330)
        if start.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = open(os.path.join(self.dir, "log")).read()[-2000:]
            pytest.fail(f"pg_ctl start failed: {start.stderr or start.stdout}\n{log}")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        atexit.register(self.stop)

    def new_database(self) -> str:
        """Create an empty database; return its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 120  # the server may still be starting on a busy machine
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {name}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if not os.path.isdir(self.data):
            return
        _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                      "-w", "stop"], timeout=300)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_server() -> PostgresServer:
    """The session's server (started on first use)."""
    global _server
    with _lock:
        if _server is None:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                pytest.fail("psycopg 3 is not installed: pip install 'dios-engine[postgres]'")
            _server = PostgresServer()
        return _server


@pytest.fixture(scope="session")
def _postgres_session():
    server = postgres_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(_postgres_session: PostgresServer) -> str:
    """URL of a fresh, empty database on the session's PostgreSQL server."""
    return _postgres_session.new_database()
