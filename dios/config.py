"""Engine configuration: one TOML file, sensible defaults, loud errors.

With no file the engine runs on the simulators with its data (database, images,
calibration, secrets) in ``./dios-data`` and every listener on 127.0.0.1. Example::

    data_dir = "/var/lib/dios"
    uid_root = "1.2.826.0.1.3680043.10.1234"
    product = "DROS"            # or VETDROS
    work_station_id = 1

    [http]
    host = "127.0.0.1"
    port = 8080
    max_connections = 256       # open connections (WebSocket ones included); more get 429
    header_timeout = 10.0       # seconds a request head may take to arrive
    body_timeout = 30.0         # longest pause inside a request body (all of it: 4x this)
    idle_timeout = 5.0          # seconds a keep-alive connection may wait for its next request
    cors_origins = []           # browser origins allowed to call the API ("https://ui.example")

    [rpc]                       # the MessagePack-RPC listener
    host = "127.0.0.1"
    port = 18800
    max_connections = 256       # open connections in all
    max_connections_per_address = 64
    idle_timeout = 300.0        # seconds a connection may stay silent
    auth_timeout = 30.0         # seconds from connecting to a successful login
    max_subscriptions = 32      # event subscriptions per connection
    max_subscriptions_per_user = 128
    max_pending_bytes = 67108864  # bytes queued for one slow reader before it is cut
    write_timeout = 10.0        # seconds a reply or event may wait to be written

    [dicom]                     # the console's own application entity
    ae_title = "DIOS"
    host = "127.0.0.1"
    port = 0                    # its storage / query-retrieve SCP; 0: none
    connect_timeout = 10.0
    acse_timeout = 30.0
    dimse_timeout = 60.0
    network_timeout = 120.0
    retry_initial = 5.0         # backoff between attempts to reach a node that is down
    retry_max = 600.0
    max_associations = 10       # callers the SCP serves at once

    [database]
    url = ""                    # empty: sqlite in data_dir; or postgresql://user@host:5432/db

    [devices]                   # backend URLs, see dios.backends
    generator = "simulator://"  # or "socket://127.0.0.1:5001", "serial:///dev/ttyUSB0?baud=19200"
    detector = "simulator://"   # or "simulator://CSI_4343?xrays=events"
    panel = "CSI_4343"
    clock_scale = 1.0           # simulated seconds per real second (simulated devices only)
    seed = 0
    timeout = 10.0              # seconds a device command waits for its reply

    [acquisition]
    exposure_timeout = 60.0     # seconds from Expose to the frame

Each ``[section]`` belongs to one dataclass registered with :func:`section`; its
``validate()`` checks its own values.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: UID root when none is configured: ``2.25`` (UUID-derived UIDs, valid without a
#: registered organisation root). Sites with their own root configure ``uid_root``.
DEFAULT_UID_ROOT = "2.25"


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


# --- sections ------------------------------------------------------------------------------
#: ``[name]`` -> the dataclass that owns it; filled by :func:`section`.
SECTIONS: dict[str, type] = {}


def section(name: str) -> Any:
    """Class decorator: the dataclass owns the ``[name]`` table of the configuration.

    Its fields are the table's keys (typed by their defaults; an unknown key or a value
    of the wrong type is refused) and its optional ``validate()`` method checks the
    values together, raising :class:`ConfigError`. Adding a subsystem's settings is one
    such class; :func:`load_config` needs no change.
    """

    def register(cls: type) -> type:
        SECTIONS[name] = cls
        return cls

    return register


@dataclass
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 0

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port out of range: {self.port}")
        if not self.host:
            raise ConfigError("host must not be empty")


#: A browser origin: ``scheme://host[:port]`` (no path; ``file://`` for a page loaded from
#: a file, as Electron sends it), or ``*`` for any origin.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]*")


def _positive(owner: object, *names: str, upper: float = 86400.0) -> None:
    for name in names:
        value = getattr(owner, name)
        if not 0 < value <= upper:
            raise ConfigError(f"{name} must be within 0..{upper:g}, got {value!r}")


@section("http")
@dataclass
class HttpConfig(ListenerConfig):
    """The HTTP JSON listener (and its WebSocket event stream).

    ``max_connections`` open connections at most, WebSocket ones included (one more is
    answered 429 ``LIMIT_REACHED`` and closed); a request head must arrive within
    ``header_timeout`` seconds of its first byte (of connecting, for the first request),
    however slowly it trickles; a request body may pause at most ``body_timeout`` seconds
    and must arrive within four times that; a keep-alive connection waits
    ``idle_timeout`` seconds for its next request. Timeouts are answered 408 and closed.
    ``cors_origins`` are the browser origins (``https://console.example:8443``) allowed
    to call the API from another origin; none by default.
    """

    port: int = 8080
    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 5.0
    cors_origins: list = field(default_factory=list)

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.max_connections <= 65536:
            raise ConfigError(f"max_connections must be within 1..65536, got {self.max_connections}")
        _positive(self, "header_timeout", "body_timeout", "idle_timeout", upper=3600.0)
        for origin in self.cors_origins:
            if not isinstance(origin, str) or not (origin == "*" or _ORIGIN.fullmatch(origin)):
                raise ConfigError(f"cors_origins: {origin!r} is not an origin like "
                                  "'https://host:port' (no path) or '*'")


@section("rpc")
@dataclass
class RpcConfig(ListenerConfig):
    """The MessagePack-RPC listener and its limits (taken by the RPC server as keyword
    arguments of the same names, see :meth:`server_options`).

    ``max_connections`` open connections in all, ``max_connections_per_address`` from one
    client address; a connection silent for ``idle_timeout`` seconds, or not logged in
    within ``auth_timeout`` seconds, is closed; ``max_subscriptions`` event subscriptions
    per connection and ``max_subscriptions_per_user`` per user over all connections;
    a reader that lets more than ``max_pending_bytes`` pile up, or does not take a write
    within ``write_timeout`` seconds, is cut.
    """

    port: int = 18800
    max_connections: int = 256
    max_connections_per_address: int = 64
    idle_timeout: float = 300.0
    auth_timeout: float = 30.0
    max_subscriptions: int = 32
    max_subscriptions_per_user: int = 128
    max_pending_bytes: int = 64 << 20
    write_timeout: float = 10.0

    #: the keys :meth:`server_options` hands to the RPC server
    SERVER_OPTIONS = ("max_connections", "max_connections_per_address", "idle_timeout",
                      "auth_timeout", "max_subscriptions", "max_subscriptions_per_user",
                      "max_pending_bytes", "write_timeout")

    def validate(self) -> None:
        super().validate()
        for name, low, high in (("max_connections", 1, 65536),
                                ("max_connections_per_address", 1, 65536),
                                ("max_subscriptions", 1, 4096),
                                ("max_subscriptions_per_user", 1, 65536),
                                ("max_pending_bytes", 1 << 16, 1 << 34)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"{name} must be within {low}..{high}, got {value}")
        if self.max_connections_per_address > self.max_connections:
            raise ConfigError("max_connections_per_address must not exceed max_connections")
        if self.max_subscriptions > self.max_subscriptions_per_user:
            raise ConfigError("max_subscriptions must not exceed max_subscriptions_per_user")
        _positive(self, "idle_timeout", "auth_timeout", "write_timeout")

    def server_options(self) -> dict[str, Any]:
        """The limits as keyword arguments of the RPC server (names as the keys)."""
        return {name: getattr(self, name) for name in self.SERVER_OPTIONS}


@section("database")
@dataclass
class DatabaseConfig:
    url: str = ""  # empty: SQLite in the data directory


@section("devices")
@dataclass
class DevicesConfig:
    """Where the devices are: one backend URL each (see :mod:`dios.backends`)."""

    generator: str = "simulator://"
    detector: str = "simulator://"
    panel: str = "CSI_4343"
    clock_scale: float = 1.0   # simulated seconds per real second (simulated devices only)
    seed: int = 0
    timeout: float = 10.0      # seconds a bus request waits for its device's reply

    def validate(self) -> None:
        if not self.clock_scale > 0:
            raise ConfigError("clock_scale must be > 0")
        if not self.timeout > 0:
            raise ConfigError("timeout must be > 0")
        from dios.backends import BackendError, check

        for kind in ("generator", "detector"):
            try:
                check(kind, getattr(self, kind))
            except BackendError as exc:
                raise ConfigError(str(exc)) from None


@section("acquisition")
@dataclass
class AcquisitionConfig:
    """The exposure lifecycle's settings."""

    exposure_timeout: float = 60.0   # seconds from Expose to the frame before it fails
    max_upload_mb: int = 32          # largest PNG accepted for an image upload

    def validate(self) -> None:
        if not 1.0 <= self.exposure_timeout <= 3600.0:
            raise ConfigError("exposure_timeout must be within 1..3600 s")
        if not 1 <= self.max_upload_mb <= 1024:
            raise ConfigError("max_upload_mb must be within 1..1024")


@section("dicom")
@dataclass
class DicomConfig:
    """The console's own DICOM application entity and its network timeouts.

    ``ae_title`` is how PACS and RIS know the console (1-16 characters); its SCP (storage
    and query/retrieve, for nodes allowed to call in) listens on ``host``:``port``
    (loopback unless configured; 0 = no SCP). Timeouts in seconds: ``connect_timeout`` to
    open a TCP connection, ``acse_timeout`` for association set-up, ``dimse_timeout`` for
    one message's reply, ``network_timeout`` for a silent association. ``retry_initial``
    and ``retry_max`` bound the backoff between attempts to reach a node that is down;
    ``max_associations`` callers at once are served by the SCP, more are refused (transient).
    """

    ae_title: str = "DIOS"
    host: str = "127.0.0.1"
    port: int = 0
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    retry_initial: float = 5.0
    retry_max: float = 600.0
    max_associations: int = 10

    def validate(self) -> None:
        from dios.uids import ae_title_problem

        problem = ae_title_problem(self.ae_title)
        if problem:
            raise ConfigError(f"ae_title: {self.ae_title!r}: {problem}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port out of range: {self.port}")
        if not self.host:
            raise ConfigError("host must not be empty")
        _positive(self, "connect_timeout", "acse_timeout", "dimse_timeout", "network_timeout",
                  "retry_initial", "retry_max", upper=86400.0)
        if self.retry_max < self.retry_initial:
            raise ConfigError("retry_max must be at least retry_initial")
        if not 1 <= self.max_associations <= 256:
            raise ConfigError("max_associations must be within 1..256")


@dataclass
class Config:
    data_dir: Path = Path("dios-data")
    uid_root: str = DEFAULT_UID_ROOT
    product: str = "DROS"
    work_station_id: int = 1
    station_name: str = "DIOS"
    institution: str = ""
    http: HttpConfig = field(default_factory=HttpConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)  # type: ignore[assignment]
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)

    @property
    def database_url(self) -> str:
        """The database URL; SQLite in the data directory unless configured."""
        return self.database.url or f"sqlite:///{(self.data_dir / 'dios.db').resolve()}"

    @database_url.setter
    def database_url(self, url: str) -> None:
        self.database = DatabaseConfig(url)

    def ensure_dirs(self) -> None:
        """Create the data directory tree (images, calibration, logs)."""
        for sub in ("", "images", "calibration", "previews", "logs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        return d


#: top-level keys (those that are not sections)
_TOP = ("data_dir", "uid_root", "product", "work_station_id", "station_name", "institution")


#: the TOML name of each setting's type, for error messages
_TOML_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
               list: "an array"}


def _section(cls: type, raw: object, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    names = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(sorted(unknown))}")
    obj = cls()
    for key, value in raw.items():
        default = getattr(obj, key)
        if isinstance(default, bool) or not isinstance(value, type(default)) and not (
            isinstance(default, float) and isinstance(value, int)
        ) or isinstance(value, bool) and not isinstance(default, bool):
            raise ConfigError(f"[{where}] {key} must be {_TOML_TYPES[type(default)]}, got {value!r}")
        setattr(obj, key, type(default)(value))
    return obj


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> Config:
    """Read ``path`` (TOML) over the defaults; keyword overrides win. ConfigError if invalid."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    cfg = Config()
    unknown = set(raw) - set(_TOP) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    for key in set(_TOP) & set(raw):
        setattr(cfg, key, raw[key])
    for name, cls in SECTIONS.items():
        if name in raw:
            setattr(cfg, name, _section(cls, raw[name], name))
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.data_dir = Path(cfg.data_dir)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    if cfg.product not in ("DROS", "VETDROS"):
        raise ConfigError(f"product must be DROS or VETDROS, got {cfg.product!r}")
    if isinstance(cfg.work_station_id, bool) or not isinstance(cfg.work_station_id, int) \
            or cfg.work_station_id < 1:
        raise ConfigError("work_station_id must be a positive integer")
    for key in ("station_name", "institution"):
        if not isinstance(getattr(cfg, key), str):
            raise ConfigError(f"{key} must be a string")
    from dios.uids import MAX_ROOT_LENGTH, uid_problem

    problem = uid_problem(cfg.uid_root) if isinstance(cfg.uid_root, str) else "not a string"
    if problem or len(cfg.uid_root) > MAX_ROOT_LENGTH:
        raise ConfigError(f"uid_root {cfg.uid_root!r} is not a valid DICOM UID root "
                          f"(<= {MAX_ROOT_LENGTH} chars): {problem or 'too long'}")
    for name in SECTIONS:
        check = getattr(getattr(cfg, name), "validate", None)
        if check is not None:
            try:
                check()
            except ConfigError as exc:
                raise ConfigError(f"[{name}] {exc}") from None
