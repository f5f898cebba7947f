"""``dios serve``: the bus, the services and both listeners, from one TOML configuration.

Starts the engine (simulators unless configured), calibrates the detector's selected
mode when no calibration is stored, opens the database (SQLite in the data directory
unless ``[database] url`` names PostgreSQL), builds the services, and serves the HTTP
JSON API (with the WebSocket event stream) on uvicorn and MessagePack-RPC on TCP; both
bind to 127.0.0.1 unless configured. At start the data directory tree is made private
(0700, the database 0600) and what a killed server left half done is reconciled
(:meth:`dios.study.service.StudyService.recover`). The DICOM exchange
(:class:`dios.exchange.service.ExchangeService`) sends stored images to the storage nodes
(images a killed server left being sent are queued again). SIGTERM or SIGINT stop it
gracefully: listeners stop accepting, running requests finish, the DICOM sender stops (what
it was sending goes back to the queue), the engine and database close.

:class:`Console` does the same inside a process (tests, embedding):
``Console(config).start()`` returns once both listeners accept connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import uvicorn

from dios.config import Config, ConfigError, HttpConfig, RpcConfig, load_config
from dios.shim.listener import ListenerStats

if TYPE_CHECKING:
    from dios.engine import Engine
    from dios.shim.api import Services
    from dios.store.db import Database

log = logging.getLogger("dios.serve")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: :class:`Console` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def http_settings(config: Config) -> HttpConfig:
    """The ``[http]`` settings of ``config``; a bare host and port (a plain
    :class:`~dios.config.ListenerConfig`) gets the defaults of the other keys."""
    http = config.http
    if isinstance(http, HttpConfig):
        return http
    return HttpConfig(host=http.host, port=http.port)


def rpc_settings(config: Config) -> RpcConfig:
    """The ``[rpc]`` settings of ``config``; a bare host and port gets the default limits."""
    rpc = config.rpc
    if isinstance(rpc, RpcConfig):
        return rpc
    return RpcConfig(host=rpc.host, port=rpc.port)


#: The data directory's subdirectories (all private to the server's user).
DATA_SUBDIRS = ("images", "calibration", "previews", "logs")


def secure_data_dir(config: Config) -> None:
    """Create the data directory tree readable by the server's user only (0700): the
    database, images and previews below it are patient data."""
    from dios.store.files import make_private

    config.ensure_dirs()
    make_private(config.data_dir, DATA_SUBDIRS)


def build_services(config: Config, engine: Engine, db: Database | None = None, *,
                   auth_options: dict[str, Any] | None = None, recover: bool = True) -> Services:
    """The services of one console on ``engine`` and ``db``.

    ``recover`` runs :meth:`~dios.study.service.StudyService.recover` first (images a
    killed server left ``Exposing`` go back to ``Unexposed``, unreferenced image and
    preview files are removed) and starts the DICOM outbox's sender (images a killed
    server left ``Sending`` are queued again): right for the one process that owns the
    data directory, wrong for a second process started beside a running server.
    """
    from dios.auth.service import AuthService
    from dios.catalog.service import CatalogService
    from dios.exchange.service import ExchangeService
    from dios.resource.service import ResourceService
    from dios.shim.api import Services
    from dios.store import open_database
    from dios.study.service import StudyService
    from dios.task.service import TaskService
    from dios.uids import UidFactory

    secure_data_dir(config)
    if db is None:
        db = open_database(config.database_url)
    auth = AuthService(db, config.data_dir, **(auth_options or {}))
    catalog = CatalogService(config.data_dir)
    study = StudyService(db, catalog, UidFactory(config.uid_root), product=config.product,
                         data_dir=config.data_dir, station=config.station_name, hub=engine.hub)
    if recover:
        study.recover()
    drivers = engine.drivers_info
    resource = ResourceService(config.data_dir, auth, catalog, product=config.product,
                               fpd=drivers["FPD"], gen=drivers["GEN"])
    acq = config.acquisition
    task = TaskService(engine, study, catalog, config.data_dir,
                       work_station_id=config.work_station_id, uid_root=config.uid_root,
                       station_name=config.station_name, institution=config.institution,
                       exposure_timeout=acq.exposure_timeout,
                       max_upload=acq.max_upload_mb << 20)
    exchange = ExchangeService(db, config.dicom, config.data_dir, hub=engine.hub, study=study)
    if recover:  # the process that owns the data sends; a second one only queues
        exchange.start()
    return Services(auth=auth, resource=resource, catalog=catalog, study=study, task=task,
                    engine=engine, config=config, exchange=exchange)


class Console:
    """A running console: engine, services, HTTP and MessagePack-RPC listeners.

    Parameters
    ----------
    config : Config
        Data directory, listeners, devices, UID root, product.
    engine : Engine, optional
        A ready-made engine (default: ``build_engine(config)``).
    calibrate : bool
        Calibrate the detector at start when it has no stored calibration.
    auth_options : dict, optional
        Extra keyword arguments for the auth service (token lifetime, hash cost...).
    """

    def __init__(self, config: Config, engine: Engine | None = None, *, calibrate: bool = True,
                 calibration_frames: int = 4, auth_options: dict[str, Any] | None = None,
                 rpc_options: dict[str, Any] | None = None,
                 http_options: dict[str, Any] | None = None, worker_threads: int = 64,
                 log_level: str = "warning") -> None:
        self.config = config
        self.engine = engine
        self.calibrate = calibrate
        self.calibration_frames = calibration_frames
        self.auth_options = auth_options
        self.rpc_options = rpc_options or {}
        self.http_options = http_options or {}
        self.worker_threads = worker_threads
        self.shim: Any = None
        self.rpc: Any = None
        #: what the HTTP listener's guards did (refused connections, timeouts)
        self.http_stats = ListenerStats()
        self.http_server: uvicorn.Server | None = None
        self.log_level = log_level
        self.services: Services | None = None
        self.db: Database | None = None
        self.http_port = 0
        self.rpc_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- assembly ---------------------------------------------------------------------------
    def build(self) -> None:
        from dios.engine import build_engine
        from dios.store import open_database

        cfg = self.config
        secure_data_dir(cfg)
        if self.engine is None:
            self.engine = build_engine(cfg)
        self.engine.start()
        if self.calibrate:
            from dios.acquisition.calibration import calibrate_if_needed

            if calibrate_if_needed(self.engine, self.calibration_frames, client="dios-serve"):
                log.info("calibrated the detector (%d frames per step)", self.calibration_frames)
        self.db = open_database(cfg.database_url)
        self.services = build_services(cfg, self.engine, self.db,
                                       auth_options=self.auth_options)

    def close(self) -> None:
        if self.services is not None:
            if self.services.exchange is not None:
                with contextlib.suppress(Exception):
                    self.services.exchange.close()
            with contextlib.suppress(Exception):
                self.services.task.close()
        if self.engine is not None:
            self.engine.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()

    # --- serving ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`request_stop` (or a signal, when installed)."""
        import anyio.to_thread

        from dios.shim.api import operations
        from dios.shim.http import HttpShim
        from dios.shim.listener import ListenerLimits, close_refused
        from dios.shim.rpc import RpcServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # blocking service calls (an exposure waits for the X-ray room) must not starve
        # the rest of the API: a larger worker pool than anyio's default 40
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.worker_threads
        ops = operations()
        cfg = self.config
        http = http_settings(cfg)
        shim = self.shim = HttpShim(self.services, ops, self.engine.hub,
                                    **{"cors_origins": http.cors_origins, **self.http_options})
        limits = ListenerLimits(max_connections=http.max_connections,
                                header_timeout=http.header_timeout,
                                body_timeout=http.body_timeout, idle_timeout=http.idle_timeout)
        server = self.http_server = _Uvicorn(uvicorn.Config(shim.app, host=http.host, port=http.port,
                                         log_level=self.log_level, lifespan="off",
                                         access_log=False, ws="websockets-sansio",
                                         timeout_graceful_shutdown=10,
                                         **limits.uvicorn_options(self.http_stats)))
        rpc_cfg = rpc_settings(cfg)
        rpc = self.rpc = RpcServer(self.services, ops, self.engine.hub, rpc_cfg.host,
                                   rpc_cfg.port,
                                   **{**rpc_cfg.server_options(), **self.rpc_options})
        await rpc.start()
        self.rpc_port = rpc.port
        http_task = asyncio.create_task(server.serve())
        while not server.started:
            if http_task.done():
                await http_task  # re-raise the bind error
                raise RuntimeError("HTTP server stopped during start")
            await asyncio.sleep(0.01)
        self.http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("HTTP on %s:%d, MessagePack-RPC on %s:%d", http.host, self.http_port,
                 rpc_cfg.host, self.rpc_port)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.should_exit = True
            await rpc.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await http_task
            close_refused(self.http_stats)

    def http_connections(self) -> int:
        """Open HTTP connections (upgraded WebSocket ones included), refused ones not."""
        server = self.http_server
        return len(server.server_state.connections) if server is not None else 0

    def request_stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def start(self, timeout: float = 120.0) -> Console:
        """Build and serve on a background thread; return once both listeners accept."""
        self.build()

        def target() -> None:
            try:
                asyncio.run(self.run())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                self._error = exc
                self._ready.set()

        self._thread = threading.Thread(target=target, name="dios-console", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"console did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop the listeners, then the engine and the database."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.close()

    def __enter__(self) -> Console:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: Config) -> int:
    """Run a console in the foreground until SIGTERM or SIGINT.

    The process creates its files readable by its own user only (umask 077): the data
    directory holds patient data.
    """
    os.umask(0o077)
    console = Console(config, log_level="info")
    try:
        console.build()
    except Exception as exc:  # noqa: BLE001 - a start failure is reported, not dumped
        log.error("cannot start: %s", exc)
        console.close()
        return 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, console.request_stop)
        await console.run()

    try:
        asyncio.run(main())
    except OSError as exc:  # a listener cannot bind
        log.error("cannot serve: %s", exc)
        return 1
    finally:
        console.close()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dios serve`` (``--config FILE``)."""
    parser = argparse.ArgumentParser(prog="dios serve")
    parser.add_argument("--config", help="TOML configuration file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dios serve: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
