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

    [rpc]
    host = "127.0.0.1"
    port = 18800

    [database]
    url = ""                    # empty: sqlite in data_dir; or postgresql://user@host:5432/db

    [devices]
    generator = "simulator"     # or "serial:socket://127.0.0.1:5001", "serial:serial:///dev/ttyUSB0"
    detector = "simulator"
    panel = "CSI_4343"
    clock_scale = 1.0           # simulated seconds per real second (simulators only)
    seed = 0
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: UID root when none is configured: ``2.25`` (UUID-derived UIDs, valid without a
#: registered organisation root). Sites with their own root configure ``uid_root``.
DEFAULT_UID_ROOT = "2.25"


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


@dataclass
class DevicesConfig:
    generator: str = "simulator"
    detector: str = "simulator"
    panel: str = "CSI_4343"
    clock_scale: float = 1.0
    seed: int = 0


@dataclass
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class Config:
    data_dir: Path = Path("dios-data")
    uid_root: str = DEFAULT_UID_ROOT
    product: str = "DROS"
    work_station_id: int = 1
    station_name: str = "DIOS"
    institution: str = ""
    http: ListenerConfig = field(default_factory=lambda: ListenerConfig("127.0.0.1", 8080))
    rpc: ListenerConfig = field(default_factory=lambda: ListenerConfig("127.0.0.1", 18800))
    database_url: str = ""
    devices: DevicesConfig = field(default_factory=DevicesConfig)

    @property
    def database(self) -> str:
        """The database URL; SQLite in the data directory unless configured."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'dios.db').resolve()}"

    def ensure_dirs(self) -> None:
        """Create the data directory tree (images, calibration, logs)."""
        for sub in ("", "images", "calibration", "previews", "logs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        return d


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
        ):
            raise ConfigError(f"[{where}] {key} must be {type(default).__name__}, got {value!r}")
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
    top = {"data_dir", "uid_root", "product", "work_station_id", "station_name", "institution"}
    unknown = set(raw) - top - {"http", "rpc", "database", "devices"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    for key in top & set(raw):
        setattr(cfg, key, raw[key])
    cfg.http = _section(ListenerConfig, raw.get("http"), "http") if "http" in raw else cfg.http
    cfg.rpc = _section(ListenerConfig, raw.get("rpc"), "rpc") if "rpc" in raw else cfg.rpc
    cfg.devices = _section(DevicesConfig, raw.get("devices"), "devices")
    db = raw.get("database") or {}
    if not isinstance(db, dict) or set(db) - {"url"}:
        raise ConfigError("[database] takes only 'url'")
    cfg.database_url = str(db.get("url", ""))
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.data_dir = Path(cfg.data_dir)
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    if cfg.product not in ("DROS", "VETDROS"):
        raise ConfigError(f"product must be DROS or VETDROS, got {cfg.product!r}")
    if not isinstance(cfg.work_station_id, int) or cfg.work_station_id < 1:
        raise ConfigError("work_station_id must be a positive integer")
    from dios.uids import MAX_ROOT_LENGTH, uid_problem

    problem = uid_problem(cfg.uid_root) if isinstance(cfg.uid_root, str) else "not a string"
    if problem or len(cfg.uid_root) > MAX_ROOT_LENGTH:
        raise ConfigError(f"uid_root {cfg.uid_root!r} is not a valid DICOM UID root "
                          f"(<= {MAX_ROOT_LENGTH} chars): {problem or 'too long'}")
    for name, lst in (("http", cfg.http), ("rpc", cfg.rpc)):
        if not 0 <= lst.port <= 65535:
            raise ConfigError(f"[{name}] port out of range: {lst.port}")
    if not cfg.devices.clock_scale > 0:
        raise ConfigError("[devices] clock_scale must be > 0")
    for dev in ("generator", "detector"):
        spec = getattr(cfg.devices, dev)
        if spec != "simulator" and not spec.startswith("serial:"):
            raise ConfigError(f"[devices] {dev} must be 'simulator' or 'serial:<url>', got {spec!r}")
    if cfg.devices.detector != "simulator":
        raise ConfigError("[devices] detector: only 'simulator' is available in this release")
